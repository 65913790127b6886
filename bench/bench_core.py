"""Responder CPU per resumption in the protocol core alone, next to public-key baselines.

What is timed (per exchange, thread CPU time -- ``time.thread_time_ns``, so that other
processes on a shared machine do not inflate the figures -- around the responder's work
only): message 1 (receive_datagram, CredentialNeeded answered from a dict, message 2 built)
plus message 3
(receive_datagram, second lookup, MAC check, CommitNeeded answered, ResumptionComplete).
The initiator's work happens outside the timed regions.  In the same run, the same way:
one X25519 key generation + exchange, and one RSA-2048 PKCS#1 v1.5 SHA-256 signature with
cryptography -- the asymmetric work a full IKEv2 responder does at minimum -- so the ratio
compares like with like on this machine.  Also: decoding one message 1 with the struct fast
path versus the construct reference, and the cost of dropping a garbage datagram.

    python bench/bench_core.py [--n 3000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import cryptography
from cryptography.hazmat.backends.openssl.backend import backend as openssl_backend
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from resume.events import CommitNeeded, CredentialNeeded, ResumptionComplete
from resume.initiator import Initiator, InitiatorConfig
from resume.responder import Responder, ResponderConfig
from resume.testing import CLIENT_ADDR, SERVER_ADDR, simulated_full_ike
from resume.wire import decode_message_untrusted
from resume.wire_construct import decode_message_construct_untrusted

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cryptography": cryptography.__version__,
        "openssl": openssl_backend.openssl_version_text(),
    }


def _q(ns: list[int]) -> dict[str, float]:
    s = sorted(ns)
    return {
        "median_us": statistics.median(s) / 1000,
        "p10_us": s[len(s) // 10] / 1000,
        "p90_us": s[(9 * len(s)) // 10] / 1000,
    }


def bench_core(n: int, x25519: bool) -> dict[str, Any]:
    creds = [simulated_full_ike() for _ in range(n)]
    table = {c.handle: c for c in creds}
    resp = Responder(ResponderConfig(response_cache_size=16), os.urandom(32))
    cfg = InitiatorConfig(use_x25519=x25519)
    now = 1_000_000.0
    per_exchange: list[int] = []
    msg1_ns: list[int] = []
    msg3_ns: list[int] = []
    clock = time.thread_time_ns
    done = 0
    cpu0 = time.process_time()
    timed_total = 0
    for i, cred in enumerate(creds):
        now += 0.001
        addr = ("198.51.100.7", 1024 + i % 60000)
        init = Initiator(cred, cfg)
        init.initiate(now)
        [(m1, _)] = init.datagrams_to_send(now)
        t0 = clock()
        resp.receive_datagram(m1, addr, now)
        ev = resp.next_event()
        if not isinstance(ev, CredentialNeeded):
            raise RuntimeError("no CredentialNeeded")
        resp.provide_credential(ev.token, table.get(ev.handle), None, now)
        [(m2, _)] = resp.datagrams_to_send(now)
        t1 = clock()
        init.receive_datagram(m2, SERVER_ADDR, now)
        [(m3, _)] = init.datagrams_to_send(now)
        t2 = clock()
        resp.receive_datagram(m3, addr, now)
        ev = resp.next_event()
        if not isinstance(ev, CredentialNeeded):
            raise RuntimeError("no CredentialNeeded for message 3")
        resp.provide_credential(ev.token, table.get(ev.handle), None, now)
        ev2 = resp.next_event()
        if not isinstance(ev2, CommitNeeded):
            raise RuntimeError("no CommitNeeded")
        resp.commit_result(ev2.token, True, now)
        fin = resp.next_event()
        t3 = clock()
        if isinstance(fin, ResumptionComplete):
            done += 1
        msg1_ns.append(t1 - t0)
        msg3_ns.append(t3 - t2)
        per_exchange.append((t1 - t0) + (t3 - t2))
        timed_total += (t1 - t0) + (t3 - t2)
    cpu = time.process_time() - cpu0
    if done != n:
        raise RuntimeError(f"only {done}/{n} exchanges completed")
    return {
        "x25519": x25519,
        "exchanges": n,
        "per_exchange": _q(per_exchange),
        "message1": _q(msg1_ns),
        "message3": _q(msg3_ns),
        "exchanges_per_second_one_core": 1e9 * n / timed_total,
        "process_cpu_seconds_whole_loop_incl_initiator": cpu,
    }


def bench_baseline(n: int) -> dict[str, Any]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    peer = X25519PrivateKey.generate().public_key()
    data = os.urandom(400)  # an IKE_AUTH-sized signed octets blob
    clock = time.thread_time_ns
    x_ns, rsa_ns = [], []
    for _ in range(n):
        t0 = clock()
        k = X25519PrivateKey.generate()
        k.public_key()
        k.exchange(peer)
        t1 = clock()
        rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256())
        t2 = clock()
        x_ns.append(t1 - t0)
        rsa_ns.append(t2 - t1)
    both = [a + b for a, b in zip(x_ns, rsa_ns, strict=True)]
    return {
        "samples": n,
        "x25519_keygen_and_exchange": _q(x_ns),
        "rsa2048_sign": _q(rsa_ns),
        "x25519_plus_rsa2048": _q(both),
    }


def bench_decode(n: int) -> dict[str, Any]:
    cred = simulated_full_ike()
    init = Initiator(cred)
    init.initiate(0.0)
    [(m1, _)] = init.datagrams_to_send(0.0)
    clock = time.thread_time_ns
    fast, slow, garbage = [], [], []
    resp = Responder(ResponderConfig(), os.urandom(32))
    junk = os.urandom(140)
    for _ in range(n):
        t0 = clock()
        decode_message_untrusted(m1)
        t1 = clock()
        decode_message_construct_untrusted(m1)
        t2 = clock()
        resp.receive_datagram(junk, CLIENT_ADDR, 0.0)
        t3 = clock()
        fast.append(t1 - t0)
        slow.append(t2 - t1)
        garbage.append(t3 - t2)
    return {
        "struct_decode_message1": _q(fast),
        "construct_decode_message1": _q(slow),
        "construct_over_struct": statistics.median(slow) / statistics.median(fast),
        "responder_drop_garbage": _q(garbage),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="exchanges per configuration")
    ap.add_argument("--json", action="store_true", help="print JSON (also written to results/)")
    args = ap.parse_args(argv)
    plain = bench_core(args.n, x25519=False)
    with_x = bench_core(args.n, x25519=True)
    base = bench_baseline(max(200, args.n // 5))
    dec = bench_decode(args.n)
    b = base["x25519_plus_rsa2048"]["median_us"]
    rep = {
        "benchmark": "bench_core",
        "machine": machine(),
        "core_hardened_no_x25519": plain,
        "core_hardened_x25519": with_x,
        "baseline": base,
        "decode": dec,
        "ratios": {
            "baseline_over_core_no_x25519": b / plain["per_exchange"]["median_us"],
            "baseline_over_core_x25519": b / with_x["per_exchange"]["median_us"],
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_core.json").write_text(json.dumps(rep, indent=2) + "\n")
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0
    m = rep["machine"]
    print(f"machine: {m['cpu']} ({m['logical_cpus']} logical CPUs), {m['platform']}")
    print(f"         Python {m['python']}, cryptography {m['cryptography']}, {m['openssl']}")
    print(f"responder CPU per resumption in the core ({args.n} exchanges each, median):")
    for name, r in (("hardened, no X25519", plain), ("hardened + X25519", with_x)):
        pe = r["per_exchange"]
        print(
            f"  {name:<22} {pe['median_us']:7.1f} us  (msg1 {r['message1']['median_us']:.1f} + "
            f"msg3 {r['message3']['median_us']:.1f}; p90 {pe['p90_us']:.1f}) "
            f"= {r['exchanges_per_second_one_core']:,.0f} exchanges/s/core"
        )
    print("baseline in the same run (cryptography, median):")
    print(f"  X25519 keygen+exchange {base['x25519_keygen_and_exchange']['median_us']:7.1f} us")
    print(f"  RSA-2048 sign          {base['rsa2048_sign']['median_us']:7.1f} us")
    print(f"  X25519 + RSA-2048      {b:7.1f} us")
    r = rep["ratios"]
    print(
        f"ratio baseline/core: {r['baseline_over_core_no_x25519']:.1f}x (no X25519), "
        f"{r['baseline_over_core_x25519']:.1f}x (X25519)"
    )
    print(
        f"decode message 1: struct {dec['struct_decode_message1']['median_us']:.2f} us, "
        f"construct {dec['construct_decode_message1']['median_us']:.2f} us "
        f"({dec['construct_over_struct']:.0f}x); drop garbage "
        f"{dec['responder_drop_garbage']['median_us']:.2f} us"
    )
    print(f"JSON: {RESULTS / 'bench_core.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
