"""What the initiator's write-ahead costs the client: old order vs new order, one run.

Issue 20: the initiator now stores the successor durably BEFORE message 3 leaves (spec 6.1
step 5), where it used to send message 3 first and write afterwards.  The work is the same
(one exchange, one durable ``advance_initiator``); what moves is *when message 3 leaves*,
i.e. when the responder can start its commit and, after it, pass ESP.  This script runs
both orders interleaved, run by run, against the real responder service (``ikeresume
serve`` in its own process, SQLite ``synchronous=FULL``), with the client's cache a SQLite
file on disk at ``synchronous=FULL`` (what ``ikeresume resume`` opens):

* **new order** (the library now): :func:`resume.net.client.resume_once_blocking` with
  :func:`~resume.net.client.write_ahead` as its ``save`` -- message 3 waits for the write;
* **old order** (before issue 20): the same attempt with a ``save`` that writes nothing,
  then the same ``Store.advance_initiator`` once message 3 has left.

Per run it records, from ``perf_counter`` in the client: message 1 sent -> message 2
verified, -> message 3 sent, -> successor durable, and the write itself.  Reported: medians
(p10, p90) of each, the ratio new/old of "message 3 sent", and the added cost (median of
the new order's write, which now sits between message 2 and message 3).  ``--json`` writes
everything.  Run::

    python bench/bench_write_ahead.py --runs 200     # ~20 s

The machine is shared and busy (2 vCPUs): read ratios within this run, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import cpu_model

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from resume.events import SaveSuccessor  # noqa: E402
from resume.initiator import InitiatorConfig  # noqa: E402
from resume.net.client import (  # noqa: E402
    ClientOptions,
    lookup,
    resume_once_blocking,
    write_ahead,
)
from resume.testing import simulated_full_ike  # noqa: E402
from store.keys import Keyring, MasterKey  # noqa: E402
from store.repository import Store  # noqa: E402

ID_R = b"\x02vpn.bench.example"
ID_I = b"\x02client.bench.example"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(port: int, proc: subprocess.Popen[bytes], deadline_s: float = 60) -> None:
    """Until the service answers on /readyz (its HTTP port is ``port``)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError("ikeresume serve exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
                c.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
                if b" 200 " in c.recv(200):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("ikeresume serve did not become ready")


def _summary(xs: list[float]) -> dict[str, float]:
    q = statistics.quantiles(xs, n=10)
    return {
        "median_ms": statistics.median(xs) * 1e3,
        "p10_ms": q[0] * 1e3,
        "p90_ms": q[-1] * 1e3,
        "n": len(xs),
    }


def one_run(store: Store, server: tuple[str, int], new_order: bool) -> dict[str, float]:
    """One resumption; times (seconds from message 1 sent) of its milestones."""
    cfg = InitiatorConfig(initial_rto=0.5, max_retransmits=3, timeout=5.0)
    opts = ClientOptions(config=cfg, id_i=ID_I, bypass_ipsec=False)
    res = lookup(store, ID_R, ID_I, time.time())
    if not hasattr(res, "credential"):
        raise RuntimeError(f"no credential: {res}")
    marks: dict[str, float] = {}
    seen: list[SaveSuccessor] = []

    def save(ev: SaveSuccessor) -> None:
        marks["verified"] = time.perf_counter()
        seen.append(ev)
        if new_order:
            write_ahead(store, ev, time.time())
            marks["durable"] = time.perf_counter()

    t0 = time.perf_counter()
    r = resume_once_blocking(res, server, opts, save=save)  # type: ignore[arg-type]
    marks["message3"] = time.perf_counter()  # returns right after sending message 3
    if not r.resumed:
        raise RuntimeError(f"run failed: {r.outcome} {r.detail}")
    if not new_order:  # before issue 20: message 3 first, the durable write after it
        ev = seen[0]
        t = time.perf_counter()
        if not store.advance_initiator(ev.handle, ev.generation, ev.successor, time.time()):
            raise RuntimeError("advance lost its compare-and-set")
        marks["durable"] = time.perf_counter()
        marks["write"] = marks["durable"] - t
    else:
        marks["write"] = marks["durable"] - marks["verified"]
    out = {k: marks[k] - t0 for k in ("verified", "message3", "durable")}
    out["write"] = marks["write"]
    out["done"] = max(out["message3"], out["durable"])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200, help="runs per order (interleaved)")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    key = MasterKey.generate()
    kr = Keyring([key])
    with tempfile.TemporaryDirectory(dir=REPO / "bench") as d:  # on disk, not tmpfs
        work = Path(d)
        cred = simulated_full_ike(id_i=ID_I, id_r=ID_R)
        with Store.open(str(work / "server.db"), kr) as s:
            s.upsert_full_ike("responder", cred, time.time())
        client = Store.open(str(work / "client.db"), kr, sqlite_synchronous="FULL")
        client.upsert_full_ike("initiator", cred, time.time())
        port, http = _free_port(), _free_port()
        (work / "serve.toml").write_text(
            f'[server]\nlisten = ["127.0.0.1:{port}"]\nserver_secret_file = "{work}/s.key"\n'
            f'[store]\nurl = "sqlite:///{work}/server.db"\nsqlite_synchronous = "FULL"\n'
            f'[limits]\nper_source_rate = 1e6\nper_source_burst = 1e6\n'
            f'[http]\nlisten = "127.0.0.1:{http}"\n[log]\nlevel = "warning"\n'
        )
        env = {**os.environ, "IKERESUME_MASTER_KEY": key.to_line(), "PYTHONPATH": str(REPO)}
        server = subprocess.Popen(
            [sys.executable, "-m", "resume.cli", "serve", "--config", str(work / "serve.toml")],
            env=env,
        )
        try:
            _wait_ready(http, server)
            results: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
            for i in range(args.runs + 5):  # the first 5 pairs warm caches, discarded
                for order in ("old", "new") if i % 2 else ("new", "old"):
                    m = one_run(client, ("127.0.0.1", port), order == "new")
                    if i >= 5:
                        results[order].append(m)
                    time.sleep(0.002)  # let the responder commit before the next run
        finally:
            server.terminate()
            server.wait(30)
            client.close()
    data: dict[str, Any] = {
        order: {k: _summary([r[k] for r in rs]) for k in rs[0]} for order, rs in results.items()
    }
    old_m3 = data["old"]["message3"]["median_ms"]
    new_m3 = data["new"]["message3"]["median_ms"]
    data["ratio_message3_new_over_old"] = new_m3 / old_m3
    data["added_before_message3_ms"] = new_m3 - old_m3
    data["write_median_ms"] = data["new"]["write"]["median_ms"]
    data["machine"] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "note": "shared, busy development VM; read ratios within one run",
    }
    data["command"] = "python " + " ".join(sys.argv)
    m = data["machine"]
    print(f"machine: {m['cpu']} x{m['cores']} ({m['kernel']}), {m['note']}")
    print(f"{args.runs} interleaved runs per order; client and responder caches SQLite FULL")
    print(f"{'ms from message 1 sent':34} {'old order':>22} {'new order':>22}")
    rows = (
        ("message 2 verified", "verified"),
        ("message 3 sent", "message3"),
        ("successor durable", "durable"),
        ("client done (both)", "done"),
        ("  the durable write itself", "write"),
    )
    for name, k in rows:
        o, n = data["old"][k], data["new"][k]
        print(
            f"{name:34} {o['median_ms']:7.2f} ({o['p10_ms']:5.2f}-{o['p90_ms']:6.2f})"
            f" {n['median_ms']:7.2f} ({n['p10_ms']:5.2f}-{n['p90_ms']:6.2f})"
        )
    print(
        f"message 3 leaves {data['added_before_message3_ms']:.2f} ms later with write-ahead "
        f"({data['ratio_message3_new_over_old']:.2f}x); the write itself: median "
        f"{data['write_median_ms']:.2f} ms; the client's own total is the same work"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
