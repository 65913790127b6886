"""A complete deployment on loopback in one call: responder service, SQLite, many clients.

What it shows, end to end over real UDP sockets: a full IKE seeds both caches (simulated
CHILD_SA keys, stored exactly as ``ikeshim.harvest`` stores them), then every client resumes
``rounds`` times against ``ikeresume serve``'s code (each round ratchets both caches), with
every accept durable in SQLite (``synchronous=FULL``) before the responder acknowledges it.
Clients use distinct 127.x.y.z source addresses, as distinct hosts would, so per-source
fairness applies as in production.  The responder's installer records key *fingerprints*
(never keys), so the summary can check that both sides derived the same fresh keys.

Post-quantum: the seeded chains have a mix of lineages (as harvested from full IKEs with
and without ML-KEM, and from before lineage was recorded), the clients offer ML-KEM-768
(``--mlkem``), and the summary shows the lineage mix before and after and what a
resumption cost: its bytes on the wire and the responder's CPU (the serving loop's work
measured per batch on its thread, plus the group commit's and WAL checkpoint's threads).

The initiators' cache is one SQLite file standing in for hundreds of hosts, each of which
would sync its own disk in parallel; it is opened with ``synchronous=NORMAL`` (WAL: durable
at the next checkpoint) so that one shared fsync queue does not make the demo measure a
bottleneck no deployment has.  The responder's cache is the one under test and stays FULL.

``run_loopback_demo`` returns a :class:`DemoSummary`; nothing is printed unless asked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio
from rich.console import Console
from rich.table import Table

from resume.credential import Lineage
from resume.initiator import InitiatorConfig
from resume.keyschedule import fingerprint
from resume.net.client import ClientOptions, ResumeResult, resume_with_store
from resume.net.config import from_mapping
from resume.net.server import ResponderService
from resume.sa import SAPair
from resume.testing import simulated_full_ike
from resume.wire import message_sizes
from store.keys import Keyring, MasterKey
from store.repository import Store

ID_R = b"\x02vpn.example.org"
SAMPLE_ROWS = 6
#: the seeded chains' lineages, in turn: most full IKEs classical, some already hybrid
#: (strongSwan 6 with ke1_mlkem768), some from before lineage was recorded
SEED_LINEAGES = (Lineage.CLASSICAL, Lineage.CLASSICAL, Lineage.HYBRID_PQ, Lineage.UNKNOWN)


def client_id(i: int) -> bytes:
    return b"\x02client-%05d.example.org" % i


def client_addr(i: int) -> str:
    """A distinct loopback source per client (Linux routes all of 127/8 to lo)."""
    last, rest = 1 + i % 254, i // 254
    return f"127.{1 + (rest >> 8) % 250}.{rest & 255}.{last}"


class FingerprintInstaller:
    """The responder's installer for the demo: remembers key fingerprints by i->r SPI.

    It goes through the service's real install path (a task per completed exchange), and
    keeps fingerprints only, so nothing secret outlives the exchange.
    """

    def __init__(self) -> None:
        self.by_spi: dict[int, tuple[str, int, str]] = {}

    async def install(self, sa: SAPair) -> None:
        self.by_spi[sa.i_to_r.spi] = (
            fingerprint(sa.i_to_r.encr_key),
            sa.r_to_i.spi,
            fingerprint(sa.r_to_i.encr_key),
        )


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
    listen: str = ""
    keys_match: bool = False
    distinct_keys: int = 0
    seed_s: float = 0.0
    fingerprints: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    mlkem: str = "off"
    #: responder credentials per lineage when the demo started and when it ended
    lineage_before: dict[str, int] = field(default_factory=dict)
    lineage_after: dict[str, int] = field(default_factory=dict)
    #: resumptions per key exchange mode, and the UDP payload bytes of one in each mode
    ke_modes: dict[str, int] = field(default_factory=dict)
    bytes_per_resumption: dict[str, int] = field(default_factory=dict)
    #: responder CPU per resumption: the serving loop, and the commit/checkpoint threads
    responder_loop_us: float = math.nan
    responder_commit_us: float = math.nan

    @property
    def ok(self) -> bool:
        """Every client resumed every round, and both sides agree on keys and generations."""
        return (
            self.resumed == self.clients * self.rounds
            and self.generations_match
            and self.keys_match
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return math.nan
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def seed_caches(d: Path, keyring: Keyring, n_clients: int, now: float) -> None:
    """What ``n_clients`` full IKEs plus harvesting leave in both caches.

    Written with ``synchronous=NORMAL``: a gateway's cache fills over days of full IKEs, and
    the demo measures the resumptions that follow, not the seeding.
    """
    creds = [
        dataclasses.replace(
            simulated_full_ike(id_i=client_id(i), id_r=ID_R),
            lineage=SEED_LINEAGES[i % len(SEED_LINEAGES)],
        )
        for i in range(n_clients)
    ]
    with Store.open(f"sqlite:///{d}/responder.db", keyring, sqlite_synchronous="NORMAL") as st:
        for cred in creds:
            st.upsert_full_ike("responder", cred, now)
    with Store.open(f"sqlite:///{d}/initiators.db", keyring, sqlite_synchronous="NORMAL") as st:
        for cred in creds:
            st.upsert_full_ike("initiator", cred, now)


async def run_loopback_demo_async(
    n_clients: int = 300,
    rounds: int = 2,
    *,
    workdir: str | Path | None = None,
    concurrency: int = 32,
    use_x25519: bool = True,
    mlkem: str = "offer",
    progress: Callable[[int, int], None] | None = None,
) -> DemoSummary:
    d = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="ikeresume-demo-"))
    d.mkdir(parents=True, exist_ok=True)
    keyring = Keyring([MasterKey.generate()])
    t_seed = time.perf_counter()
    seed_caches(d, keyring, n_clients, time.time())
    seed_s = time.perf_counter() - t_seed
    server_store = Store.open(f"sqlite:///{d}/responder.db", keyring, sqlite_synchronous="FULL")
    client_store = Store.open(f"sqlite:///{d}/initiators.db", keyring, sqlite_synchronous="NORMAL")
    try:
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
        installer = FingerprintInstaller()
        service = ResponderService(cfg, server_store, installer=installer)
        ini_cfg = InitiatorConfig(use_x25519=use_x25519, mlkem=mlkem, initial_rto=0.25, timeout=3.0)
        lineage_before = server_store.count_by_lineage()
        results: list[tuple[int, int, ResumeResult]] = []
        limiter = trio.CapacityLimiter(concurrency)
        total = n_clients * rounds

        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            server = service.addresses[0]
            threads0 = _service_threads_cpu()
            t0 = time.perf_counter()
            for rnd in range(rounds):

                async def one(i: int, rnd: int = rnd) -> None:
                    async with limiter:
                        options = ClientOptions(
                            config=ini_cfg, id_i=client_id(i), local=(client_addr(i), 0)
                        )
                        r = await resume_with_store(client_store, ID_R, server, options)
                    results.append((i, rnd, r))
                    if progress is not None:
                        progress(len(results), total)

                async with trio.open_nursery() as clients:
                    for i in range(n_clients):
                        clients.start_soon(one, i)
                # the last message 3s of a round are committed before the next round
                with trio.move_on_after(5):
                    resumed = sum(r.resumed for _, _, r in results)
                    while service.metrics.commits.get("ok") < resumed:
                        await trio.sleep(0.002)
            wall = time.perf_counter() - t0
            threads_cpu = _service_threads_cpu() - threads0
            service.shutdown()
        summary = _summarize(
            n_clients, rounds, results, installer, service, server_store, client_store, wall, d
        )
        summary.seed_s = round(seed_s, 3)
        summary.listen = f"{server[0]}:{server[1]}"
        summary.mlkem = mlkem
        summary.lineage_before = _nonzero(lineage_before)
        summary.lineage_after = _nonzero(server_store.count_by_lineage())
        if summary.resumed:
            summary.responder_loop_us = round(service.loop_cpu_s / summary.resumed * 1e6, 1)
            summary.responder_commit_us = round(threads_cpu / summary.resumed * 1e6, 1)
        return summary
    finally:
        server_store.close()
        client_store.close()


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v}


def _service_threads_cpu() -> float:
    """CPU seconds so far of the service's own threads (group commit, WAL checkpoint)."""
    total = 0
    for t in threading.enumerate():
        if t.name.startswith("ikeresume-") and t.native_id is not None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = Path(f"/proc/self/task/{t.native_id}/schedstat").read_text()
                total += int(stat.split()[0])
    return total / 1e9


def _summarize(
    n_clients: int,
    rounds: int,
    results: list[tuple[int, int, ResumeResult]],
    installer: FingerprintInstaller,
    service: ResponderService,
    server_store: Store,
    client_store: Store,
    wall: float,
    d: Path,
) -> DemoSummary:
    m = service.metrics
    ok = [(i, rnd, r) for i, rnd, r in results if r.resumed]
    fallbacks: dict[str, int] = {}
    for _, _, r in results:
        if not r.resumed:
            fallbacks[r.outcome] = fallbacks.get(r.outcome, 0) + 1
    lat = [r.elapsed * 1e3 for _, _, r in ok]
    ke_modes: dict[str, int] = {}
    for _, _, r in ok:
        ke_modes[r.ke] = ke_modes.get(r.ke, 0) + 1
    sizes = {ke: sum(message_sizes("x25519" in ke, "mlkem768" in ke)) for ke in sorted(ke_modes)}
    keys: set[str] = set()
    keys_match = bool(ok)
    samples: list[dict[str, Any]] = []
    for i, rnd, r in sorted(ok, key=lambda x: (x[0], x[1])):
        if r.sa is None:
            keys_match = False
            continue
        mine = (
            fingerprint(r.sa.i_to_r.encr_key),
            r.sa.r_to_i.spi,
            fingerprint(r.sa.r_to_i.encr_key),
        )
        keys.update((mine[0], mine[2]))
        theirs = installer.by_spi.get(r.sa.i_to_r.spi)
        keys_match &= theirs == mine
        if len(samples) < SAMPLE_ROWS:
            samples.append(
                {
                    "client": client_id(i)[1:].decode(),
                    "source": client_addr(i),
                    "round": rnd,
                    "generation": (r.used_generation or 0) + 1,
                    "spi_i2r": f"{r.sa.i_to_r.spi:08x}",
                    "key_i2r_fp": mine[0],
                    "spi_r2i": f"{r.sa.r_to_i.spi:08x}",
                    "key_r2i_fp": mine[2],
                    "responder_agrees": theirs == mine,
                }
            )
    return DemoSummary(
        clients=n_clients,
        rounds=rounds,
        resumed=len(ok),
        fallbacks=fallbacks,
        wall_s=round(wall, 3),
        resumptions_per_s=round(len(ok) / wall, 1) if wall > 0 else 0.0,
        client_p50_ms=round(statistics.median(lat), 3) if lat else math.nan,
        client_p99_ms=round(_pct(lat, 0.99), 3),
        server_p50_ms_bucket=m.latency.quantile(0.5) * 1e3,
        server_commits=int(m.commits.get("ok")),
        commit_transactions=int(m.commit_batches.get()),
        server_drops={k[0]: v for k, v in m.drops.values.items()},
        workdir=str(d),
        generations_match=_generations_match(server_store, client_store, n_clients, time.time()),
        keys_match=keys_match,
        distinct_keys=len(keys),
        fingerprints=[s["key_i2r_fp"] for s in samples[:3]],
        samples=samples,
        ke_modes=ke_modes,
        bytes_per_resumption=sizes,
    )


def _generations_match(server: Store, client: Store, n: int, now: float) -> bool:
    """Both caches agree on every pair's current handle (the ratchet stayed in step)."""
    for i in range(n):
        c = client.lookup_peer(ID_R, now, id_i=client_id(i))
        if c is None or c.credential is None:
            return False
        s = server.lookup(c.credential.handle, now)
        if s is None or s.credential is None or s.credential.generation != c.credential.generation:
            return False
    return True


def run_loopback_demo(n_clients: int = 300, rounds: int = 2, **kw: Any) -> DemoSummary:
    """Synchronous entry point (starts its own trio run)."""
    result: DemoSummary = trio.run(lambda: run_loopback_demo_async(n_clients, rounds, **kw))
    return result


def _mix(counts: dict[str, int]) -> str:
    pq = sum(v for k, v in counts.items() if Lineage(k).is_pq)
    total = sum(counts.values())
    return ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + f" ({pq} of {total} PQ)"


def print_summary(s: DemoSummary) -> None:
    con = Console()
    con.print(
        f"ikeresume demo: responder on udp {s.listen}, SQLite cache (every accept durable); "
        f"{s.clients} clients from distinct loopback addresses x {s.rounds} rounds; keys "
        "shown as fingerprints only"
    )
    rows = Table(title="first resumptions, initiator's view", box=None, pad_edge=False)
    for col in ("client", "gen", "i->r SPI", "i->r key fp", "r->i SPI", "r->i key fp", "same"):
        rows.add_column(col)
    for r in s.samples:
        rows.add_row(
            r["client"].split(".")[0], str(r["generation"]), r["spi_i2r"], r["key_i2r_fp"],
            r["spi_r2i"], r["key_r2i_fp"], "yes" if r["responder_agrees"] else "NO",
        )  # fmt: skip
    con.print(rows)
    t = Table(title="summary")
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("resumed / attempts", f"{s.resumed} / {s.clients * s.rounds}")
    t.add_row("fell back to full IKE", ", ".join(f"{k}={v}" for k, v in s.fallbacks.items()) or "0")
    t.add_row("same keys on both sides (same)", "yes" if s.keys_match else "NO")
    t.add_row("distinct ESP keys", f"{s.distinct_keys} (2 per resumption: always fresh)")
    t.add_row("caches in step after the ratchet", "yes" if s.generations_match else "NO")
    t.add_row("client latency p50 / p99", f"{s.client_p50_ms:.2f} / {s.client_p99_ms:.2f} ms")
    t.add_row(
        "throughput", f"{s.resumptions_per_s:,.0f} resumptions/s ({s.wall_s:.2f} s, client-bound)"
    )
    t.add_row("durable commits / transactions", f"{s.server_commits} / {s.commit_transactions}")
    t.add_row(
        "key exchanges (resumptions)",
        ", ".join(f"{k} {v}" for k, v in s.ke_modes.items()) + f" (clients: ML-KEM {s.mlkem})",
    )
    t.add_row(
        "bytes per resumption (3 datagrams)",
        ", ".join(f"{k} {v:,}" for k, v in s.bytes_per_resumption.items())
        + " (strongSwan full IKEv2: 731 x25519, 3,165 + ML-KEM)",
    )
    t.add_row(
        "responder CPU per resumption",
        f"{s.responder_loop_us:.0f} us serving loop + {s.responder_commit_us:.0f} us "
        "commit threads (in-process clients share the machine; bench/ for figures)",
    )
    t.add_row("lineage before", _mix(s.lineage_before))
    t.add_row("lineage after", _mix(s.lineage_after))
    t.add_row(
        "datagrams dropped", ", ".join(f"{k}={v:.0f}" for k, v in s.server_drops.items()) or "0"
    )
    t.add_row("files", s.workdir or "temporary, removed (--workdir DIR keeps them)")
    con.print(t)
    con.print("result:", "OK" if s.ok else "FAILED")
