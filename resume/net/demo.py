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

The failover story (:class:`Failover`, on by default): halfway through the last round the
responder is stopped without draining and a new service takes over the same SQLite file,
server secret and port; the summary shows that every client comes back, how many
exchanges were interrupted and how long they took to complete.  (In-process, so the
"crash" is a cancelled task, not a SIGKILL: ``bench/bench_storm.py`` and
``tests/crash/`` kill real processes.)

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
from collections.abc import Awaitable, Callable
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
from resume.net.config import ServeConfig, from_mapping
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
class Failover:
    """The responder restart in the middle of the last round, and how the clients came back.

    The service is stopped without draining (its task cancelled: exchanges under way die
    with it, as in a crash; what it had queued for commit is flushed or not, both are
    covered) and a new one starts on the same SQLite file, server secret and port.  A
    client whose attempt timed out meanwhile starts another at once.  A client whose
    message 3 died with the old process (or reached the new one, which refuses it: with
    X25519 the per-tick key was the old process's) believes it resumed, but the responder
    never committed: its next attempt offers the successor, gets a NACK and resumes with
    the kept previous generation (spec 9.2) -- the demo makes that next attempt at once.
    """

    after_results: int = 0  # results of the last round before the stop
    in_flight: int = 0  # attempts under way when the responder stopped
    down_ms: float = 0.0  # stop -> the new service serving
    recovered_ms: float = 0.0  # stop -> every attempt under way at the stop resumed
    retries_ms: float = 0.0  # the lost message 3s' clients resuming again, one by one
    new_attempts: int = 0  # attempts that timed out while it was down, made again
    #: "resumed" attempts (under way, or just done: message 3 sent but not yet committed)
    #: whose message 3 died with the old process: resumed again
    message3_lost: int = 0
    message3_late: int = 0  # counted lost, but committed after all (the retry used it)
    recovered: bool = False


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
    failover: Failover | None = None

    @property
    def ok(self) -> bool:
        """Every client resumed every round, and both sides agree on keys and generations
        (and, with a restart, every client of that round came back)."""
        return (
            self.resumed == self.clients * self.rounds
            and self.generations_match
            and self.keys_match
            and (self.failover is None or self.failover.recovered)
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


def _service_config(d: Path, port: int) -> ServeConfig:
    return from_mapping(
        {
            "server": {
                "listen": [f"127.0.0.1:{port}"],
                "server_secret_file": str(d / "server.key"),
            },
            "http": {"listen": ""},
            "log": {"level": "warning"},
        }
    )


class _Responder:
    """The demo's responder: one :class:`ResponderService` at a time on one SQLite file,
    which :meth:`restart` stops without draining and replaces (same port, same secret)."""

    def __init__(self, d: Path, keyring: Keyring, installer: FingerprintInstaller) -> None:
        self.d, self.keyring, self.installer = d, keyring, installer
        self.services: list[ResponderService] = []
        self.store: Store | None = None
        self._scope = trio.CancelScope()
        self._stopped = trio.Event()
        #: CPU of the services' own threads while measured (:meth:`measure`); a restart
        #: adds the old threads' share before they exit (what its stop flushes is not in)
        self.threads_cpu = 0.0
        self._threads_base: float | None = None

    def measure(self, on: bool) -> None:
        """Start (True) or end (False) counting the service threads' CPU."""
        now = _service_threads_cpu()
        if self._threads_base is not None:
            self.threads_cpu += now - self._threads_base
        self._threads_base = now if on else None

    @property
    def loop_cpu_s(self) -> float:
        """The serving loops' CPU, every service so far."""
        return sum(s.loop_cpu_s for s in self.services)

    @property
    def current(self) -> ResponderService:
        return self.services[-1]

    async def start(self, nursery: trio.Nursery, port: int = 0) -> ResponderService:
        self.store = Store.open(
            f"sqlite:///{self.d}/responder.db", self.keyring, sqlite_synchronous="FULL"
        )
        svc = ResponderService(_service_config(self.d, port), self.store, installer=self.installer)
        self.services.append(svc)
        self._scope, self._stopped = trio.CancelScope(), trio.Event()
        scope, stopped = self._scope, self._stopped

        async def run(task_status: trio.TaskStatus[ResponderService]) -> None:
            try:
                with scope:
                    await svc.run(task_status)
            finally:
                stopped.set()

        started: ResponderService = await nursery.start(run)
        return started

    async def restart(self, nursery: trio.Nursery) -> None:
        port = self.current.addresses[0][1]
        measuring = self._threads_base is not None
        self.measure(False)
        self._scope.cancel()  # no drain: what is under way dies with it
        await self._stopped.wait()
        if self.store is not None:
            self.store.close()
        await self.start(nursery, port)
        if measuring:
            self.measure(True)

    def stop(self) -> None:
        self.current.shutdown()

    def committed(self) -> int:
        return sum(int(s.metrics.commits.get("ok")) for s in self.services)

    def quiet(self) -> bool:
        """Nothing under way in the current service (its queues and installs empty)."""
        svc = self.current
        lanes = svc.lanes
        return svc.pending == 0 and not any(lane.outstanding_commits for lane in lanes)


def _uncommitted(
    resp: _Responder, results: list[tuple[int, int, ResumeResult]], rnd: int
) -> list[int]:
    """Indexes of round ``rnd``'s "resumed" results whose successor the responder's store
    does not hold (not committed yet, or never: message 3 lost)."""
    st = resp.store
    if st is None:  # never: the responder is started before any round
        return []
    now = time.time()
    out = []
    for k, (_i, r_, r) in enumerate(results):
        if r_ != rnd or not r.resumed or r.successor is None:
            continue
        found = st.lookup(r.successor.handle, now)
        if found is None or found.credential is None:
            out.append(k)
    return out


async def _settle_lost_message3(
    resp: _Responder,
    results: list[tuple[int, int, ResumeResult]],
    rnd: int,
    again: Callable[[int], Awaitable[ResumeResult]],
    fo: Failover,
) -> None:
    """Find this round's "resumed" attempts the responder never committed (their message 3
    died with the old process) and make each client's next attempt now."""

    def uncommitted() -> list[int]:
        return _uncommitted(resp, results, rnd)

    quiet_since: float | None = None  # a message 3 on loopback is queued when sent
    with trio.move_on_after(10):  # bounds a hang; a late commit only costs one more attempt
        while uncommitted():
            quiet_since = (quiet_since or time.monotonic()) if resp.quiet() else None
            if quiet_since is not None and time.monotonic() - quiet_since > 0.5:
                break
            await trio.sleep(0.01)
    t_retry = time.monotonic()
    for k in uncommitted():
        i, _r, first = results[k]
        r = await again(i)
        fo.message3_lost += 1
        late = first.used_generation is not None and r.used_generation == first.used_generation + 1
        fo.message3_late += late
        results[k] = (i, rnd, r)
    fo.retries_ms = round((time.monotonic() - t_retry) * 1e3, 1)


async def run_loopback_demo_async(
    n_clients: int = 300,
    rounds: int = 2,
    *,
    workdir: str | Path | None = None,
    concurrency: int = 32,
    use_x25519: bool = True,
    restart: bool = True,
    mlkem: str = "offer",
    progress: Callable[[int, int], None] | None = None,
) -> DemoSummary:
    """``restart``: stop the responder without draining when half of the last round's
    clients have resumed, start a new one on the same store, and report the recovery
    (:class:`Failover`)."""
    d = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="ikeresume-demo-"))
    d.mkdir(parents=True, exist_ok=True)
    keyring = Keyring([MasterKey.generate()])
    t_seed = time.perf_counter()
    seed_caches(d, keyring, n_clients, time.time())
    seed_s = time.perf_counter() - t_seed
    client_store = Store.open(f"sqlite:///{d}/initiators.db", keyring, sqlite_synchronous="NORMAL")
    installer = FingerprintInstaller()
    resp = _Responder(d, keyring, installer)
    fo = Failover() if restart else None
    try:
        ini_cfg = InitiatorConfig(use_x25519=use_x25519, mlkem=mlkem, initial_rto=0.25, timeout=3.0)
        results: list[tuple[int, int, ResumeResult]] = []
        limiter = trio.CapacityLimiter(concurrency)
        total = n_clients * rounds
        under_way: set[int] = set()
        affected: set[int] = set()  # under way at the stop
        t_stop = 0.0
        last_done = 0.0

        async def attempt(i: int, retry_timeouts: bool) -> ResumeResult:
            nonlocal last_done
            options = ClientOptions(config=ini_cfg, id_i=client_id(i), local=(client_addr(i), 0))
            while True:
                r = await resume_with_store(client_store, ID_R, server, options)
                if retry_timeouts and fo is not None and r.outcome in ("timeout", "network"):
                    fo.new_attempts += 1  # the responder was down: reconnect at once
                    continue
                if i in affected:
                    last_done = time.monotonic()
                return r

        async with trio.open_nursery() as nursery:
            await resp.start(nursery)
            server = resp.current.addresses[0]
            if resp.store is None:  # never: start opened it
                raise RuntimeError("the demo's responder has no store")
            lineage_before = resp.store.count_by_lineage()
            resp.measure(True)
            t0 = time.perf_counter()
            for rnd in range(rounds):
                failover_round = fo is not None and rnd == rounds - 1
                stop_after = n_clients // 2 if failover_round else -1
                restarted = trio.Event()

                async def one(
                    i: int, rnd: int = rnd, fr: bool = failover_round, stop_at: int = stop_after,
                    restarted: trio.Event = restarted,
                ) -> None:  # fmt: skip
                    nonlocal t_stop
                    async with limiter:
                        under_way.add(i)
                        r = await attempt(i, fr)
                        under_way.discard(i)
                    results.append((i, rnd, r))
                    if progress is not None:
                        progress(len(results), total)
                    done = sum(1 for _i, r_, _r in results if r_ == rnd)
                    if fo is not None and done == stop_at and not restarted.is_set():
                        restarted.set()
                        affected.update(under_way)
                        fo.after_results, fo.in_flight = done, len(affected)
                        t_stop = time.monotonic()
                        await resp.restart(nursery)
                        fo.down_ms = round((time.monotonic() - t_stop) * 1e3, 1)

                async with trio.open_nursery() as clients:
                    for i in range(n_clients):
                        clients.start_soon(one, i)
                if fo is not None and failover_round:
                    await _settle_lost_message3(resp, results, rnd, lambda i: attempt(i, True), fo)
                    mine = [r for _i, r_, r in results if r_ == rnd]
                    fo.recovered = len(mine) == n_clients and all(r.resumed for r in mine)
                    fo.recovered_ms = round((last_done - t_stop) * 1e3, 1)
                # the last message 3s of a round are committed before the next round
                with trio.move_on_after(5):
                    resumed = sum(r.resumed for _, _, r in results)
                    # (after a restart the metrics miss what the stop flushed: ask the store)
                    while (
                        _uncommitted(resp, results, rnd)
                        if failover_round
                        else resp.committed() < resumed
                    ):
                        await trio.sleep(0.002)
            wall = time.perf_counter() - t0
            resp.measure(False)
            resp.stop()
        if resp.store is None:  # never: started above
            raise RuntimeError("the demo's responder never started")
        summary = _summarize(
            n_clients, rounds, results, installer, resp.services, resp.store, client_store,
            wall, d,
        )  # fmt: skip
        summary.seed_s = round(seed_s, 3)
        summary.listen = f"{server[0]}:{server[1]}"
        summary.failover = fo
        summary.mlkem = mlkem
        summary.lineage_before = _nonzero(lineage_before)
        summary.lineage_after = _nonzero(resp.store.count_by_lineage())
        if summary.resumed:
            summary.responder_loop_us = round(resp.loop_cpu_s / summary.resumed * 1e6, 1)
            summary.responder_commit_us = round(resp.threads_cpu / summary.resumed * 1e6, 1)
        return summary
    finally:
        if resp.store is not None:
            resp.store.close()
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
    services: list[ResponderService],
    server_store: Store,
    client_store: Store,
    wall: float,
    d: Path,
) -> DemoSummary:
    m = services[-1].metrics
    match, commits = _caches_agree(server_store, client_store, n_clients, time.time())
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
        server_commits=commits,
        commit_transactions=sum(int(s.metrics.commit_batches.get()) for s in services),
        server_drops=_drops(services),
        workdir=str(d),
        generations_match=match,
        keys_match=keys_match,
        distinct_keys=len(keys),
        fingerprints=[s["key_i2r_fp"] for s in samples[:3]],
        samples=samples,
        ke_modes=ke_modes,
        bytes_per_resumption=sizes,
    )


def _drops(services: list[ResponderService]) -> dict[str, float]:
    out: dict[str, float] = {}
    for svc in services:
        for k, v in svc.metrics.drops.values.items():
            out[k[0]] = out.get(k[0], 0.0) + v
    return out


def _caches_agree(server: Store, client: Store, n: int, now: float) -> tuple[bool, int]:
    """Whether both caches agree on every pair's current handle (the ratchet stayed in
    step), and the responder's durable commits (its records' resumption counters: what a
    stopped service flushed is counted too, unlike its metrics)."""
    match, commits = True, 0
    for i in range(n):
        c = client.lookup_peer(ID_R, now, id_i=client_id(i))
        if c is None or c.credential is None:
            match = False
            continue
        s = server.lookup(c.credential.handle, now)
        if s is None or s.credential is None or s.credential.generation != c.credential.generation:
            match = False
            continue
        commits += s.counters.resumptions
    return match, commits


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
    fo = s.failover
    if fo is not None:
        t.add_row(
            "responder restarted mid-round",
            f"after {fo.after_results} of round {s.rounds}'s {s.clients} clients, "
            f"{fo.in_flight} exchanges under way; down {fo.down_ms:.0f} ms",
        )
        t.add_row(
            "everyone resumed after the restart",
            ("yes" if fo.recovered else "NO")
            + f": the {fo.in_flight} interrupted attempts done {fo.recovered_ms:.0f} ms after "
            f"the stop ({fo.new_attempts} timed out and were made again); "
            f"{fo.message3_lost} whose message 3 died with the old process resumed again "
            f"(previous generation) in {fo.retries_ms:.0f} ms",
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
