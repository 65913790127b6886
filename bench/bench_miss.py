"""CPU per message 1 for a handle the store reported unknown moments ago: NACK vs drop.

Spec 6.2 step 6 answers an unknown handle with a NACK; the service used to drop a message
1 whose handle it had just found unknown, before the core (admission: header peek, handle
peek, a dict lookup), and the initiator then waited out its timeout.  Now the core parses
it, the store link answers from its memory of misses (no database read) and the core sends
the 36-byte NACK; the cookie PRF is no longer computed for a message 1 that is refused.
This measures both paths in one process, interleaved rounds, on the same datagram:

* ``drop`` (the former baseline): admission's checks plus the handle peek and lookup;
* ``nack``: admission, then ``Responder.receive_datagram``, the memory's answer
  (``provide_credential(None)``) and ``datagrams_to_send`` (the NACK's bytes);
* ``cookie_prf``: the responder values' HMAC-SHA-512 alone, which a refused message 1 paid
  before the core computed it only for a usable credential.

The ``sendto`` of the NACK is not included (a few microseconds of syscall, measured by
``bench_floor.py``).  Usage: ``python bench/bench_miss.py [--n 20000] [--rounds 5] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import cpu_model, pin_cpu

from resume.events import CredentialNeeded
from resume.initiator import Initiator
from resume.keyschedule import ResponderPrf
from resume.net.admission import Admission
from resume.net.config import LimitsSection
from resume.responder import Responder, ResponderConfig
from resume.testing import simulated_full_ike
from resume.wire import peek_handle_untrusted

ADDR = ("198.51.100.7", 4500)


def _msg1() -> bytes:
    ini = Initiator(simulated_full_ike())
    ini.initiate(1000.0)
    ((data, _),) = ini.datagrams_to_send(1000.0)
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20_000, help="datagrams per round and path")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    pin_cpu(0)
    msg1 = _msg1()
    limits = LimitsSection(per_source_rate=1e12, per_source_burst=1e12)
    handle = peek_handle_untrusted(msg1)
    misses = {handle: float("inf")}
    now = 1000.0

    def drop(n: int) -> None:
        adm = Admission(limits)
        for _ in range(n):
            assert adm.admit(msg1, ADDR[0], now, 0) is None
            assert misses.get(peek_handle_untrusted(msg1), 0.0) > now

    def nack(n: int) -> None:
        adm = Admission(limits)
        r = Responder(ResponderConfig(max_pending=1 << 20), os.urandom(32))
        for _ in range(n):
            assert adm.admit(msg1, ADDR[0], now, 0) is None
            r.receive_datagram(msg1, ADDR, now)
            ev = r.next_event()
            assert isinstance(ev, CredentialNeeded) and misses.get(ev.handle, 0.0) > now
            r.provide_credential(ev.token, None, None, now)
            r.next_event()  # ResumptionFailed
            ((out, _),) = r.datagrams_to_send(now)
            assert len(out) == 36

    prf = ResponderPrf(os.urandom(32))

    def cookie(n: int) -> None:  # what a refused message 1 no longer pays
        for _ in range(n):
            prf.values(100, ADDR, msg1)

    per: dict[str, list[float]] = {"drop": [], "nack": [], "cookie_prf": []}
    for _ in range(a.rounds):
        for name, fn in (("drop", drop), ("nack", nack), ("cookie_prf", cookie)):
            t0 = time.process_time()
            fn(a.n)
            per[name].append((time.process_time() - t0) / a.n * 1e6)
    med = {k: statistics.median(v) for k, v in per.items()}
    out = {
        "machine": {"cpu": cpu_model(), "cpus": os.cpu_count()},
        "us_per_datagram_median": {k: round(v, 2) for k, v in med.items()},
        "rounds_us": {k: [round(x, 2) for x in v] for k, v in per.items()},
        "nack_over_drop": round(med["nack"] / med["drop"], 1),
        "nack_bytes": 36,
        "msg1_bytes": len(msg1),
    }
    if a.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"machine: {out['machine']['cpu']} ({out['machine']['cpus']} CPUs)")
        print(f"message 1 of {len(msg1)} bytes, NACK of 36 bytes")
        for k in ("drop", "nack", "cookie_prf"):
            print(f"{k:10} {med[k]:7.2f} us CPU per datagram (rounds: {out['rounds_us'][k]})")
        print(f"nack / drop: {out['nack_over_drop']}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
