"""``ikeresume serve``: the trio responder service around the sans-I/O core and the store.

This module owns the service's lifecycle and its event loops; the pieces they drive live in
modules named for what they own: :mod:`~resume.net.udp` (sockets without a scheduler trip
per datagram), :mod:`~resume.net.admission` (what may reach the core: header peek, per-source
fairness, overload), :mod:`~resume.net.storelink` (answering the core's lookups and commits),
:mod:`~resume.net.lane` (one socket + its responder + the inbox other threads post to),
:mod:`~resume.net.hooks` (installing SAs) and :mod:`~resume.net.metrics`.

Per batch of datagrams, not per datagram: one drain of the socket (non-blocking until
``EAGAIN`` or ``recv_batch``), admission and the core for each datagram, then one pump of
the core's events, one flush of its replies (``sendto`` until the socket would block) and
exactly one scheduler trip: ``wait_readable`` when the drain emptied the socket, a plain
checkpoint when the batch filled up.  No task is spawned per datagram (installs are, when
enabled).

Installs and the outbox (spec 6.2.1): every accepted exchange's SA pair is committed with
its ratchet into the install outbox (:mod:`store.outbox`); a durable commit starts its
install, and the row is deleted once the install attempt has finished.  At start-up,
before the sockets are read, the rows a previous process left (it was killed between a
commit and the end of its install) are installed -- idempotently: a pair already in the
kernel counts as installed -- and rows whose hard lifetime has passed are deleted unseen.

Shutdown (SIGTERM, :meth:`ResponderService.shutdown`): readiness drops, new exchanges
(message 1) are refused, message 3s of exchanges already past message 2 are still served
until the service has been quiet for a moment; then pending commits are flushed and installs
finished, all bounded by ``shutdown_grace``.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from resume.events import (
    Address,
    CommitNeeded,
    CredentialNeeded,
    ResumptionComplete,
    ResumptionFailed,
)
from resume.net import logs
from resume.net.admission import Admission
from resume.net.config import ConfigError, ServeConfig, affinity_warning, responder_config
from resume.net.gctune import SERVE_GC_THRESHOLD, serving_gc
from resume.net.health import HealthServer
from resume.net.hooks import Installer, InstallError, NoInstaller, make_installer
from resume.net.lane import Lane
from resume.net.metrics import ServerMetrics
from resume.net.server_secret import load_server_secret
from resume.net.storelink import StoreLink
from resume.net.udp import UdpEndpoint
from resume.net.udpwire import try_bypass_ipsec
from resume.responder import Responder
from store.committer import GroupCommitter
from store.errors import StoreError
from store.outbox import InstallIntent
from store.repository import Store

__all__ = ["DRAIN_QUIET_S", "ResponderService", "load_server_secret", "responder_config"]

#: How long the service must have been quiet (nothing received or sent) during a drain
#: before it stops serving message 3s: about one round trip plus the initiator's processing.
DRAIN_QUIET_S = 0.25


@dataclass
class OutboxReplay:
    """What the start-up replay of the install outbox did (also logged and counted)."""

    installed: int = 0
    failed: int = 0
    expired: int = 0
    unreadable: int = 0
    discarded: int = 0  # [install] mode = "none": rows deleted, nothing to install with


class ResponderService:
    """The deployed responder: sockets, overload control, store, installer, metrics.

    This class runs the per-datagram path in Python (the reference core, trio).  The
    native engine -- the same service with that path in Rust -- is its subclass
    :class:`resume.net.native_service.NativeResponderService`;
    :func:`resume.net.service.make_service` picks one from ``[server] engine``.
    """

    def __init__(
        self,
        config: ServeConfig,
        store: Store,
        *,
        server_secret: bytes | None = None,
        installer: Installer | None = None,
        clock: Callable[[], float] = time.time,
        reuse_port: bool = False,
        inline_lookups: bool | None = None,
        gc_threshold: tuple[int, int, int] | None = SERVE_GC_THRESHOLD,
    ) -> None:
        """``inline_lookups``: answer lookups on the event loop (default: SQLite only).
        ``gc_threshold``: the collector's thresholds while serving (:mod:`.gctune`; ``None``
        leaves them alone)."""
        #: "python" here, "native" for the subclass with the Rust core
        self.engine = "python"
        self.gc_threshold = gc_threshold
        self.config = config
        self.store = store
        self.clock = clock
        self.reuse_port = reuse_port
        self.responder_config = responder_config(config.protocol)
        self.server_secret = (
            server_secret
            if server_secret is not None
            else load_server_secret(config.server.server_secret_file)
        )
        if installer is None:
            try:
                installer = make_installer(
                    config.install.mode, config.install.hook, config.install.hook_timeout
                )
            except ValueError as e:
                raise ConfigError(f"[install] {e}") from None
        self.installer = installer
        self._install_enabled = not isinstance(installer, NoInstaller)
        #: whose rows of the install outbox this service installs (its kernel's)
        self.install_node = config.install.node or socket.gethostname()
        self.outbox_replay = OutboxReplay()
        self.metrics = ServerMetrics()
        self.link = StoreLink(
            store,
            self.metrics,
            miss_seconds=config.store.miss_reuse_seconds,
            group_commit_max=config.store.group_commit_max,
            inline_lookups=inline_lookups,
            install_node=self.install_node if self._install_enabled else None,
            on_committed=self._committed,
        )
        self.admission = Admission(config.limits)
        #: Set to a list to keep every message-3-to-durable-commit latency (benchmarks).
        self.latency_samples: list[float] | None = None
        #: CPU seconds of the serving loops' work (admission, the core, lookups answered
        #: inline, sockets), measured per batch on the loop's thread: the demo's
        #: per-resumption cost (the group commit's own thread is not in it).
        self.loop_cpu_s = 0.0
        self.lanes: list[Lane] = []
        self.http_port: int | None = None
        self._last_activity = 0.0
        self._install_limiter = trio.CapacityLimiter(config.install.max_concurrent)
        self._installs_running = 0
        self._nursery: trio.Nursery | None = None
        self._stop = trio.Event()
        self.log = logging.getLogger(logs.LOGGER_NAME)

    # -- state -----------------------------------------------------------------------------
    @property
    def addresses(self) -> list[Address]:
        return [lane.endpoint.local_addr for lane in self.lanes]

    @property
    def draining(self) -> bool:
        return self.admission.draining

    @property
    def store_ok(self) -> bool:
        return self.link.ok

    @property
    def committer(self) -> GroupCommitter | None:
        return self.link.committer

    @property
    def ready(self) -> bool:
        return bool(self.lanes) and not self.draining and self.store_ok

    @property
    def pending(self) -> int:
        return sum(lane.responder.pending for lane in self.lanes)

    # -- lifecycle -------------------------------------------------------------------------
    def _bind(self) -> None:
        cfg = self.config.server
        token = trio.lowlevel.current_trio_token()
        try:
            for addr in cfg.listen:
                ep = UdpEndpoint.bind(
                    addr,
                    natt=cfg.natt_framing,
                    reuse_port=self.reuse_port,
                    buffer_bytes=cfg.socket_buffer,
                )
                if cfg.ipsec_bypass and (why := try_bypass_ipsec(ep.sock)) is not None:
                    level = logging.WARNING if self.config.install.mode == "xfrm" else logging.DEBUG
                    logs.event(level, "ipsec_bypass_unavailable", listen=str(addr), error=why)
                host, port = ep.local_addr
                name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
                responder = Responder(self.responder_config, self.server_secret)
                self.lanes.append(Lane(ep, responder, name, token))
        except OSError as e:
            for lane in self.lanes:
                lane.endpoint.close()
            raise ConfigError(f"[server] listen: cannot bind: {e.strerror or e}") from None

    async def run(
        self, task_status: trio.TaskStatus[ResponderService] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until :meth:`shutdown` (or cancellation); ``started`` once bound."""
        self._bind()
        self.link.open()
        try:
            with serving_gc(self.gc_threshold):
                await self._serve(task_status)
        finally:
            self.metrics.ready.set(0)
            await self.link.close()
            for lane in self.lanes:
                lane.endpoint.close()
            logs.event(logging.INFO, "stopped", pending=self.pending)

    async def _serve(self, task_status: trio.TaskStatus[ResponderService]) -> None:
        """The nursery of one service run (under the collector settings of :meth:`run`)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.config.http.listen:
                health = HealthServer(self.config.http.listen, self._routes())
                self.http_port = await nursery.start(health.serve)
            await self._replay_outbox()  # before serving: /readyz says "starting" meanwhile
            nursery.start_soon(self.link.forget_loop)
            recv_scopes = [trio.CancelScope() for _ in self.lanes]
            for lane, scope in zip(self.lanes, recv_scopes, strict=True):
                nursery.start_soon(self._recv_loop, lane, scope)
                nursery.start_soon(self._service_loop, lane)
                if not self.link.inline:
                    nursery.start_soon(self.link.lookup_loop, lane, self.clock)
            nursery.start_soon(self.link.probe_loop, self.clock)
            nursery.start_soon(self._lineage_loop)
            self.metrics.ready.set(1)
            logs.event(
                logging.INFO,
                "serving",
                listen=[str(a) for a in self.config.server.listen],
                bound=[f"{h}:{p}" for h, p in self.addresses],
                http_port=self.http_port,
                install=self.config.install.mode,
            )
            warning = affinity_warning(self.config, self.responder_config)
            if warning:
                logs.event(logging.WARNING, "message3_affinity_unstated", detail=warning)
            task_status.started(self)
            await self._stop.wait()
            await self._drain(recv_scopes)
            nursery.cancel_scope.cancel()

    def shutdown(self) -> None:
        """Begin a graceful stop (idempotent, callable from a signal handler task)."""
        if not self.draining:
            self.admission.draining = True
            self.metrics.ready.set(0)
            logs.event(logging.INFO, "draining", pending=self.pending)
        self._stop.set()

    async def _drain(self, recv_scopes: list[trio.CancelScope]) -> None:
        grace = self.config.server.shutdown_grace
        with trio.move_on_after(grace) as scope:
            while True:
                quiet = self.clock() - self._last_activity >= DRAIN_QUIET_S
                busy = (
                    self.pending
                    or self._installs_running
                    or any(lane.outstanding_commits or lane.inbox for lane in self.lanes)
                )
                if quiet and not busy:
                    break
                await trio.sleep(0.02)
        for rs in recv_scopes:
            rs.cancel()
        if scope.cancelled_caught:
            logs.event(logging.WARNING, "drain_timeout", pending=self.pending, grace_s=grace)

    # -- the hot path ----------------------------------------------------------------------
    async def _recv_loop(self, lane: Lane, scope: trio.CancelScope) -> None:
        ep, resp, m = lane.endpoint, lane.responder, self.metrics
        batch_n = self.config.server.recv_batch
        received, drops = m.datagrams, m.drops
        admit = self.admission.admit
        receive = resp.receive_datagram
        recv_nowait = ep.recv_nowait
        sock = ep.sock
        clock = self.clock
        cpu = time.thread_time
        with scope:
            while True:
                c0 = cpu()
                batch = recv_nowait(batch_n)
                if batch:
                    now = clock()
                    self._last_activity = now
                    received.inc(lane.name, amount=len(batch))
                    pending = self.pending
                    for data, addr in batch:
                        reason = admit(data, addr[0], now, pending)
                        if reason is not None:
                            drops.inc(reason)
                            continue
                        receive(data, addr, now)
                        pending += 1  # at most: the core may have answered from its caches
                    self._pump(lane, now)
                    await self._flush(lane)
                    self.loop_cpu_s += cpu() - c0
                # exactly one scheduler trip per batch, and always one (other tasks run):
                if len(batch) < batch_n:
                    await trio.lowlevel.wait_readable(sock)  # drained: recv hit EAGAIN
                else:
                    await trio.lowlevel.checkpoint()  # more may be queued

    async def _service_loop(self, lane: Lane) -> None:
        """Store answers from other threads or tasks, expired requests and timers."""
        resp = lane.responder
        link = self.link
        inbox = lane.inbox
        while True:
            deadline = resp.get_timer()
            timeout = math.inf if deadline is None else max(0.0, deadline - self.clock())
            if not inbox:
                with trio.move_on_after(min(timeout, 1.0)):
                    await lane.wake.wait()
            lane.wake = trio.Event()  # before draining: a later post wakes the new event
            c0 = time.thread_time()
            now = self.clock()
            while inbox:
                kind, token, fut = inbox.popleft()
                if kind == "commit":
                    link.commit_finished(lane, token, fut, now)
            if self.committer is not None:
                self.metrics.commit_batches.values[()] = self.link.transactions
            deadline = resp.get_timer()
            if deadline is not None and deadline <= now:
                resp.handle_timer(now)
            self._pump(lane, now)
            await self._flush(lane)
            self.loop_cpu_s += time.thread_time() - c0

    async def _flush(self, lane: Lane) -> None:
        out = lane.responder.datagrams_to_send(self.clock())
        if out:
            self._last_activity = self.clock()
            self.metrics.sent.inc(amount=len(out))
            left = lane.endpoint.send_nowait(out)
            if left:
                await lane.endpoint.send_batch(left)

    # -- answering the core ----------------------------------------------------------------
    def _pump(self, lane: Lane, now: float) -> None:
        resp = lane.responder
        link = self.link
        while (ev := resp.next_event()) is not None:
            if isinstance(ev, CredentialNeeded):
                link.lookup(lane, ev, now)
            elif isinstance(ev, CommitNeeded):
                link.commit(lane, ev, now)
            elif isinstance(ev, ResumptionComplete):
                self._completed(lane, ev, now)
            elif isinstance(ev, ResumptionFailed):
                self.metrics.exchanges.inc(ev.reason)
                lane.started.pop(ev.handle or b"", None)
                if ev.reason == "lineage":  # a policy decision operators want to see
                    logs.event(logging.INFO, "refused_not_pq_lineage", peer=ev.addr[0])
        self._update_gauges()

    def _completed(self, lane: Lane, ev: ResumptionComplete, now: float) -> None:
        self.metrics.exchanges.inc("resumed")
        lineage = ev.successor.lineage.value
        self.metrics.resumptions.inc(ev.ke, lineage)
        logs.event(logging.DEBUG, "resumed", peer=ev.addr[0], ke=ev.ke, lineage=lineage)
        t0 = lane.started.pop(ev.handle, None)
        if t0 is not None:
            self.metrics.latency.observe(max(0.0, now - t0))
            if self.latency_samples is not None:
                self.latency_samples.append(now - t0)

    # -- installs and the outbox -----------------------------------------------------------
    def _committed(self, intent: InstallIntent) -> None:
        """A commit with its outbox row is durable: install the pair (even if the core's
        slot expired meanwhile -- the peers are in step, the client has its SAs)."""
        if self._nursery is not None:
            self._nursery.start_soon(self._install, intent)

    async def _install(self, intent: InstallIntent) -> None:
        self._installs_running += 1
        self.metrics.queue_depth.inc("install")
        try:
            async with self._install_limiter:
                await self.installer.install(intent.sa)
            self.metrics.installs.inc("ok")
        except InstallError as e:
            self.metrics.installs.inc("failed")
            peer = intent.sa.remote_addr
            logs.event(logging.WARNING, "install_failed", peer=peer, error=str(e))
        finally:
            self._installs_running -= 1
            self.metrics.queue_depth.inc("install", amount=-1)
        # reached only when the attempt finished (a cancelled one keeps its row)
        self.link.forget_install(intent.uid)

    async def _replay_outbox(self) -> None:
        """Install what a previous process committed but may not have installed."""
        rep = self.outbox_replay = OutboxReplay()
        try:
            found = await trio.to_thread.run_sync(
                self.store.pending_installs, self.install_node, self.clock()
            )
        except StoreError as e:  # the rows stay for the next start; serving NACKs anyway
            logs.event(logging.ERROR, "install_outbox_unreadable", error=str(e))
            return
        rep.expired, rep.unreadable = found.expired, len(found.unreadable or {})
        for uid, why in (found.unreadable or {}).items():
            logs.event(logging.ERROR, "install_outbox_row_unreadable", row=uid, error=why)
        done: list[str] = []

        async def one(sa_uid: str, intent: InstallIntent) -> None:
            try:
                async with self._install_limiter:
                    await self.installer.install(intent.sa)
                rep.installed += 1
            except InstallError as e:
                rep.failed += 1
                logs.event(logging.WARNING, "install_failed", peer=intent.sa.remote_addr,
                           error=str(e), replay=True)  # fmt: skip
            done.append(sa_uid)

        if self._install_enabled:
            async with trio.open_nursery() as n:
                for p in found.pending:
                    n.start_soon(one, p.uid, InstallIntent(p.uid, self.install_node, p.sa))
        else:
            rep.discarded = len(found.pending)
            done = [p.uid for p in found.pending]
        if done:
            try:
                await trio.to_thread.run_sync(self.store.forget_installs, done)
            except StoreError as e:  # re-installed (idempotently) at the next start
                logs.event(logging.WARNING, "install_outbox_not_cleared", error=str(e))
        m = self.metrics.installs
        for label, n_ in (("replayed", rep.installed), ("replay_failed", rep.failed),
                          ("expired_not_installed", rep.expired)):  # fmt: skip
            if n_:
                m.inc(label, amount=n_)
        if found.pending or rep.expired or rep.unreadable:
            logs.event(logging.INFO, "install_outbox_replayed", node=self.install_node,
                       installed=rep.installed, failed=rep.failed, expired=rep.expired,
                       unreadable=rep.unreadable, discarded=rep.discarded)  # fmt: skip

    # -- metrics and HTTP ------------------------------------------------------------------
    #: How often the credentials-by-lineage gauge is recounted (one GROUP BY in a thread).
    LINEAGE_REFRESH_S = 60.0

    async def _lineage_loop(self) -> None:
        """Keep ``ikeresume_credentials{lineage}`` current; a store error leaves the last
        values (the readiness probe reports the store, not this)."""
        while True:
            try:
                counts = await trio.to_thread.run_sync(self.store.count_by_lineage, "responder")
            except StoreError:
                counts = None
            if counts is not None:
                for lineage, n in counts.items():
                    self.metrics.credentials.set(n, lineage)
            await trio.sleep(self.LINEAGE_REFRESH_S)

    def _update_gauges(self) -> None:
        m = self.metrics
        lanes = self.lanes
        if len(lanes) == 1:
            lane = lanes[0]
            m.queue_depth.set(lane.responder.pending, "pending")
            m.queue_depth.set(lane.outstanding_commits, "commit")
        else:
            m.queue_depth.set(self.pending, "pending")
            m.queue_depth.set(sum(lane.outstanding_commits for lane in lanes), "commit")

    def render_metrics(self) -> str:
        m = self.metrics
        core: dict[str, int] = {}
        for lane in self.lanes:
            for k, v in lane.responder.stats.items():
                core[k] = core.get(k, 0) + v
            for k, v in lane.endpoint.drops.items():
                m.drops.values[(f"socket_{k}",)] = v
        for k, v in core.items():
            m.core.set(v, k)
        self._update_gauges()
        if self.committer is not None:
            m.commit_batches.values[()] = self.link.transactions
        return m.render()

    def _routes(self) -> dict[str, Callable[[], tuple[int, str, str]]]:
        text = "text/plain; charset=utf-8"

        def metrics() -> tuple[int, str, str]:
            return 200, "text/plain; version=0.0.4; charset=utf-8", self.render_metrics()

        def healthz() -> tuple[int, str, str]:
            return 200, text, "ok\n"

        def readyz() -> tuple[int, str, str]:
            if self.ready:
                return 200, text, "ready\n"
            why = "draining" if self.draining else "store unavailable" if not self.store_ok else ""
            return 503, text, f"not ready: {why or 'starting'}\n"

        return {"/metrics": metrics, "/healthz": healthz, "/readyz": readyz}
