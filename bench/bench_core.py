"""Responder CPU per resumption in the protocol core alone, next to public-key baselines.

What is timed: the responder's whole share of one exchange -- message 1 (receive_datagram,
CredentialNeeded answered from a dict, message 2 built and sent), message 3
(receive_datagram, the second lookup answered from a dict, MAC check, keys, successor) and
the commit bookkeeping (CommitNeeded answered ok, ResumptionComplete taken).  The
initiator's work is done beforehand: a recording responder with the same server secret and
a deterministic rng runs complete exchanges once, and the timed responder replays the
recorded messages 1 and 3 (it builds the same messages 2, so every message 3 verifies).

Why this shape: the machine is shared, so CPU time of this thread (``time.thread_time_ns``)
over a whole batch is the headline, not wall time; a per-exchange CPU clock would cost more
than a microsecond per call here, so per-exchange figures (median, p90) use the wall clock
(``perf_counter_ns``) and are reported next to it.  Rounds interleave every configuration
and the baseline -- one X25519 key generation + exchange plus one RSA-2048 PKCS#1 v1.5
SHA-256 signature with cryptography, the least asymmetric work a full IKEv2 responder does
-- and each ratio is taken within a round, then the median over rounds is reported.

Configurations: hardened without / with X25519 (defaults: message 3 finds message 2 in the
response cache), message 2 rebuilt for message 3 (evicted from the response cache, as when
another process answered message 1), and the optional credential cache (no second lookup).

    python bench/bench_core.py [--n 2000] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cryptography
from benchlib import cpu_model
from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from resume.credential import Credential
from resume.events import CommitNeeded, CredentialNeeded, ResumptionComplete
from resume.initiator import Initiator, InitiatorConfig
from resume.responder import Responder, ResponderConfig
from resume.testing import CLIENT_ADDR, SERVER_ADDR, simulated_full_ike
from resume.wire import decode_message_untrusted, parse_request_untrusted

RESULTS = Path(__file__).resolve().parent / "results"
SECRET = hashlib.sha256(b"bench_core server secret").digest()
T0 = 1_000_000.0


def machine() -> dict[str, Any]:
    cpu = cpu_model()
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "load_average_1_5_15": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cryptography": cryptography.__version__,
        "openssl_cryptography": openssl_backend.openssl_version_text(),
        "openssl_hashlib": __import__("ssl").OPENSSL_VERSION,
    }


def _q(ns: list[int]) -> dict[str, float]:
    s = sorted(ns)
    return {
        "median_us": statistics.median(s) / 1000,
        "p10_us": s[len(s) // 10] / 1000,
        "p90_us": s[(9 * len(s)) // 10] / 1000,
    }


def _rng(label: bytes) -> Callable[[int], bytes]:
    counter = iter(range(1 << 62))

    def rng(n: int) -> bytes:
        return hashlib.sha512(label + next(counter).to_bytes(8, "big")).digest()[:n]

    return rng


Recorded = list[tuple[bytes, bytes, tuple[str, int], float]]


def record(creds: list[Credential], x25519: bool, config: ResponderConfig) -> Recorded:
    """Run complete exchanges once; keep messages 1 and 3 (not timed)."""
    resp = Responder(config, SECRET, rng=_rng(b"responder"))
    cfg = InitiatorConfig(use_x25519=x25519)
    out: Recorded = []
    for i, cred in enumerate(creds):
        now = T0 + 0.001 * i
        addr = ("198.51.100.7", 1024 + i % 60000)
        init = Initiator(cred, cfg)
        init.initiate(now)
        [(m1, _)] = init.datagrams_to_send(now)
        resp.receive_datagram(m1, addr, now)
        ev = resp.next_event()
        if not isinstance(ev, CredentialNeeded):
            raise RuntimeError("no CredentialNeeded")
        resp.provide_credential(ev.token, cred, None, now)
        [(m2, _)] = resp.datagrams_to_send(now)
        init.receive_datagram(m2, SERVER_ADDR, now)
        init.successor_saved(now)  # nothing to store here: write-ahead is the client's cost
        [(m3, _)] = init.datagrams_to_send(now)
        out.append((m1, m3, addr, now))
    return out


def replay(
    rec: Recorded, table: dict[bytes, Credential], config: ResponderConfig, evict: bool
) -> tuple[int, list[int], list[int], list[int]]:
    """The timed part: a fresh responder handles every recorded exchange.  Returns thread
    CPU ns for the batch and wall ns per exchange / message 1 / message 3 + commit.
    ``evict``: all messages 1 first, then all messages 3 (message 2 no longer cached)."""
    resp = Responder(config, SECRET, rng=_rng(b"responder"))
    wall = time.perf_counter_ns
    per: list[int] = []
    m1_ns: list[int] = []
    m3_ns: list[int] = []
    done = 0

    def msg1(m1: bytes, addr: tuple[str, int], now: float) -> None:
        resp.receive_datagram(m1, addr, now)
        ev = resp.next_event()
        if isinstance(ev, CredentialNeeded):
            resp.provide_credential(ev.token, table.get(ev.handle), None, now)
        resp.datagrams_to_send(now)

    def msg3(m3: bytes, addr: tuple[str, int], now: float) -> bool:
        resp.receive_datagram(m3, addr, now)
        ev = resp.next_event()
        if isinstance(ev, CredentialNeeded):
            resp.provide_credential(ev.token, table.get(ev.handle), None, now)
            ev = resp.next_event()
        if not isinstance(ev, CommitNeeded):
            return False
        resp.commit_result(ev.token, True, now)
        return isinstance(resp.next_event(), ResumptionComplete)

    cpu0 = time.thread_time_ns()
    if evict:
        for m1, _m3, addr, now in rec:
            t0 = wall()
            msg1(m1, addr, now)
            m1_ns.append(wall() - t0)
        for _m1, m3, addr, now in rec:
            t0 = wall()
            done += msg3(m3, addr, now)
            m3_ns.append(wall() - t0)
        per = [a + b for a, b in zip(m1_ns, m3_ns, strict=True)]
    else:
        for m1, m3, addr, now in rec:
            t0 = wall()
            msg1(m1, addr, now)
            t1 = wall()
            done += msg3(m3, addr, now)
            t2 = wall()
            m1_ns.append(t1 - t0)
            m3_ns.append(t2 - t1)
            per.append(t2 - t0)
    cpu = time.thread_time_ns() - cpu0
    if done != len(rec):
        raise RuntimeError(f"only {done}/{len(rec)} exchanges completed")
    return cpu, per, m1_ns, m3_ns


def baseline(n: int, rsa_key: rsa.RSAPrivateKey) -> tuple[int, list[int], list[int]]:
    peer = X25519PrivateKey.generate().public_key()
    data = os.urandom(400)  # an IKE_AUTH-sized signed octets blob
    wall = time.perf_counter_ns
    x_ns, rsa_ns = [], []
    cpu0 = time.thread_time_ns()
    for _ in range(n):
        t0 = wall()
        k = X25519PrivateKey.generate()
        k.public_key()
        k.exchange(peer)
        t1 = wall()
        rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        t2 = wall()
        x_ns.append(t1 - t0)
        rsa_ns.append(t2 - t1)
    return time.thread_time_ns() - cpu0, x_ns, rsa_ns


def _batch_ns(fn: Callable[[], object], n: int) -> float:
    t0 = time.thread_time_ns()
    for _ in range(n):
        fn()
    return (time.thread_time_ns() - t0) / n


def bench_decode(n: int) -> dict[str, Any]:
    """CPU per call over batches (a per-call CPU clock would dominate these)."""
    cred = simulated_full_ike()
    init = Initiator(cred)
    init.initiate(0.0)
    [(m1, _)] = init.datagrams_to_send(0.0)
    resp = Responder(ResponderConfig(), os.urandom(32))
    junk = os.urandom(140)
    # The construct description of the wire is a test oracle (construct is a test
    # dependency): run from a checkout, it is found next to this directory.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.resume.wire_oracle import decode_message_construct_untrusted

    fast = _batch_ns(lambda: parse_request_untrusted(m1), n)
    generic = _batch_ns(lambda: decode_message_untrusted(m1), n)
    slow = _batch_ns(lambda: decode_message_construct_untrusted(m1), max(1, n // 10))
    garbage = _batch_ns(lambda: resp.receive_datagram(junk, CLIENT_ADDR, 0.0), n)
    return {
        "parse_message1_fast_path_us": fast / 1000,
        "decode_message1_generic_struct_us": generic / 1000,
        "decode_message1_construct_us": slow / 1000,
        "construct_over_fast_path": slow / fast,
        "responder_drop_garbage_us": garbage / 1000,
    }


CONFIGS: dict[str, tuple[bool, ResponderConfig, bool]] = {
    # name: (X25519, responder config, evict message 2 before message 3)
    "hardened_no_x25519": (False, ResponderConfig(), False),
    "hardened_x25519": (True, ResponderConfig(), False),
    "hardened_no_x25519_msg2_rebuilt": (False, ResponderConfig(response_cache_size=1), True),
    "hardened_no_x25519_credential_cache": (
        False,
        ResponderConfig(credential_cache_size=4096),
        False,
    ),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="exchanges per configuration and round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median taken)")
    ap.add_argument("--json", action="store_true", help="print JSON (also written to results/)")
    args = ap.parse_args(argv)
    n, rounds = args.n, args.rounds
    creds = [simulated_full_ike() for _ in range(n)]
    table = {c.handle: c for c in creds}
    recs = {name: record(creds, x, cfg) for name, (x, cfg, _e) in CONFIGS.items()}
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    n_base = max(50, n // 10)
    cpu: dict[str, list[float]] = {name: [] for name in CONFIGS}
    walls: dict[str, tuple[list[int], list[int], list[int]]] = {
        name: ([], [], []) for name in CONFIGS
    }
    base_cpu: list[float] = []
    base_x: list[int] = []
    base_rsa: list[int] = []
    load0 = os.getloadavg()
    for _ in range(rounds):
        for name, (_x, cfg, evict) in CONFIGS.items():
            c, per, m1, m3 = replay(recs[name], table, cfg, evict)
            cpu[name].append(c / n / 1000)
            for acc, vals in zip(walls[name], (per, m1, m3), strict=True):
                acc.extend(vals)
        c, xs, rs = baseline(n_base, rsa_key)
        base_cpu.append(c / n_base / 1000)
        base_x.extend(xs)
        base_rsa.extend(rs)
    dec = bench_decode(max(1000, n))
    b = statistics.median(base_cpu)
    cores: dict[str, Any] = {}
    for name in CONFIGS:
        c_med = statistics.median(cpu[name])
        per, m1, m3 = walls[name]
        cores[name] = {
            "x25519": CONFIGS[name][0],
            "exchanges_per_round": n,
            "cpu_us_per_exchange": c_med,
            "cpu_us_per_exchange_by_round": cpu[name],
            "exchanges_per_second_one_core": 1e6 / c_med,
            "baseline_over_core": statistics.median(
                bc / cc for bc, cc in zip(base_cpu, cpu[name], strict=True)
            ),
            "wall_per_exchange": _q(per),
            "wall_message1": _q(m1),
            "wall_message3_and_commit": _q(m3),
        }
    both = [x + r for x, r in zip(base_x, base_rsa, strict=True)]
    rep = {
        "benchmark": "bench_core",
        "command": "python bench/bench_core.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine() | {"load_average_before_run": list(load0)},
        "rounds": rounds,
        "core": cores,
        "baseline": {
            "samples_per_round": n_base,
            "cpu_us_x25519_plus_rsa2048": b,
            "cpu_us_by_round": base_cpu,
            "wall_x25519_keygen_and_exchange": _q(base_x),
            "wall_rsa2048_sign": _q(base_rsa),
            "wall_x25519_plus_rsa2048": _q(both),
        },
        "decode": dec,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_core.json").write_text(json.dumps(rep, indent=2) + "\n")
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0
    m = rep["machine"]
    print(f"machine: {m['cpu']} ({m['logical_cpus']} logical CPUs), {m['platform']}")
    print(f"         Python {m['python']}, cryptography {m['cryptography']}")
    print(f"         load average before/after: {load0[0]:.2f} / {m['load_average_1_5_15'][0]:.2f}")
    print(f"responder, thread CPU per exchange (median of {rounds} rounds x {n} exchanges):")
    for name, r in cores.items():
        w = r["wall_per_exchange"]
        print(
            f"  {name:<36} {r['cpu_us_per_exchange']:6.1f} us CPU"
            f" = {r['exchanges_per_second_one_core']:7,.0f} exch/s/core;"
            f" baseline/core {r['baseline_over_core']:5.1f}x;"
            f" wall median {w['median_us']:.1f} (msg1 {r['wall_message1']['median_us']:.1f}"
            f" + msg3 {r['wall_message3_and_commit']['median_us']:.1f}), p90 {w['p90_us']:.1f}"
        )
    print("baseline in the same rounds (cryptography):")
    print(f"  X25519 + RSA-2048 sign   {b:7.1f} us CPU")
    base = rep["baseline"]
    print(
        f"  wall medians: X25519 {base['wall_x25519_keygen_and_exchange']['median_us']:.1f}"
        f" us, RSA-2048 sign {base['wall_rsa2048_sign']['median_us']:.1f} us"
    )
    print(
        f"decode message 1: fast path {dec['parse_message1_fast_path_us']:.2f} us, generic struct "
        f"{dec['decode_message1_generic_struct_us']:.2f} us, construct "
        f"{dec['decode_message1_construct_us']:.2f} us ({dec['construct_over_fast_path']:.0f}x);"
        f" drop garbage {dec['responder_drop_garbage_us']:.2f} us"
    )
    print(f"JSON: {RESULTS / 'bench_core.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
