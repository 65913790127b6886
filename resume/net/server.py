"""``ikeresume serve``: the trio responder service around the sans-I/O core and the store.

Per datagram, cheapest first: the endpoint reads without a scheduler trip; the header is
peeked with ``struct`` and anything that is not a resumption request is dropped and counted;
the per-source bucket, the global new-exchange bucket and the pending-work bound drop floods
before any cryptography or database work; only then does the core see the bytes.

The core asks, the service answers:

* ``CredentialNeeded`` -> ``Store.lookup`` (inline on SQLite: a local read is cheaper than a
  thread hop; in a worker thread on PostgreSQL).  Any ``StoreError`` answers ``None``: the
  peer gets the same NACK as for an unknown handle and falls back to a full IKE (fail closed).
* ``CommitNeeded`` -> the store's :class:`~store.committer.GroupCommitter` (one durable
  transaction for every accept queued meanwhile); the core hears ``commit_result`` only once
  the transaction is durable, so no completion is acknowledged before it is on disk.
* ``ResumptionComplete`` -> the configured installer (XFRM via ikeshim, a hook, or nothing).

One :class:`Lane` per listening socket: its own ``Responder`` (all lanes share the server
secret), so a reply always leaves through the socket its request came in on.

Shutdown (SIGTERM, :meth:`ResponderService.shutdown`): readiness drops, new exchanges
(message 1) are refused, message 3s of exchanges already past message 2 are still served
until the service has been quiet for a moment; then pending commits are flushed and installs
finished, all bounded by ``shutdown_grace``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import trio

from resume.errors import LocalProtocolError
from resume.events import (
    CommitNeeded,
    CredentialNeeded,
    ResumptionComplete,
    ResumptionFailed,
)
from resume.net import logs
from resume.net.config import ConfigError, ServeConfig
from resume.net.health import HealthServer
from resume.net.hooks import Installer, InstallError, NoInstaller, make_installer
from resume.net.metrics import ServerMetrics
from resume.net.ratelimit import SourceLimiter, TokenBucket
from resume.net.udp import Addr, UdpEndpoint, try_bypass_ipsec
from resume.responder import MIN_SERVER_SECRET, Responder, ResponderConfig
from resume.wire import EXCHANGE_IKE_RESUME, FLAG_INITIATOR, FLAG_RESPONSE, HEADER_LEN
from store.committer import GroupCommitter
from store.errors import StoreError
from store.repository import Store

#: How long the service must have been quiet (nothing received or sent) during a drain
#: before it stops serving message 3s: about one round trip plus the initiator's processing.
DRAIN_QUIET_S = 0.25


def responder_config(protocol: dict[str, Any] | Any) -> ResponderConfig:
    """Build the core's config from the ``[protocol]`` table (ConfigError when invalid)."""
    allowed = {f.name: f for f in fields(ResponderConfig) if f.name != "default_lifetimes"}
    kw: dict[str, Any] = {}
    defaults = ResponderConfig()
    for key, value in dict(protocol).items():
        if key not in allowed:
            raise ConfigError(
                f"[protocol] unknown key {key!r} (known: {', '.join(sorted(allowed))})"
            )
        default = getattr(defaults, key)
        if isinstance(default, bool) != isinstance(value, bool) or not isinstance(
            value, type(default) if not isinstance(default, float) else int | float
        ):
            raise ConfigError(f"[protocol] {key}: expected {type(default).__name__}, got {value!r}")
        kw[key] = value
    try:
        return ResponderConfig(**kw)
    except (LocalProtocolError, ValueError, TypeError) as e:
        raise ConfigError(f"[protocol] {e}") from None


def load_server_secret(path: str | os.PathLike[str]) -> bytes:
    """Read the cookie key, creating it (0600, 32 random bytes) on first start."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        p.parent.mkdir(parents=True, exist_ok=True)
        data = secrets.token_bytes(MIN_SERVER_SECRET)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker created it first: use theirs
            return load_server_secret(p)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return data
    except OSError as e:
        raise ConfigError(f"[server] server_secret_file {p}: {e.strerror or e}") from None
    if len(data) < MIN_SERVER_SECRET:
        raise ConfigError(
            f"[server] server_secret_file {p}: {len(data)} bytes, need at least {MIN_SERVER_SECRET}"
        )
    return data


@dataclass
class Lane:
    """One socket and the responder that answers on it."""

    endpoint: UdpEndpoint
    responder: Responder
    name: str
    wake: trio.Event = field(default_factory=trio.Event)
    commits_done: list[tuple[int, Future[bool]]] = field(default_factory=list)
    lookups: dict[int, float] = field(default_factory=dict)  # token -> time requested
    started: dict[bytes, float] = field(default_factory=dict)  # handle -> message 3 time
    outstanding_commits: int = 0


class ResponderService:
    """The deployed responder: sockets, overload control, store, installer, metrics."""

    def __init__(
        self,
        config: ServeConfig,
        store: Store,
        *,
        server_secret: bytes | None = None,
        installer: Installer | None = None,
        clock: Callable[[], float] = time.time,
        reuse_port: bool = False,
    ) -> None:
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
        self.metrics = ServerMetrics()
        lim = config.limits
        self.sources = SourceLimiter(
            lim.per_source_rate,
            lim.per_source_burst,
            max_sources=lim.max_sources,
            ipv6_prefix=lim.ipv6_prefix,
        )
        self.new_exchanges = (
            TokenBucket(lim.new_exchange_rate, max(1.0, lim.new_exchange_rate / 10), 0.0)
            if lim.new_exchange_rate > 0
            else None
        )
        #: Set to a list to keep every message-3-to-durable-commit latency (benchmarks).
        self.latency_samples: list[float] | None = None
        self.lanes: list[Lane] = []
        self.committer: GroupCommitter | None = None
        self.http_port: int | None = None
        self.draining = False
        self.store_ok = True
        self._last_activity = 0.0
        self._inline_store = store.dialect == "sqlite"
        #: handle -> (when, credential, lifetimes) of recent allowed lookups (message 1's),
        #: reused by message 3 within ``lookup_reuse_seconds``
        self._recent: OrderedDict[bytes, tuple[float, Any, Any]] = OrderedDict()
        self._recent_ttl = config.store.lookup_reuse_seconds
        self._install_limiter = trio.CapacityLimiter(config.install.max_concurrent)
        self._installs_running = 0
        self._nursery: trio.Nursery | None = None
        self._stop = trio.Event()
        self.log = logging.getLogger(logs.LOGGER_NAME)

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def addresses(self) -> list[Addr]:
        return [lane.endpoint.local_addr for lane in self.lanes]

    @property
    def ready(self) -> bool:
        return bool(self.lanes) and not self.draining and self.store_ok

    @property
    def pending(self) -> int:
        return sum(lane.responder.pending for lane in self.lanes)

    async def run(
        self, task_status: trio.TaskStatus[ResponderService] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until :meth:`shutdown` (or cancellation); ``started`` once bound."""
        cfg = self.config.server
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
                self.lanes.append(
                    Lane(ep, Responder(self.responder_config, self.server_secret), name)
                )
        except OSError as e:
            for lane in self.lanes:
                lane.endpoint.close()
            raise ConfigError(f"[server] listen: cannot bind: {e.strerror or e}") from None
        self.committer = GroupCommitter(self.store, max_batch=self.config.store.group_commit_max)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.config.http.listen:
                    health = HealthServer(self.config.http.listen, self._routes())
                    self.http_port = await nursery.start(health.serve)
                recv_scopes = [trio.CancelScope() for _ in self.lanes]
                for lane, scope in zip(self.lanes, recv_scopes, strict=True):
                    nursery.start_soon(self._recv_loop, lane, scope)
                    nursery.start_soon(self._service_loop, lane)
                nursery.start_soon(self._store_probe)
                self.metrics.ready.set(1)
                logs.event(
                    logging.INFO,
                    "serving",
                    listen=[str(a) for a in cfg.listen],
                    bound=[f"{h}:{p}" for h, p in self.addresses],
                    http_port=self.http_port,
                    install=self.config.install.mode,
                )
                task_status.started(self)
                await self._stop.wait()
                await self._drain(recv_scopes)
                nursery.cancel_scope.cancel()
        finally:
            self.metrics.ready.set(0)
            committer, self.committer = self.committer, None
            if committer is not None:
                # shielded: even when cancelled, flush queued accepts and stop the thread
                # (a leaked committer would write through a store its owner has closed)
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(committer.close)
            for lane in self.lanes:
                lane.endpoint.close()
            logs.event(logging.INFO, "stopped", pending=self.pending)

    def shutdown(self) -> None:
        """Begin a graceful stop (idempotent, callable from a signal handler task)."""
        if not self.draining:
            self.draining = True
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
                    or any(lane.outstanding_commits for lane in self.lanes)
                )
                if quiet and not busy:
                    break
                await trio.sleep(0.02)
        for rs in recv_scopes:
            rs.cancel()
        if scope.cancelled_caught:
            logs.event(logging.WARNING, "drain_timeout", pending=self.pending, grace_s=grace)

    # -- the hot path ----------------------------------------------------------------------
    def _admit(self, data: bytes, host: str, now: float) -> str | None:
        """None if the core should see ``data``; otherwise the drop reason.

        Raw offsets of the RFC 7296 header rather than a parsed object: this runs for every
        datagram of a flood.  The core re-validates everything it reads.
        """
        if len(data) < HEADER_LEN:
            return "malformed"
        # RFC 7296 3.1: SPIs 0-15, next payload 16, version 17, exchange type 18, flags 19
        if data[17] >> 4 != 2 or data[18] != EXCHANGE_IKE_RESUME:
            return "not_resumption"
        flags = data[19]
        if flags & FLAG_RESPONSE or not flags & FLAG_INITIATOR:
            return "response_at_responder"
        mid = int.from_bytes(data[20:24], "big")
        if mid > 1:
            return "bad_message_id"
        if not self.sources.allow(host, now):
            return "rate_limited_source"
        if mid == 0:
            if self.draining:
                return "draining"
            if self.new_exchanges is not None and not self.new_exchanges.take(now):
                return "rate_limited_new"
            if self.pending >= self.config.limits.max_pending // 2:
                return "overload_new"
        elif self.pending >= self.config.limits.max_pending:
            return "overload"
        return None

    async def _recv_loop(self, lane: Lane, scope: trio.CancelScope) -> None:
        ep, resp, m = lane.endpoint, lane.responder, self.metrics
        batch_n = self.config.server.recv_batch
        received, drops = m.datagrams, m.drops
        with scope:
            while True:
                batch = await ep.recv_batch(batch_n)
                now = self.clock()
                self._last_activity = now
                received.inc(lane.name, amount=len(batch))
                for data, addr in batch:
                    reason = self._admit(data, addr[0], now)
                    if reason is not None:
                        drops.inc(reason)
                        continue
                    resp.receive_datagram(data, addr, now)
                self._pump(lane, now)
                await self._flush(lane)
                # one scheduler trip per batch (not per datagram) so other tasks run
                await trio.lowlevel.checkpoint()

    async def _service_loop(self, lane: Lane) -> None:
        """Finished commits, expired requests and timers for one lane."""
        resp = lane.responder
        while True:
            deadline = resp.get_timer()
            timeout = math.inf if deadline is None else max(0.0, deadline - self.clock())
            with trio.move_on_after(min(timeout, 1.0)):
                await lane.wake.wait()
            lane.wake = trio.Event()
            now = self.clock()
            done, lane.commits_done = lane.commits_done, []
            for token, fut in done:
                lane.outstanding_commits -= 1
                self._commit_finished(lane, token, fut, now)
            deadline = resp.get_timer()
            if deadline is not None and deadline <= now:
                resp.handle_timer(now)
            self._pump(lane, now)
            await self._flush(lane)

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
        while (ev := resp.next_event()) is not None:
            if isinstance(ev, CredentialNeeded):
                hit = self._recent.get(ev.handle)
                if hit is not None and now - hit[0] < self._recent_ttl:
                    # message 3 right after message 1's lookup: the durable compare-and-set
                    # on (handle, generation) still decides, so a revoked or concurrently
                    # ratcheted record can never complete from this copy
                    self.metrics.cache.inc("hit_recent")
                    lane.started[ev.handle] = now
                    lane.responder.provide_credential(ev.token, hit[1], hit[2], now)
                elif self._inline_store:
                    self._answer_lookup(lane, ev, now)
                else:
                    self._spawn(self._lookup_in_thread, lane, ev)
            elif isinstance(ev, CommitNeeded):
                self._submit_commit(lane, ev, now)
            elif isinstance(ev, ResumptionComplete):
                self._completed(lane, ev, now)
            elif isinstance(ev, ResumptionFailed):
                self._recent.pop(ev.handle or b"", None)
                self.metrics.exchanges.inc(ev.reason)
                lane.started.pop(ev.handle or b"", None)
        self._update_gauges()

    def _answer_lookup(self, lane: Lane, ev: CredentialNeeded, now: float) -> None:
        try:
            res = self.store.lookup(ev.handle, now)
        except StoreError as e:
            self._store_failed("lookup", e)
            self.metrics.cache.inc("error")
            lane.responder.provide_credential(ev.token, None, None, now)
            return
        self._provide(lane, ev, res, now)

    def _provide(self, lane: Lane, ev: CredentialNeeded, res: Any, now: float) -> None:
        if res is None:
            self.metrics.cache.inc("miss")
            lane.responder.provide_credential(ev.token, None, None, now)
        elif not res.allowed:
            self.metrics.cache.inc("refused")
            lane.responder.provide_credential(ev.token, None, None, now)
        else:
            self.metrics.cache.inc("hit")
            # the last lookup of a handle before completion is message 3's
            if len(lane.started) > 65536:
                lane.started.clear()
            lane.started[ev.handle] = now
            if self._recent_ttl > 0:
                if len(self._recent) >= 65536:
                    self._recent.popitem(last=False)
                self._recent[ev.handle] = (now, res.credential, res.lifetimes)
            lane.responder.provide_credential(ev.token, res.credential, res.lifetimes, now)

    async def _lookup_in_thread(self, lane: Lane, ev: CredentialNeeded) -> None:
        now = self.clock()
        self.metrics.queue_depth.inc("lookup")
        try:
            res = await trio.to_thread.run_sync(self.store.lookup, ev.handle, now)
        except StoreError as e:
            self._store_failed("lookup", e)
            self.metrics.cache.inc("error")
            res = None
            lane.responder.provide_credential(ev.token, None, None, self.clock())
        else:
            self._provide(lane, ev, res, self.clock())
        finally:
            self.metrics.queue_depth.inc("lookup", amount=-1)
        self._pump(lane, self.clock())
        await self._flush(lane)

    def _submit_commit(self, lane: Lane, ev: CommitNeeded, now: float) -> None:
        committer = self.committer
        if committer is None:
            lane.responder.commit_result(ev.token, False, now)
            return
        try:
            fut = committer.submit(ev.handle, ev.generation, ev.successor, now)
        except (StoreError, ValueError) as e:
            self._store_failed("commit", e)
            self.metrics.commits.inc("error")
            lane.responder.commit_result(ev.token, False, now)
            return
        lane.outstanding_commits += 1
        token = trio.lowlevel.current_trio_token()

        def done(f: Future[bool], lane: Lane = lane, tok: int = ev.token) -> None:
            lane.commits_done.append((tok, f))
            lane.wake.set()

        fut.add_done_callback(lambda f: _run_soon(token, lambda: done(f)))

    def _commit_finished(self, lane: Lane, token: int, fut: Future[bool], now: float) -> None:
        try:
            ok = fut.result()
        except Exception as e:
            self._store_failed("commit", e)
            self.metrics.commits.inc("error")
            ok = False
        else:
            self.metrics.commits.inc("ok" if ok else "conflict")
        if self.committer is not None:
            self.metrics.commit_batches.values[()] = self.committer.stats.transactions
        lane.responder.commit_result(token, ok, now)

    def _completed(self, lane: Lane, ev: ResumptionComplete, now: float) -> None:
        self._recent.pop(ev.handle, None)
        self.metrics.exchanges.inc("resumed")
        t0 = lane.started.pop(ev.handle, None)
        if t0 is not None:
            self.metrics.latency.observe(max(0.0, now - t0))
            if self.latency_samples is not None:
                self.latency_samples.append(now - t0)
        if not isinstance(self.installer, NoInstaller):
            self._spawn(self._install, ev)

    async def _install(self, ev: ResumptionComplete) -> None:
        self._installs_running += 1
        self.metrics.queue_depth.inc("install")
        try:
            async with self._install_limiter:
                await self.installer.install(ev.sa)
            self.metrics.installs.inc("ok")
        except InstallError as e:
            self.metrics.installs.inc("failed")
            logs.event(logging.WARNING, "install_failed", peer=ev.addr[0], error=str(e))
        finally:
            self._installs_running -= 1
            self.metrics.queue_depth.inc("install", amount=-1)

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    # -- store health ------------------------------------------------------------------------
    def _store_failed(self, op: str, e: BaseException) -> None:
        if self.store_ok:
            logs.event(logging.ERROR, "store_failed", op=op, error=str(e))
        self.store_ok = False

    async def _store_probe(self) -> None:
        """Re-check the store every few seconds so readiness recovers after an outage.

        The probe is a real lookup (of a handle no credential has), so it fails exactly
        when resumptions would: unreachable database, missing table, wrong schema.
        """
        probe_handle = b"\x00" * 16

        while True:
            try:
                await trio.to_thread.run_sync(self.store.lookup, probe_handle, self.clock())
                if not self.store_ok:
                    logs.event(logging.INFO, "store_recovered")
                self.store_ok = True
            except StoreError as e:
                self._store_failed("probe", e)
            await trio.sleep(2.0)

    # -- metrics and HTTP ------------------------------------------------------------------
    def _update_gauges(self) -> None:
        m = self.metrics
        m.queue_depth.set(self.pending, "pending")
        m.queue_depth.set(sum(lane.outstanding_commits for lane in self.lanes), "commit")

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
            m.commit_batches.values[()] = self.committer.stats.transactions
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


def _run_soon(token: trio.lowlevel.TrioToken, fn: Callable[[], None]) -> None:
    with contextlib.suppress(trio.RunFinishedError):
        token.run_sync_soon(fn)
