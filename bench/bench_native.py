"""The native core (Rust, ``resume._native``) vs the Python core: CPU per exchange.

Side by side in one run, interleaved rounds, thread CPU time over whole batches (the machine
is shared: see bench/README.md), medians over rounds, ratios taken within a round.

Responder (its whole share of an exchange: message 1 -> lookup -> message 2, message 3 ->
lookup -> MAC check, keys, successor -> commit -> completion; messages recorded beforehand
as bench/bench_core.py does):

* ``python``          -- resume.responder.Responder, one datagram per call;
* ``native_api``      -- resume.native.NativeResponder, the same Python API and events
                         (Python credentials converted per answer, Python events built);
* ``native_batch``    -- the batch API (``process``): 64 datagrams or answers per call,
                         GIL released per batch, credentials already native (as a native
                         store will hold them), events left as the engine's tuples.

Initiator (one attempt: build it, message 1, message 2 in, message 3 and the completion
out): ``python`` vs ``native_api``.

Each with and without X25519.  ``native/examples/bench_engine.rs`` gives the engine's figure
without Python at all (``cargo run --release --example bench_engine``).

    python bench/bench_native.py [--n 2000] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_core import SECRET, T0, _rng, machine

from resume import native
from resume.credential import Credential
from resume.events import CommitNeeded, CredentialNeeded, ResumptionComplete
from resume.initiator import Initiator, InitiatorConfig
from resume.responder import Responder, ResponderConfig
from resume.testing import SERVER_ADDR, simulated_full_ike

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 64
CONFIG = ResponderConfig()

Recorded = list[tuple[bytes, bytes, tuple[str, int], bytes]]  # m1, m3, addr, initiator seed


def record(creds: list[Credential], x25519: bool) -> Recorded:
    """Complete exchanges once with the Python core (not timed): messages 1 and 3, and the
    initiator seed that reproduces message 1."""
    resp = Responder(CONFIG, SECRET, rng=_rng(b"responder"))
    out: Recorded = []
    for i, cred in enumerate(creds):
        seed = b"initiator %d %d" % (i, x25519)
        addr = ("198.51.100.7", 1024 + i % 60000)
        init = Initiator(
            cred, InitiatorConfig(use_x25519=x25519), native.seeded_rng(seed), peer=SERVER_ADDR
        )
        init.initiate(T0)
        [(m1, _)] = init.datagrams_to_send(T0)
        resp.receive_datagram(m1, addr, T0)
        ev = resp.next_event()
        assert isinstance(ev, CredentialNeeded)
        resp.provide_credential(ev.token, cred, None, T0)
        [(m2, _)] = resp.datagrams_to_send(T0)
        init.receive_datagram(m2, SERVER_ADDR, T0)
        init.successor_saved(T0)  # nothing to store here: write-ahead is the client's cost
        [(m3, _)] = init.datagrams_to_send(T0)
        out.append((m1, m3, addr, seed))
    return out


def responder_api(rec: Recorded, table: dict[bytes, Credential], make: Callable[[], Any]) -> int:
    """Thread CPU ns for every recorded exchange through the per-datagram API."""
    resp = make()
    done = 0
    cpu0 = time.thread_time_ns()
    for m1, m3, addr, _seed in rec:
        resp.receive_datagram(m1, addr, T0)
        ev = resp.next_event()
        resp.provide_credential(ev.token, table.get(ev.handle), None, T0)
        resp.datagrams_to_send(T0)
        resp.receive_datagram(m3, addr, T0)
        ev = resp.next_event()
        if isinstance(ev, CredentialNeeded):
            resp.provide_credential(ev.token, table.get(ev.handle), None, T0)
            ev = resp.next_event()
        assert isinstance(ev, CommitNeeded)
        resp.commit_result(ev.token, True, T0)
        done += isinstance(resp.next_event(), ResumptionComplete)
        resp.datagrams_to_send(T0)
    cpu = time.thread_time_ns() - cpu0
    if done != len(rec):
        raise RuntimeError(f"only {done}/{len(rec)} exchanges completed")
    return cpu


def responder_batch(rec: Recorded, ntable: dict[bytes, Any]) -> int:
    """Thread CPU ns through ``process``: BATCH datagrams or answers per call."""
    resp = native.NativeResponder(CONFIG, SECRET, rng=native.SeededRng(b"responder"))
    done = 0
    cpu0 = time.thread_time_ns()
    for i in range(0, len(rec), BATCH):
        chunk = rec[i : i + BATCH]
        for msgs in ([(m1, a) for m1, _m3, a, _s in chunk], [(m3, a) for _m1, m3, a, _s in chunk]):
            _out, events = resp.process(T0, msgs)
            creds = [(e[1], ntable.get(e[2]), None) for e in events if e[0] == "credential"]
            _out, events = resp.process(T0, credentials=creds)
            commits = [(e[1], True) for e in events if e[0] == "commit"]
            if commits:
                _out, events = resp.process(T0, commits=commits)
                done += sum(e[0] == "complete" for e in events)
    cpu = time.thread_time_ns() - cpu0
    if done != len(rec):
        raise RuntimeError(f"only {done}/{len(rec)} exchanges completed (batch)")
    return cpu


def initiator_run(
    rec: Recorded, creds: list[Credential], x25519: bool, m2s: list[bytes], use_native: bool
) -> int:
    """Thread CPU ns for every attempt: build, message 1, message 2 in, message 3 out."""
    cfg = InitiatorConfig(use_x25519=x25519)
    done = 0
    cpu0 = time.thread_time_ns()
    for (_m1, _m3, _addr, seed), cred, m2 in zip(rec, creds, m2s, strict=True):
        init: Any
        if use_native:
            init = native.NativeInitiator(cred, cfg, native.SeededRng(seed), peer=SERVER_ADDR)
        else:
            init = Initiator(cred, cfg, native.seeded_rng(seed), peer=SERVER_ADDR)
        init.initiate(T0)
        init.datagrams_to_send(T0)
        init.receive_datagram(m2, SERVER_ADDR, T0)
        init.next_event()  # SaveSuccessor: nothing to store in a CPU benchmark
        init.successor_saved(T0)
        init.datagrams_to_send(T0)
        done += isinstance(init.next_event(), ResumptionComplete)
    cpu = time.thread_time_ns() - cpu0
    if done != len(rec):
        raise RuntimeError(f"only {done}/{len(rec)} initiators completed")
    return cpu


def messages2(rec: Recorded, table: dict[bytes, Credential]) -> list[bytes]:
    """The message 2 each recorded message 1 gets (for the initiator runs)."""
    resp = Responder(CONFIG, SECRET, rng=_rng(b"responder"))
    out = []
    for m1, _m3, addr, _seed in rec:
        resp.receive_datagram(m1, addr, T0)
        ev = resp.next_event()
        assert isinstance(ev, CredentialNeeded)
        resp.provide_credential(ev.token, table[ev.handle], None, T0)
        [(m2, _)] = resp.datagrams_to_send(T0)
        out.append(m2)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="exchanges per variant and round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median taken)")
    ap.add_argument("--json", action="store_true", help="print JSON (also written to results/)")
    args = ap.parse_args(argv)
    if not native.available():
        print(f"the native extension is not built: {native.NATIVE_IMPORT_ERROR}", file=sys.stderr)
        return 1
    n, rounds = args.n, args.rounds
    creds = [simulated_full_ike() for _ in range(n)]
    table = {c.handle: c for c in creds}
    ntable = {h: native.native_credential(c) for h, c in table.items()}
    recs = {x: record(creds, x) for x in (False, True)}
    m2s = {x: messages2(recs[x], table) for x in (False, True)}

    def py_responder() -> Responder:
        return Responder(CONFIG, SECRET, rng=_rng(b"responder"))

    def nat_responder() -> native.NativeResponder:
        return native.NativeResponder(CONFIG, SECRET, rng=native.SeededRng(b"responder"))

    variants: dict[str, Callable[[bool], int]] = {
        "responder/python": lambda x: responder_api(recs[x], table, py_responder),
        "responder/native_api": lambda x: responder_api(recs[x], table, nat_responder),
        "responder/native_batch": lambda x: responder_batch(recs[x], ntable),
        "initiator/python": lambda x: initiator_run(recs[x], creds, x, m2s[x], False),
        "initiator/native_api": lambda x: initiator_run(recs[x], creds, x, m2s[x], True),
    }
    cpu: dict[tuple[str, bool], list[float]] = {(v, x): [] for v in variants for x in (0, 1)}
    load0 = os.getloadavg()
    for _ in range(rounds):
        for x in (False, True):
            for name, fn in variants.items():
                cpu[(name, x)].append(fn(x) / n / 1000)
    rows: dict[str, Any] = {}
    for x in (False, True):
        for name in variants:
            role, impl = name.split("/")
            base = cpu[(f"{role}/python", x)]
            mine = cpu[(name, x)]
            rows[f"{name}/{'x25519' if x else 'no_x25519'}"] = {
                "role": role,
                "implementation": impl,
                "x25519": x,
                "cpu_us_per_exchange": statistics.median(mine),
                "cpu_us_by_round": mine,
                "exchanges_per_second_one_core": 1e6 / statistics.median(mine),
                "python_over_this": statistics.median(
                    b / m for b, m in zip(base, mine, strict=True)
                ),
            }
    rep = {
        "benchmark": "bench_native",
        "command": "python bench/bench_native.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine() | {"load_average_before_run": list(load0)},
        "exchanges_per_round": n,
        "rounds": rounds,
        "batch": BATCH,
        "results": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_native.json").write_text(json.dumps(rep, indent=2) + "\n")
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0
    m = rep["machine"]
    print(f"machine: {m['cpu']} ({m['logical_cpus']} logical CPUs), {m['platform']}")
    print(
        f"         Python {m['python']}; shared machine, load before/after "
        f"{load0[0]:.2f} / {m['load_average_1_5_15'][0]:.2f}"
    )
    print(f"thread CPU per exchange, median of {rounds} rounds x {n} exchanges:")
    print(f"  {'':<34}{'us/exch':>9}{'exch/s/core':>13}{'python/this':>13}")
    for key, r in rows.items():
        print(
            f"  {key:<34}{r['cpu_us_per_exchange']:9.1f}"
            f"{r['exchanges_per_second_one_core']:13,.0f}{r['python_over_this']:12.1f}x"
        )
    print(f"JSON: {RESULTS / 'bench_native.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
