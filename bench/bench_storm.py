"""Failover storm: N clients reconnect at once after the responder is SIGKILLed and restarted.

Issue 14's operator question: after a gateway restart, how fast does everyone have
resumption SAs again, and what does the storm cost the responder -- next to the same N
clients running full IKEv2 against strongSwan's charon, in the same run.

Resumption side (the real service, as a process):

1. ``N`` credentials are seeded in the responder's store as ``N`` full IKEs plus harvesting
   would leave them (SQLite by default, ``--store postgresql``: a private server);
   ``ikeresume serve`` starts on it (``python -m resume.cli serve -c storm.toml``: whatever
   engine the service runs by default, this benchmark measures it).
2. ``--workers`` processes drive the clients (``storm_clients.py``): one sans-I/O initiator
   (native core when built) and one UDP socket per client, each from its own 127.x.y.z
   address, each retransmitting on its own ``InitiatorConfig`` schedule (defaults: first
   retransmission after 0.5 s, 3 of them, 4 s per attempt; a timed-out attempt is started
   again at once).  Every client resumes once (warm-up: the chains are at generation 1);
   the responder's commit counter is waited for, so every commit is durable.
3. SIGKILL.  The store is read: every client's current generation must still be there.
   The responder is restarted on the same store (``--standby``: instead, a second
   ``ikeresume serve`` started at the beginning -- same server secret, same master key,
   same store, its own install node and address -- takes the clients over, as a moved VIP
   or DNS name would send them).  Time zero is the restart (the kill, with a standby).
4. Every client reconnects at once: when the restarted responder says ready on
   ``/readyz`` (default), or at time zero (``--clients-start kill``: the first message 1s
   hit a dead port and the clients' retransmission schedule brings them back).  Reported:
   time until 50% / 99% / 100% resumed from time zero, the time to ready, the responder's
   peak and mean CPU (``/proc/PID/stat``, all threads, sampled every 0.2 s), failures by
   outcome, clients that needed their kept previous generation, and credentials lost
   (durable commits missing after the kill, clients the store holds at neither of their
   generations) -- must be 0.  Counted apart: message 3s never committed (a message 3 is
   sent once; the client counts itself resumed, the responder never saw it: its next
   attempt resumes with the kept previous generation) and the kernel's drops on the
   responder's full socket (``/proc/net/udp``), which the service's metrics cannot see.

strongSwan side (``--baseline strongswan``, root): two charons in a private network
namespace (psk-x25519, childless: the host kernel has no ESP; DoS protection at charon's
defaults -- cookies above 10 half-open SAs -- except ``block_threshold``, the per-source
half-open limit, raised because all initiators share one address).  The responder charon
is started, SIGKILLed and started again (time zero), its connection and PSK loaded over
VICI (ready), then the initiator charon starts ``M`` new IKE_SAs at once (VICI
``initiate`` with ``timeout = -1``, retransmitting on charon's default schedule: 4 s,
then x1.8).  Established IKE_SAs are counted from the initiator's ``ike-updown`` events.
Debian's strongSwan has no ``load-tester`` plugin, hence the initiator charon.  ``M`` is
``N`` unless ``--strongswan-clients`` says otherwise; when it is smaller, the figures for
``N`` are extrapolated linearly from the measured ``M`` (CPU-bound storm) and the report
says so.

With ``--clients-start kill`` the strongSwan initiates are issued at the kill too; clients
whose IKE_SA_INIT reaches the restarted charon before its connection is loaded get
NO_PROPOSAL_CHOSEN and give up (``keyingtries = 1``, swanctl's default): the window between
``charon`` listening and ``swanctl --load-all`` exists on a real gateway as well.
``IKR_STORM_CHARON_LOG=1`` keeps charon's log at that level (``default = -1`` otherwise).

Both storms run on the same machine as their clients (loopback): client CPU competes with
the responder on 2 cores.  Output: a rich table, ``--json PATH`` and ``--png PATH`` (the
recovery curves: fraction up vs seconds from the restart, both methods)::

    python bench/bench_storm.py --clients 1000                  # ~1 min
    python bench/bench_storm.py --clients 10000 --json bench/results/storm.json \\
        --png bench/results/storm.png
    python bench/bench_storm.py --clients 1000 --store postgresql --standby
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.facilities (PostgreSQL)

from bench_strongswan import (
    CHARON,
    _conn,
    _namespace,
    _session,
    _start_charon,
    _strongswan_conf,
    _strongswan_version,
    machine_description,
    strongswan_available,
)
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from storm_clients import Held, RoundResult, worker_main

from resume.initiator import InitiatorConfig
from resume.testing import simulated_full_ike
from store.keys import Keyring, MasterKey
from store.repository import Store

ID_R = b"\x02vpn.storm.example"
HANG_BOUND_S = 180.0  # any single wait: bounds a hang, never a verdict
WARMUP_WINDOW = 64  # warm-up attempts under way at a time, per client worker
CLK_TCK = os.sysconf("SC_CLK_TCK")


def client_id(i: int) -> bytes:
    return b"\x02client-%05d.storm.example" % i


# -- measuring a process ------------------------------------------------------------------
def proc_cpu_total(pid: int) -> float:
    """utime + stime of ``pid`` in seconds, exited threads included (``/proc/PID/stat``)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return math.nan
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class CpuSampler:
    """Samples a process's CPU every ``interval`` seconds in a thread, from ``t0``.

    Peaks are over one interval: 0.2 s, the resolution ``/proc/PID/stat``'s clock ticks
    (10 ms) allow without rounding noise dominating."""

    def __init__(self, pid: int, t0: float, interval: float = 0.2, *, fresh: bool = False) -> None:
        """``fresh``: the process was started at ``t0`` (it had spent no CPU then)."""
        self.pid, self.t0, self.interval = pid, t0, interval
        self.samples: list[tuple[float, float]] = [(0.0, 0.0)] if fresh else []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self.samples.append((time.time() - self.t0, proc_cpu_total(self.pid)))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            cpu = proc_cpu_total(self.pid)
            if not math.isnan(cpu):
                self.samples.append((time.time() - self.t0, cpu))

    def summary(self, until: float, ready: float = 0.0) -> dict[str, float]:
        """Peak (over one sample interval) and mean CPU, % of one core, from time zero to
        ``until`` seconds (the storm's end); CPU seconds spent in all, and from ``ready``
        (seconds after time zero) on: the storm without the process's start-up."""
        pts = [(t, c) for t, c in self.samples if t <= until + self.interval]
        if len(pts) < 2:
            return {"peak_pct": math.nan, "mean_pct": math.nan, "cpu_s": math.nan,
                    "after_ready_cpu_s": math.nan}  # fmt: skip
        rates = [(c1 - c0) / (t1 - t0) for (t0, c0), (t1, c1) in itertools.pairwise(pts)]
        span = pts[-1][0] - pts[0][0]
        spent = pts[-1][1] - pts[0][1]
        at_ready = max((c for t, c in pts if t <= ready), default=pts[0][1])
        return {
            "peak_pct": round(100 * max(rates), 1),
            "mean_pct": round(100 * spent / span, 1) if span > 0 else math.nan,
            "cpu_s": round(spent, 3),
            "after_ready_cpu_s": round(pts[-1][1] - at_ready, 3),
        }


def udp_socket_drops(port: int, netns: str = "") -> int:
    """Datagrams the kernel dropped on the UDP sockets bound to ``port`` (receive buffer
    full): the ``drops`` column of ``/proc/net/udp`` (of ``netns``).  The service's own
    metrics cannot see these."""
    if netns:
        text = subprocess.run(
            ["ip", "netns", "exec", netns, "cat", "/proc/net/udp"],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
    else:
        text = Path("/proc/net/udp").read_text()
    total = 0
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) > 12 and int(f[1].rsplit(":", 1)[1], 16) == port:
            total += int(f[-1])
    return total


def recovery(times: list[float], n: int) -> dict[str, float | None]:
    """Seconds from time zero until 50%, 99% and 100% of ``n`` were up (None: never)."""
    ts = sorted(times)
    out: dict[str, float | None] = {}
    for label, q in (("p50_s", 0.5), ("p99_s", 0.99), ("p100_s", 1.0)):
        k = max(1, math.ceil(q * n))
        out[label] = round(ts[k - 1], 3) if len(ts) >= k else None
    return out


def curve(times: list[float], n: int) -> list[tuple[float, float]]:
    """(seconds, fraction up) at every arrival: the recovery curve."""
    return [(round(t, 4), (k + 1) / n) for k, t in enumerate(sorted(times))]


# -- the resumption side --------------------------------------------------------------------
@dataclass
class Responder:
    """One ``ikeresume serve`` process."""

    proc: subprocess.Popen[bytes]
    addr: tuple[str, int]
    http: int
    started: float  # time.time() at spawn

    def ready_after(self) -> float:
        """Wait for /readyz; returns time.time() when it first answered 200."""
        url = f"http://127.0.0.1:{self.http}/readyz"
        deadline = time.monotonic() + HANG_BOUND_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ikeresume serve exited {self.proc.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return time.time()
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.005)
        raise RuntimeError("ikeresume serve never became ready")

    def metric(self, name: str) -> dict[str, float]:
        """One metric of ``/metrics``: label value (or "") -> value."""
        url = f"http://127.0.0.1:{self.http}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        pat = re.compile(rf'^{name}(?:{{[a-z]+="([^"]*)"}})? ([0-9.e+-]+)$', re.M)
        return {m.group(1) or "": float(m.group(2)) for m in pat.finditer(text)}

    def commits_ok(self) -> int:
        return int(self.metric("ikeresume_commits_total").get("ok", 0))

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(HANG_BOUND_S)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def _free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _serve_config(
    d: Path, url: str, listen: tuple[str, int], http: int, node: str, max_pending: int
) -> Path:
    path = d / f"serve-{node}.toml"
    secret, key = d / "server.key", d / "master.key"
    path.write_text(
        f"""[server]
listen = ["{listen[0]}:{listen[1]}"]
server_secret_file = "{secret}"
message3_affinity = "accept-retry"

[store]
url = "{url}"
key_file = "{key}"
sqlite_synchronous = "FULL"

[install]
mode = "none"
node = "{node}"
{f"[protocol]{chr(10)}max_pending = {max_pending}" if max_pending else ""}

[http]
listen = "127.0.0.1:{http}"

[log]
level = "warning"
"""
    )
    return path


def start_responder(
    d: Path, url: str, listen: tuple[str, int], node: str, max_pending: int = 0
) -> Responder:
    """``max_pending``: the core's ``[protocol] max_pending`` (0: the default)."""
    http = _free_port()
    conf = _serve_config(d, url, listen, http, node, max_pending)
    log = (d / f"serve-{node}.log").open("ab")
    t = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "resume.cli", "serve", "-c", str(conf)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return Responder(proc, listen, http, t)


@dataclass
class Workers:
    """The client worker processes (forked before anything else runs in them)."""

    conns: list[Any] = field(default_factory=list)
    procs: list[Any] = field(default_factory=list)

    @classmethod
    def start(cls, creds: list[Any], n_workers: int, config: InitiatorConfig) -> Workers:
        ctx = mp.get_context("fork")
        w = cls()
        for k in range(n_workers):
            share = [(i, c) for i, c in enumerate(creds) if i % n_workers == k]
            a, b = ctx.Pipe()
            p = ctx.Process(target=worker_main, args=(share, config, b), daemon=True)
            p.start()
            b.close()
            w.conns.append(a)
            w.procs.append(p)
        for a in w.conns:
            if not a.poll(HANG_BOUND_S):
                raise RuntimeError("a client worker did not start")
            a.recv()
        return w

    def send_round(self, server: tuple[str, int], t0: float, go_at: float, window: int = 0) -> None:
        """``window``: attempts under way at a time per worker (0: all at once)."""
        for a in self.conns:
            a.send(("round", server, t0, go_at, HANG_BOUND_S, window))

    def results(self) -> RoundResult:
        out = RoundResult()
        for a in self.conns:
            if not a.poll(HANG_BOUND_S + 30):
                raise RuntimeError("a client worker hung")
            r: RoundResult = a.recv()
            out.rows.extend(r.rows)
            out.held.update(r.held)
            out.cpu_s += r.cpu_s
        return out

    def stop(self) -> None:
        for a in self.conns:
            with contextlib.suppress(OSError):
                a.send(("stop",))
        for p in self.procs:
            p.join(10)
            if p.is_alive():
                p.kill()


def _wait_commits(r: Responder, n: int, quiet_s: float = 3.0) -> None:
    """Until ``r`` has committed ``n`` exchanges, or its count has not moved for
    ``quiet_s`` (a message 3 that never arrives is counted afterwards, not waited for)."""
    last, since = -1, time.monotonic()
    while (now_n := r.commits_ok()) < n:
        if now_n != last:
            last, since = now_n, time.monotonic()
        elif time.monotonic() - since > quiet_s:
            return
        time.sleep(0.05)


def _held_in_store(url: str, keyring: Keyring, held: dict[int, Held]) -> tuple[int, int]:
    """How many clients the store holds at their current generation, and how many at
    their kept previous one (their last message 3 was never committed)."""
    now = time.time()
    current = previous = 0
    with Store.open(url, keyring) as st:

        def has(cred: tuple[str, int] | None) -> bool:
            if cred is None:
                return False
            r = st.lookup(bytes.fromhex(cred[0]), now)
            return r is not None and r.credential is not None and r.credential.generation == cred[1]

        for cur, prev in held.values():
            if has(cur):
                current += 1
            elif has(prev):
                previous += 1
    return current, previous


@contextlib.contextmanager
def _store_url(kind: str, d: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{d / 'responder.db'}"
        return
    from tests.facilities import PostgresCluster

    # a private server with fsync on (every acknowledged commit durable), in /var/tmp
    # beside the SQLite files' filesystem (it runs as user postgres)
    with PostgresCluster(fsync=True, base="/var/tmp") as pg:
        yield pg.create_database("storm")


def run_resumption(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    n = args.clients
    d = Path(tempfile.mkdtemp(prefix="ikr-storm-"))
    key = MasterKey.generate()
    (d / "master.key").write_text(key.to_line() + "\n")
    (d / "master.key").chmod(0o600)
    keyring = Keyring([key])
    port = _free_port()
    out: dict[str, Any] = {
        "clients": n,
        "store": args.store,
        "standby": args.standby,
        "max_pending": args.max_pending or "default",
    }
    with _store_url(args.store, d) as url:
        task = progress.add_task(f"resumption: seeding {n} credentials", total=None)
        creds = [simulated_full_ike(id_i=client_id(i), id_r=ID_R) for i in range(n)]
        with Store.open(url, keyring) as st:
            st.upsert_full_ike_many("responder", creds, time.time())
        progress.update(task, description="resumption: responder and client workers")
        cfg = InitiatorConfig()  # the client's normal schedule
        workers = Workers.start(creds, args.workers, cfg)
        primary = start_responder(d, url, ("127.0.0.1", port), "primary", args.max_pending)
        standby: Responder | None = None
        target: Responder | None = None
        try:
            primary.ready_after()
            if args.standby:
                standby = start_responder(d, url, ("127.0.0.2", port), "standby", args.max_pending)
                standby.ready_after()
            progress.update(task, description=f"resumption: warm-up, {n} clients resume once")
            t = time.time()
            # steady traffic before the failure: a bounded window of attempts, so the
            # warm-up itself is no storm (the responder's socket never overflows)
            workers.send_round(primary.addr, t, t, WARMUP_WINDOW)
            warm = workers.results()
            warm_ok = sum(1 for r in warm.rows if r[2] == "resumed")
            _wait_commits(primary, warm_ok)  # every warm-up commit durable before the kill
            out["warmup"] = {
                "resumed": warm_ok,
                "commits_durable_before_kill": primary.commits_ok(),
                "responder_exchanges": primary.metric("ikeresume_exchanges_total"),
                "responder_drops": primary.metric("ikeresume_drops_total"),
                "responder_core": primary.metric("ikeresume_core_stat"),
                "kernel_socket_drops": udp_socket_drops(port),
            }
            progress.update(task, description="resumption: SIGKILL, restart, storm")
            primary.kill()
            # acknowledged commits (the metric counts them once durable) must all be there
            acked = out["warmup"]["commits_durable_before_kill"]
            at_current, at_previous = _held_in_store(url, keyring, warm.held)
            if standby is not None:  # time zero: the failover (the store was read first)
                target, t0 = standby, time.time()
            else:
                target = start_responder(d, url, ("127.0.0.1", port), "primary", args.max_pending)
                t0 = target.started
            with CpuSampler(target.proc.pid, t0, fresh=standby is None) as cpu:
                if args.clients_start == "kill":
                    workers.send_round(target.addr, t0, t0)
                    ready = target.ready_after()
                else:
                    ready = target.ready_after()
                    workers.send_round(target.addr, t0, ready)
                storm = workers.results()
            times = [r[1] for r in storm.rows if r[2] == "resumed"]
            end = max(times) if times else HANG_BOUND_S
            outcomes = Counter(r[2] for r in storm.rows)
            _wait_commits(target, len(times))
            drops = target.metric("ikeresume_drops_total")
            kernel_drops = udp_socket_drops(port)
            exchanges = target.metric("ikeresume_exchanges_total")
            commits = target.metric("ikeresume_commits_total")
            target.stop()
            in_step, behind = _held_in_store(url, keyring, storm.held)
            out.update(
                {
                    "ready_s": round(ready - t0, 3),
                    **recovery(times, n),
                    "resumed": len(times),
                    "failures": {k: v for k, v in outcomes.items() if k != "resumed"},
                    "attempts": sum(r[3] for r in storm.rows),
                    "retransmits": sum(r[4] for r in storm.rows),
                    "used_previous_generation": sum(1 for r in storm.rows if r[5]),
                    "responder_drops": {k: int(v) for k, v in drops.items() if v},
                    "kernel_socket_drops": kernel_drops,
                    "responder_exchanges": {k: int(v) for k, v in exchanges.items() if v},
                    "responder_commits": {k: int(v) for k, v in commits.items() if v},
                    # durable commits missing after the kill, and clients the store holds
                    # at neither of their generations: both must be 0
                    "credentials_lost_at_kill": max(0, acked - at_current)
                    + (n - at_current - at_previous),
                    "warmup_message3_never_committed": at_previous,
                    # the client's view said "resumed", the store disagrees: the message 3
                    # never reached a commit (its next attempt will use the kept previous
                    # generation; these SAs carry nothing): counted, never hidden
                    "storm_message3_never_committed": behind,
                    "out_of_step_after_storm": n - in_step - behind,
                    "responder_cpu": cpu.summary(end, ready - t0),
                    "client_cpu_s": round(storm.cpu_s, 3),
                    "curve": curve(times, n),
                }
            )
        finally:
            for r in (primary, standby, target):
                if r is not None and r.proc.poll() is None:
                    r.kill()
            workers.stop()
            shutil.rmtree(d, ignore_errors=True)
        progress.update(task, description="resumption: done", total=1, completed=1)
    return out


# -- the strongSwan side --------------------------------------------------------------------
def _charon_ready(d: Path, ns: str, who: str, port: int, tag: str, block: int) -> tuple[Any, Any]:
    """Start a charon, load its connection and PSK over VICI: (process, session)."""
    conf, vici_sock = d / f"{who}-{tag}.conf", d / f"{who}-{tag}.vici"
    log_level = int(os.environ.get("IKR_STORM_CHARON_LOG", "-1"))
    _strongswan_conf(conf, vici_sock, port, d / f"{who}-{tag}.log", who == "initiator",
                     block_threshold=block, log_level=log_level)  # fmt: skip
    proc = _start_charon(ns, conf, d / f"{who}-{tag}.out")
    sess = _session(vici_sock, timeout=HANG_BOUND_S)
    peer = "responder" if who == "initiator" else "initiator"
    sess.load_shared(
        {"type": "IKE", "data": "ikeresume-storm-psk-0123456789", "owners": [who, peer]}
    )
    conn = _conn("psk-x25519", who, peer, None)
    sess.load_conn(conn)
    return proc, sess


def _kill(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.kill()
        p.wait(HANG_BOUND_S)


SW_ISSUERS = 8  # threads issuing VICI initiates, each on its own session


def _issue(sess: Any, k: int) -> None:
    for _ in range(k):
        sess.request("initiate", {"ike": "bench", "timeout": "-1", "loglevel": "-1"})


def run_strongswan(m: int, progress: Progress, at_kill: bool = False) -> dict[str, Any]:
    task = progress.add_task(f"strongSwan: {m} full IKEv2 after a restart", total=None)
    out: dict[str, Any] = {"clients": m, "strongswan_version": _strongswan_version()}
    with tempfile.TemporaryDirectory(prefix="ikr-storm-sw-") as tmp, _namespace("storm") as ns:
        d = Path(tmp)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            ini, _ini_sess = _charon_ready(d, ns, "initiator", 10500, "a", m + 10)
            procs.append(ini)
            first, _s = _charon_ready(d, ns, "responder", 500, "a", m + 10)
            procs.append(first)
            ups: list[float] = []
            t0 = math.inf
            listener = _session(d / "initiator-a.vici")
            registered, stop_listening = threading.Event(), threading.Event()

            def listen() -> None:
                with contextlib.suppress(Exception):
                    # registered by the first step of the generator: a (None, None) after
                    # 0.1 s without events says so
                    for label, ev in listener.listen(["ike-updown"], timeout=0.1):
                        registered.set()
                        if label is not None and ev.get("up") == b"yes":
                            ups.append(time.time() - t0)
                        if len(ups) >= m or stop_listening.is_set():
                            return

            th = threading.Thread(target=listen, daemon=True)
            th.start()
            registered.wait(HANG_BOUND_S)
            # the clients' VICI sessions, one per issuing thread (one session serialises
            # the initiates: ~1 ms each)
            sessions = [_session(d / "initiator-a.vici") for _ in range(SW_ISSUERS)]
            shares = [m // SW_ISSUERS + (k < m % SW_ISSUERS) for k in range(SW_ISSUERS)]
            issuers = [
                threading.Thread(target=_issue, args=(s, k))
                for s, k in zip(sessions, shares, strict=True)
            ]
            _kill(first)  # SIGKILL
            t0 = time.time()
            ini_cpu0 = proc_cpu_total(ini.pid)
            if at_kill:  # the first IKE_SA_INITs hit a dead port: charon's schedule resends
                for th_ in issuers:
                    th_.start()
            fired0 = time.time()
            resp, _rs = _charon_ready(d, ns, "responder", 500, "b", m + 10)
            procs.append(resp)
            ready = time.time()
            with CpuSampler(resp.pid, t0, fresh=True) as cpu:
                if not at_kill:
                    fired0 = time.time()
                    for th_ in issuers:
                        th_.start()
                for th_ in issuers:
                    th_.join()
                fired = time.time()
                deadline = time.monotonic() + HANG_BOUND_S
                while len(ups) < m and time.monotonic() < deadline:
                    time.sleep(0.05)
            ini_cpu = proc_cpu_total(ini.pid) - ini_cpu0
            kernel_drops = udp_socket_drops(500, ns)
            end = max(ups) if ups else HANG_BOUND_S
            stop_listening.set()
            th.join(HANG_BOUND_S)
            out.update(
                {
                    "ready_s": round(ready - t0, 3),
                    "initiates_issued_s": [round(fired0 - t0, 3), round(fired - t0, 3)],
                    **recovery(ups, m),
                    "established": len(ups),
                    "failures": {"not_established": m - len(ups)} if len(ups) < m else {},
                    "responder_cpu": cpu.summary(end, ready - t0),
                    "client_cpu_s": round(ini_cpu, 3),
                    "kernel_socket_drops": kernel_drops,
                    "curve": curve(ups, m),
                }
            )
        finally:
            for p in procs:
                _kill(p)
    progress.update(task, description="strongSwan: done", total=1, completed=1)
    return out


def extrapolate(sw: dict[str, Any], n: int) -> dict[str, Any]:
    """Linear scaling of a CPU-bound storm measured with fewer clients (labelled as such)."""
    m = sw["clients"]
    k = n / m
    return {
        "clients": n,
        "extrapolated_from": m,
        **{
            q: None if sw[q] is None else round(sw["ready_s"] + (sw[q] - sw["ready_s"]) * k, 3)
            for q in ("p50_s", "p99_s", "p100_s")
        },
        "responder_cpu_s": round(sw["responder_cpu"]["cpu_s"] * k, 3),
    }


# -- report ----------------------------------------------------------------------------------
def plot(res: dict[str, Any], sw: dict[str, Any] | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for data, label in ((res, "resumption (ikeresume serve)"), (sw, "full IKEv2 (strongSwan)")):
        if data and data["curve"]:
            xs = [0.0] + [t for t, _f in data["curve"]]
            ys = [0.0] + [f for _t, f in data["curve"]]
            (line,) = ax.step(xs, ys, where="post", label=f"{label}, N={data['clients']}")
            ax.axvline(data["ready_s"], color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_xlabel("seconds since the responder's restart")
    ax.set_ylabel("fraction of clients up again")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("failover storm: recovery after SIGKILL + restart (dotted: ready)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(v: float | None) -> str:
    return "never" if v is None else f"{v:.2f} s"


def print_report(con: Console, out: dict[str, Any]) -> None:
    res, sw, ext = out["resumption"], out.get("strongswan"), out.get("strongswan_extrapolated")
    t = Table(title=f"failover storm, N={res['clients']} ({res['store']}"
              f"{', standby takes over' if res['standby'] else ', restart'})")  # fmt: skip
    t.add_column("measure")
    t.add_column("resumption", justify="right")
    t.add_column("strongSwan full IKEv2", justify="right")
    swl = f" (N={sw['clients']})" if sw and sw["clients"] != res["clients"] else ""

    def row(name: str, a: str, b: str) -> None:
        t.add_row(name, a, b)

    what = "failover (standby already serving)" if res["standby"] else "restart"
    row(f"ready after the {what}", _fmt(res["ready_s"]), _fmt(sw["ready_s"]) + swl if sw else "-")
    for q, label in (("p50_s", "50% up"), ("p99_s", "99% up"), ("p100_s", "100% up")):
        b = "-"
        if sw:
            b = _fmt(sw[q]) + swl
            if ext:
                b += f"; N={ext['clients']} extrapolated {_fmt(ext[q])}"
        row(label, _fmt(res[q]), b)
    after = res["p100_s"] and res["p100_s"] - res["ready_s"]
    sw_after = sw and sw["p100_s"] and sw["p100_s"] - sw["ready_s"]
    row("100% up, counted from ready", _fmt(after), _fmt(sw_after) + swl if sw else "-")
    rc = res["responder_cpu"]
    row("responder CPU peak / mean", f"{rc['peak_pct']:.0f}% / {rc['mean_pct']:.0f}%",
        f"{sw['responder_cpu']['peak_pct']:.0f}% / {sw['responder_cpu']['mean_pct']:.0f}%"
        if sw else "-")  # fmt: skip
    src = sw["responder_cpu"] if sw else None
    row("responder CPU s: from restart / after ready",
        f"{rc['cpu_s']:.2f} / {rc['after_ready_cpu_s']:.2f}",
        f"{src['cpu_s']:.2f} / {src['after_ready_cpu_s']:.2f}{swl}" if src else "-")  # fmt: skip
    fails = ", ".join(f"{k}={v}" for k, v in res["failures"].items()) or "0"
    row("failures", fails, (", ".join(f"{k}={v}" for k, v in sw["failures"].items()) or "0")
        if sw else "-")  # fmt: skip
    row("clients' CPU seconds (same machine)", f"{res['client_cpu_s']:.2f}",
        f"{sw['client_cpu_s']:.2f}{swl}" if sw else "-")  # fmt: skip
    row("retransmissions / attempts", f"{res['retransmits']} / {res['attempts']}", "-")
    row(
        "datagrams the responder dropped",
        ", ".join(f"{k}={v}" for k, v in res["responder_drops"].items()) or "0",
        "-",
    )
    row(
        "kernel drops, responder socket full",
        f"{res['warmup']['kernel_socket_drops']} warm-up, {res['kernel_socket_drops']} storm",
        f"{sw['kernel_socket_drops']}{swl}" if sw else "-",
    )
    ex = res["responder_exchanges"]
    row("responder's exchanges by outcome", ", ".join(f"{k}={v}" for k, v in ex.items()), "-")
    row("used kept previous generation", str(res["used_previous_generation"]), "-")
    row("credentials lost at the kill", str(res["credentials_lost_at_kill"]), "-")
    row("message 3 never committed: warm-up / storm",
        f"{res['warmup_message3_never_committed']} / {res['storm_message3_never_committed']}",
        "-")  # fmt: skip
    row("clients the store holds at neither generation", str(res["out_of_step_after_storm"]), "-")
    con.print(t)
    m = out["machine"]
    con.print(f"machine: {m['cpu']}, {m['cores']} cores, load average {out['loadavg_before']} "
              f"before / {out['loadavg_after']} after")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2, help="client processes")
    ap.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument(
        "--standby",
        action="store_true",
        help="a second responder on the same store takes over (no restart)",
    )
    ap.add_argument(
        "--clients-start",
        choices=("ready", "kill"),
        default="ready",
        help="clients reconnect when the restarted responder is ready, or at once",
    )
    ap.add_argument("--baseline", choices=("strongswan", "none"), default="strongswan")
    ap.add_argument(
        "--strongswan-clients",
        type=int,
        default=0,
        help="strongSwan storm size (default: --clients); smaller = extrapolated",
    )
    ap.add_argument(
        "--max-pending",
        type=int,
        default=0,
        help="the responder's [protocol] max_pending (default: the service's, 1024)",
    )
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--png", metavar="PATH")
    args = ap.parse_args(argv)
    con = Console(stderr=True)
    out: dict[str, Any] = {
        "machine": machine_description(),
        "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "command": " ".join(["python bench/bench_storm.py", *(argv or sys.argv[1:])]),
    }
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=con, transient=False) as progress:  # fmt: skip
        out["resumption"] = run_resumption(args, progress)
        if args.baseline == "strongswan":
            if not strongswan_available():
                con.print(f"strongSwan baseline skipped: needs root, iproute2 and {CHARON}")
            else:
                m = args.strongswan_clients or args.clients
                at_kill = args.clients_start == "kill"
                out["strongswan"] = run_strongswan(m, progress, at_kill)
                if m < args.clients:
                    out["strongswan_extrapolated"] = extrapolate(out["strongswan"], args.clients)
    out["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print_report(Console(), out)
    if args.png:
        plot(out["resumption"], out.get("strongswan"), Path(args.png))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    res = out["resumption"]
    ok = res["resumed"] == res["clients"] and res["credentials_lost_at_kill"] == 0
    return 0 if ok and res["out_of_step_after_storm"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
