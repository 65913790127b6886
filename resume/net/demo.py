"""A complete deployment on loopback in one call: responder service, SQLite, many clients.

What it shows, end to end and over real UDP sockets: a full IKE seeds both caches (simulated
CHILD_SA keys, bootstrapped exactly as ``ikeshim.harvest`` does), then every client resumes
``rounds`` times against ``ikeresume serve``'s code (each round ratchets both caches), with
every accept durable in SQLite before the responder counts it.  Clients use distinct
127.x.y.z source addresses, as distinct hosts would, so per-source fairness applies as in
production.  ``run_loopback_demo`` returns a :class:`DemoSummary`; nothing is printed unless
asked.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from resume.initiator import InitiatorConfig
from resume.net.client import ResumeResult, resume_with_store
from resume.net.config import from_mapping
from resume.net.server import ResponderService
from resume.testing import simulated_full_ike
from store.keys import Keyring, MasterKey
from store.repository import Store

ID_R = b"\x02vpn.example.org"


def client_id(i: int) -> bytes:
    return b"\x02client-%05d.example.org" % i


def client_addr(i: int) -> str:
    """A distinct loopback source per client (Linux routes all of 127/8 to lo)."""
    last, rest = 1 + i % 254, i // 254
    return f"127.{1 + (rest >> 8) % 250}.{rest & 255}.{last}"


@dataclass
class DemoSummary:
    clients: int
    rounds: int
    resumed: int
    fallbacks: dict[str, int]
    wall_s: float
    resumptions_per_s: float
    client_p50_ms: float
    client_p99_ms: float
    server_p50_ms_bucket: float
    server_commits: int
    commit_transactions: int
    server_drops: dict[str, float]
    workdir: str
    generations_match: bool
    fingerprints: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def run_loopback_demo_async(
    n_clients: int = 300,
    rounds: int = 2,
    *,
    workdir: str | Path | None = None,
    concurrency: int = 32,
    use_x25519: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> DemoSummary:
    d = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="ikeresume-demo-"))
    d.mkdir(parents=True, exist_ok=True)
    keyring = Keyring([MasterKey.generate()])
    server_store = Store.open(f"sqlite:///{d}/responder.db", keyring)
    client_store = Store.open(f"sqlite:///{d}/initiators.db", keyring)
    try:
        now = time.time()
        for i in range(n_clients):  # what a full IKE + harvest leaves on both sides
            cred = simulated_full_ike(id_i=client_id(i), id_r=ID_R)
            server_store.upsert_full_ike("responder", cred, now)
            client_store.upsert_full_ike("initiator", cred, now)
        cfg = from_mapping(
            {
                "server": {
                    "listen": ["127.0.0.1:0"],
                    "server_secret_file": str(d / "server.key"),
                },
                "http": {"listen": ""},
                "log": {"level": "warning"},
            }
        )
        service = ResponderService(cfg, server_store)
        ini_cfg = InitiatorConfig(use_x25519=use_x25519, initial_rto=0.25, timeout=3.0)
        results: list[ResumeResult] = []
        limiter = trio.CapacityLimiter(concurrency)
        total = n_clients * rounds

        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            server = service.addresses[0]
            t0 = time.perf_counter()
            for _ in range(rounds):

                async def one(i: int) -> None:
                    async with limiter:
                        r = await resume_with_store(
                            client_store,
                            ID_R,
                            server,
                            id_i=client_id(i),
                            config=ini_cfg,
                            local=(client_addr(i), 0),
                        )
                    results.append(r)
                    if progress is not None:
                        progress(len(results), total)

                async with trio.open_nursery() as clients:
                    for i in range(n_clients):
                        clients.start_soon(one, i)
                # the last message 3s of a round are committed before the next round
                with trio.move_on_after(5):
                    while service.metrics.commits.get("ok") < sum(r.resumed for r in results):
                        await trio.sleep(0.005)
            wall = time.perf_counter() - t0
            service.shutdown()
        m = service.metrics
        ok = [r for r in results if r.resumed]
        fallbacks: dict[str, int] = {}
        for r in results:
            if not r.resumed:
                fallbacks[r.outcome] = fallbacks.get(r.outcome, 0) + 1
        lat = [r.elapsed * 1e3 for r in ok]
        gens_match = _generations_match(server_store, client_store, n_clients, time.time())
        fps = []
        for r in ok[:3]:
            if r.sa is not None:
                from resume.keyschedule import fingerprint

                fps.append(fingerprint(r.sa.i_to_r.encr_key))
        return DemoSummary(
            clients=n_clients,
            rounds=rounds,
            resumed=len(ok),
            fallbacks=fallbacks,
            wall_s=round(wall, 3),
            resumptions_per_s=round(len(ok) / wall, 1) if wall > 0 else 0.0,
            client_p50_ms=round(statistics.median(lat), 3) if lat else float("nan"),
            client_p99_ms=round(_pct(lat, 0.99), 3),
            server_p50_ms_bucket=m.latency.quantile(0.5) * 1e3,
            server_commits=int(m.commits.get("ok")),
            commit_transactions=int(m.commit_batches.get()),
            server_drops=dict((k[0], v) for k, v in m.drops.values.items()),
            workdir=str(d),
            generations_match=gens_match,
            fingerprints=fps,
        )
    finally:
        server_store.close()
        client_store.close()


def _generations_match(server: Store, client: Store, n: int, now: float) -> bool:
    """Both caches agree on every pair's current handle (the ratchet stayed in step)."""
    for i in range(n):
        c = client.lookup_peer(ID_R, now, id_i=client_id(i))
        if c is None or c.credential is None:
            return False
        s = server.lookup(c.credential.handle, now)
        if s is None or s.credential is None:
            return False
    return True


def run_loopback_demo(n_clients: int = 300, rounds: int = 2, **kw: Any) -> DemoSummary:
    """Synchronous entry point (starts its own trio run)."""
    result: DemoSummary = trio.run(lambda: run_loopback_demo_async(n_clients, rounds, **kw))
    return result


def print_summary(s: DemoSummary) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="ikeresume loopback demo (UDP + SQLite, every accept durable)")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("clients x rounds", f"{s.clients} x {s.rounds}")
    t.add_row("resumed", str(s.resumed))
    t.add_row("fell back to full IKE", ", ".join(f"{k}={v}" for k, v in s.fallbacks.items()) or "0")
    t.add_row("wall time", f"{s.wall_s:.2f} s")
    t.add_row("resumptions/s (client-limited)", f"{s.resumptions_per_s:,.0f}")
    t.add_row("client latency p50 / p99", f"{s.client_p50_ms:.2f} / {s.client_p99_ms:.2f} ms")
    t.add_row("durable commits / transactions", f"{s.server_commits} / {s.commit_transactions}")
    t.add_row("caches in step after ratchet", "yes" if s.generations_match else "NO")
    t.add_row("key fingerprints (first 3)", " ".join(s.fingerprints))
    t.add_row("files", s.workdir)
    Console().print(t)


def main(argv: list[str] | None = None) -> int:
    """``python -m resume.net.demo`` (the lead may register it as ``ikeresume demo``)."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--clients", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workdir", help="keep the SQLite files here (default: a temp dir)")
    ap.add_argument("--no-x25519", action="store_true", help="resume without X25519")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    s = run_loopback_demo(
        args.clients, args.rounds, workdir=args.workdir, use_x25519=not args.no_x25519
    )
    if args.json:
        print(json.dumps(s.to_json(), indent=2))
    else:
        print_summary(s)
    return 0 if s.resumed == s.clients * s.rounds and s.generations_match else 1


if __name__ == "__main__":
    raise SystemExit(main())
