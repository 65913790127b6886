"""Post-quantum resumption, side by side in one run (issue 22): responder CPU per resumption
with no key exchange, X25519, ML-KEM-768 and X25519 + ML-KEM-768 -- the Python core, the
native core through its binding, and the native engine alone (Rust, no Python) -- next to
strongSwan's full IKEv2 with x25519, x25519 + ke1_mlkem768 and mlkem768, with the bytes on
the wire and the round trips of each.

How the cores are timed: ML-KEM makes every message 2 unique (the encapsulation is
randomized), so recorded messages cannot be replayed to a fresh responder; initiator and
responder run live against each other in this thread, every call with the production
randomness (os.urandom, cryptography's and aws-lc's encapsulation), and each side's calls
are timed with this thread's CPU clock (``time.thread_time_ns``; other load on the shared
machine does not count).  The cost of reading that clock is measured here and subtracted
(two reads per segment).  Credentials are answered from a dict (no database: the store's
share is bench_store.py's and bench_server.py's).  Rounds interleave every configuration;
the median round is reported, ratios within a round.

Wall time: of a whole exchange in this thread (both sides, no network); strongSwan's is the
sequential handshake rate's inverse (two charons and the VICI initiate on loopback).

The path: ``bench_path.py`` sends the real datagram sizes through a router whose far link
has ``--path-mtu`` bytes (IPv4 and IPv6, NAT-T framing) and reports what arrives.

strongSwan: bench_strongswan.py's harness, sequential childless IKE_SAs with PSK, the
responder's whole-process CPU (all threads) per handshake; ML-KEM needs strongSwan 6, run
chrooted from a Debian unstable root (``--root DIR``, see bench_strongswan.py).  Bookworm's
5.9.8 runs its x25519 suite beside it when installed.

    python bench/bench_pq.py --root DIR [--n 1000] [--rounds 5] [--handshakes 300] [--json]

Needs root for strongSwan (network namespaces); without ``--root`` or root only the cores
run.  The engine figure needs cargo (``native/examples/bench_engine.rs``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bench_path
from bench_core import machine
from bench_strongswan import measure_strongswan, strongswan_available

from resume import keyschedule as ks
from resume import native
from resume.credential import Credential
from resume.events import CommitNeeded, CredentialNeeded, ResumptionComplete, SaveSuccessor
from resume.initiator import Initiator, InitiatorConfig
from resume.responder import Responder, ResponderConfig
from resume.testing import CLIENT_ADDR, SERVER_ADDR, simulated_full_ike
from resume.wire import message_sizes

RESULTS = Path(__file__).resolve().parent / "results"
NATIVE_DIR = Path(__file__).resolve().parents[1] / "native"
MODES = {  # name: (X25519, ML-KEM)
    "none": (False, False),
    "x25519": (True, False),
    "mlkem768": (False, True),
    "x25519+mlkem768": (True, True),
}
T0 = 1_000_000.0
#: strongSwan suites beside our modes (bench_strongswan.py's names)
SW_SUITES = {
    "x25519": "psk-x25519",
    "mlkem768": "psk-mlkem768",
    "x25519+mlkem768": "psk-x25519-mlkem768",
}


def clock_cost_ns() -> float:
    """One ``thread_time_ns`` read, median of a few batches."""
    clock = time.thread_time_ns
    runs = []
    for _ in range(5):
        t0 = clock()
        for _ in range(20_000):
            clock()
        runs.append((clock() - t0) / 20_000)
    return statistics.median(runs)


def live(
    creds: list[Credential],
    table: dict[bytes, Credential],
    x25519: bool,
    mlkem: bool,
    use_native: bool,
    clock_ns: float,
) -> tuple[float, float, float]:
    """One round: every credential resumes once, live; (responder, initiator) CPU us per
    exchange, clock reads subtracted, and the wall time of a whole exchange (both sides
    in this thread, no network: what a resumption costs end to end on one core)."""
    cfg = InitiatorConfig(use_x25519=x25519, mlkem="require" if mlkem else "off")
    secret = os.urandom(32)
    resp: Any = (
        native.NativeResponder(ResponderConfig(), secret)
        if use_native
        else Responder(ResponderConfig(), secret)
    )
    clock = time.thread_time_ns
    wall = time.perf_counter_ns
    r_ns = i_ns = w_ns = 0
    done = 0
    for cred in creds:
        w0 = wall()
        t = clock()
        init: Any = (
            native.NativeInitiator(cred, cfg, None, peer=SERVER_ADDR)
            if use_native
            else Initiator(cred, cfg, peer=SERVER_ADDR)
        )
        init.initiate(T0)
        [(m1, _)] = init.datagrams_to_send(T0)
        t1 = clock()
        resp.receive_datagram(m1, CLIENT_ADDR, T0)
        ev = resp.next_event()
        assert isinstance(ev, CredentialNeeded)
        resp.provide_credential(ev.token, table[ev.handle], None, T0)
        [(m2, _)] = resp.datagrams_to_send(T0)
        t2 = clock()
        init.receive_datagram(m2, SERVER_ADDR, T0)
        assert isinstance(init.next_event(), SaveSuccessor)  # the write-ahead: "stored"
        init.successor_saved(T0)
        [(m3, _)] = init.datagrams_to_send(T0)
        ok = isinstance(init.next_event(), ResumptionComplete)
        t3 = clock()
        resp.receive_datagram(m3, CLIENT_ADDR, T0)
        ev = resp.next_event()
        if isinstance(ev, CredentialNeeded):
            resp.provide_credential(ev.token, table[ev.handle], None, T0)
            ev = resp.next_event()
        assert isinstance(ev, CommitNeeded)
        resp.commit_result(ev.token, True, T0)
        done += ok and isinstance(resp.next_event(), ResumptionComplete)
        resp.datagrams_to_send(T0)
        t4 = clock()
        w_ns += wall() - w0
        r_ns += (t2 - t1) + (t4 - t3)
        i_ns += (t1 - t) + (t3 - t2)
    if done != len(creds):
        raise RuntimeError(f"only {done}/{len(creds)} exchanges completed")
    n = len(creds)
    over = 2 * clock_ns * n
    return (r_ns - over) / n / 1000, (i_ns - over) / n / 1000, w_ns / n / 1000


def primitives(n: int = 2000) -> dict[str, float]:
    """The key exchange primitives the Python core calls (cryptography with its OpenSSL),
    thread CPU us per call, median of three batches of ``n``: what the modes add."""
    seed = os.urandom(64)
    key, ek = ks.mlkem_keypair(seed)
    ct, _ss = ks.mlkem_encapsulate_untrusted(ek)
    xk, xpub = ks.x25519_keypair(os.urandom(32))
    calls = {
        "mlkem768_keygen_from_seed": lambda: ks.mlkem_keypair(seed),
        "mlkem768_encapsulate": lambda: ks.mlkem_encapsulate_untrusted(ek),
        "mlkem768_decapsulate": lambda: ks.mlkem_decapsulate(key, ct),
        "x25519_keygen": lambda: ks.x25519_keypair(seed[:32]),
        "x25519_exchange": lambda: ks.x25519_shared_untrusted(xk, xpub),
    }
    out = {}
    clock = time.thread_time_ns
    for name, call in calls.items():
        runs = []
        for _ in range(3):
            t0 = clock()
            for _ in range(n):
                call()
            runs.append((clock() - t0) / n / 1000)
        out[name] = statistics.median(runs)
    return out


def engine(n: int) -> dict[str, Any] | None:
    """native/examples/bench_engine.rs's JSON (None when cargo is not there)."""
    try:
        out = subprocess.run(
            [
                "cargo",
                "run",
                "--release",
                "-q",
                "--example",
                "bench_engine",
                "--",
                str(n),
                "--json",
            ],
            cwd=NATIVE_DIR,
            capture_output=True,
            text=True,
            check=True,
            timeout=1800,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def wire_table() -> dict[str, Any]:
    """Our three datagrams per mode, with NAT-T framing and IP headers, against the MTUs."""
    out = {}
    for mode, (x, m) in MODES.items():
        m1, m2, m3 = message_sizes(x, m)
        out[mode] = {
            "udp_payload": [m1, m2, m3],
            "total": m1 + m2 + m3,
            "round_trips": 1.5,
            "datagrams": 3,
            "amplification_m2_over_m1": round(m2 / m1, 3),
            "ip_datagram_natt_ipv4": [x + 20 + 8 + 4 for x in (m1, m2, m3)],
            "ip_datagram_natt_ipv6": [x + 40 + 8 + 4 for x in (m1, m2, m3)],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="exchanges per configuration and round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--engine-n", type=int, default=5000, help="exchanges per engine run")
    ap.add_argument("--handshakes", type=int, default=300, help="strongSwan handshakes per suite")
    ap.add_argument("--root", type=Path, help="Debian root with strongSwan 6 (ML-KEM suites)")
    ap.add_argument("--path-mtu", type=int, default=1280, help="the narrow link of bench_path")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not native.available():
        print(f"the native extension is not built: {native.NATIVE_IMPORT_ERROR}", file=sys.stderr)
        return 1
    load0 = os.getloadavg()
    creds = [simulated_full_ike() for _ in range(args.n)]
    table = {c.handle: c for c in creds}
    clock_ns = clock_cost_ns()
    cores: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for _ in range(args.rounds):
        for mode, (x, m) in MODES.items():
            for impl in ("python", "native_api"):
                cores.setdefault((impl, mode), []).append(
                    live(creds, table, x, m, impl == "native_api", clock_ns)
                )
    rows: dict[str, Any] = {}
    for (impl, mode), runs in cores.items():
        r = [a for a, _, _ in runs]
        i = [b for _, b, _ in runs]
        w = [c for _, _, c in runs]
        base = [a for a, _, _ in cores[(impl, "x25519")]]
        rows[f"{impl}/{mode}"] = {
            "responder_cpu_us": statistics.median(r),
            "responder_cpu_us_by_round": r,
            "responder_exchanges_per_s_one_core": 1e6 / statistics.median(r),
            "initiator_cpu_us": statistics.median(i),
            "exchange_wall_us": statistics.median(w),
            "over_x25519": statistics.median(a / b for a, b in zip(r, base, strict=True)),
        }
    prims = primitives()
    eng = engine(args.engine_n)
    sw: list[dict[str, Any]] = []
    if args.root is not None and strongswan_available(args.root):
        for suite in SW_SUITES.values():
            sw.append(measure_strongswan(suite, args.handshakes, 20, args.root).__dict__)
    if strongswan_available(None):  # bookworm's 5.9.8 beside it
        sw.append(measure_strongswan("psk-x25519", args.handshakes, 20, None).__dict__)
    path = bench_path.measure(args.path_mtu) if bench_path.available() else None
    rep = {
        "benchmark": "bench_pq",
        "command": "python bench/bench_pq.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine() | {"load_average_before_run": list(load0)},
        "exchanges_per_round": args.n,
        "rounds": args.rounds,
        "clock_read_ns": clock_ns,
        "cores": rows,
        "primitives_python_us": prims,
        "engine": eng,
        "strongswan": sw,
        "wire": wire_table(),
        "path": path,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_pq.json").write_text(json.dumps(rep, indent=2) + "\n")
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0
    print_report(rep, load0)
    return 0


def print_report(rep: dict[str, Any], load0: tuple[float, float, float]) -> None:
    m = rep["machine"]
    print(f"machine: {m['cpu']} ({m['logical_cpus']} logical CPUs), {m['platform']}")
    print(
        f"         Python {m['python']}, {m['openssl_cryptography']}; shared machine, load "
        f"before/after {load0[0]:.2f} / {m['load_average_1_5_15'][0]:.2f}"
    )
    print(
        f"responder CPU per resumption (median of {rep['rounds']} rounds x "
        f"{rep['exchanges_per_round']} live exchanges; initiator beside):"
    )
    print(
        f"  {'':<28}{'us':>9}{'exch/s/core':>13}{'/x25519':>9}{'initiator us':>14}"
        f"{'wall us':>10}"
    )
    for key, r in rep["cores"].items():
        rate = r["responder_exchanges_per_s_one_core"]
        print(
            f"  {key:<28}{r['responder_cpu_us']:9.1f}{rate:13,.0f}"
            f"{r['over_x25519']:8.2f}x{r['initiator_cpu_us']:14.1f}{r['exchange_wall_us']:10.1f}"
        )
    prims = ", ".join(f"{k} {v:.1f}" for k, v in rep["primitives_python_us"].items())
    print(f"primitives (cryptography, us CPU per call): {prims}")
    eng = rep["engine"]
    if eng is not None:
        print(f"native engine alone (Rust, {eng['exchanges_per_run']} exchanges x 5 runs):")
        for r in eng["modes"]:
            print(
                f"  engine/{r['mode']:<21}{r['responder_cpu_us']:9.1f}"
                f"{r['responder_exchanges_per_s_one_core']:13,.0f}"
                f"{'':>9}{r['initiator_cpu_us']:14.1f}"
            )
    print("strongSwan full IKEv2 in the same run (PSK, childless, responder process CPU):")
    for s in rep["strongswan"]:
        print(
            f"  {s['strongswan_version']:<10} {s['suite']:<20}{s['us_per_handshake']:9.1f} us"
            f"  {s['bytes_per_handshake']:7,.0f} B in {s['datagrams_per_handshake']:.0f} "
            f"datagrams ({s['datagrams_per_handshake'] / 2:.0f} round trips), wall "
            f"{s['wall_s'] / s['handshakes'] * 1e6:,.0f} us per handshake (sequential)"
        )
    print("resumption on the wire (UDP payload; + NAT-T marker 4, UDP 8, IPv4 20 / IPv6 40):")
    for mode, w in rep["wire"].items():
        m1, m2, m3 = w["udp_payload"]
        v6 = max(w["ip_datagram_natt_ipv6"])
        print(
            f"  {mode:<18} {m1:5} + {m2:5} + {m3:4} = {w['total']:5,} B, 1.5 round trips, "
            f"largest IPv6 NAT-T datagram {v6} B{' (> 1,280)' if v6 > 1280 else ''}, "
            f"m2/m1 {w['amplification_m2_over_m1']}"
        )
    if rep["path"] is not None:
        bench_path.print_report(rep["path"])
    print(f"JSON: {RESULTS / 'bench_pq.json'}")


if __name__ == "__main__":
    sys.exit(main())
