"""``ikeresume serve`` on the native engine: the Rust service core behind the same service.

Why a subclass of :class:`~resume.net.server.ResponderService`: everything an operator sees
stays one implementation -- the configuration, ``/metrics`` (same names), ``/healthz``,
``/readyz``, the drain on SIGTERM, the installer and its hooks -- while the per-datagram
path (sockets, admission, the protocol, the SQLite store's lookups and group commit, timers)
runs in ``resume._native.NativeServer`` on threads of its own (``native/src/server/``), with
no Python object touched per datagram and the GIL never held by them.

What reaches Python, in batches (:meth:`NativeResponderService._events_loop` drains the
native queue in a worker thread, the GIL released while it waits):

* durable commits, when the service installs SAs or runs hooks (``[install] mode`` other
  than ``none``): the Rust group committer inserts each accept's SA pair into the install
  outbox in the transaction of its compare-and-set (spec 6.2.1, the columns and wrapping of
  :mod:`store.outbox`) and hands the pair over once durable; it goes to the parent's
  ``_install``, and the row is deleted (by a later Rust transaction) once the install
  attempt finished.  The parent's start-up replay of the outbox runs before the native
  threads start;
* store health changes (logged as the Python service logs them);
* with an external store -- PostgreSQL, or any store with ``inline_lookups=False`` -- the
  lookups and accepts themselves: :class:`ExternalStore` answers lookups through the Python
  store in one worker-thread hop per batch and accepts through its
  :class:`~store.committer.GroupCommitter` (with the SA pair's outbox row when the service
  installs); the native core completes a resumption only once its answer says the commit
  is durable.

Counters live in Rust as atomics; :attr:`NativeResponderService.metrics` copies them into
the :class:`~resume.net.metrics.ServerMetrics` each time it is read, so tests and
``/metrics`` see current values.  The policy the Rust store enforces is the store's at
start-up.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import trio

from resume.events import Address
from resume.net import logs
from resume.net.config import ConfigError, ServeConfig, affinity_warning
from resume.net.gctune import SERVE_GC_THRESHOLD, serving_gc
from resume.net.health import HealthServer
from resume.net.hooks import Installer
from resume.net.metrics import ServerMetrics
from resume.net.server import DRAIN_QUIET_S, ResponderService
from resume.net.udp import norm_addr
from resume.net.udpwire import try_bypass_ipsec
from resume.responder import ResponderConfig
from resume.sa import DirectionKeys, Lifetimes, SAPair
from store.committer import CommitterStats, GroupCommitter
from store.errors import CorruptRecord, MasterKeyError, StoreError
from store.outbox import InstallIntent
from store.repository import LookupResult, Store

__all__ = [
    "ExternalStore",
    "NativeResponderService",
    "native_engine_problem",
    "native_sqlite_store",
]

#: how long the event pump waits for the native queue per call (bounds shutdown latency)
_WAIT_S = 0.25
#: the Rust store's checkpoint and probe intervals (those of store.committer/storelink)
_CHECKPOINT_S = 0.25
_PROBE_S = 2.0
_POLICY_FIELDS = ("clocked", "established", "data", "max_chain_age", "idle", "max_resumptions")


def _native_module() -> Any:
    from resume import native  # the adapter registers the error types on import

    if not native.available():
        return None
    from resume import _native

    return _native if hasattr(_native, "NativeServer") else None


def native_engine_problem(
    config: ServeConfig,
    rcfg: ResponderConfig,
    *,
    clock: Callable[[], float] = time.time,
) -> str | None:
    """Why the native engine cannot serve this configuration (None: it can)."""
    if _native_module() is None:
        from resume.native import NATIVE_IMPORT_ERROR

        return f"the native core is not built ({NATIVE_IMPORT_ERROR or 'no NativeServer'})"
    if rcfg.allow_paper_mode:
        return "paper mode runs on the Python core only"
    if clock is not time.time:
        return "a custom clock (the native core reads the system clock)"
    return None


def _policy_limits(store: Store) -> dict[str, int | float | None]:
    return {f: getattr(store.policy, f) for f in _POLICY_FIELDS}


def native_sqlite_store(store: Store, policy: Any = None) -> Any:
    """The Rust SQLite store (``resume._native.NativeSqliteStore``) on ``store``'s file,
    keys and policy (``policy`` overrides it): lookups and group commits without a service
    (the contract tests and the race test's native worker use it)."""
    mod = _native_module()
    args = store.sqlite_file()
    if mod is None or args is None or store.keyring is None:
        raise ConfigError("the native SQLite store needs the extension, a SQLite file and keys")
    path, sync, busy = args
    pol = store.policy if policy is None else policy
    limits = {f: getattr(pol, f) for f in _POLICY_FIELDS}
    return mod.NativeSqliteStore(
        path, store.keyring.material(), limits, synchronous=sync, busy_timeout=busy
    )


def _store_error_kind(e: BaseException) -> str:
    if isinstance(e, CorruptRecord):
        return "corrupt"
    if isinstance(e, MasterKeyError):
        return "key"
    return "unavailable"


class _LaneCore:
    """``lane.responder`` for a native lane: its engine's counters and pending requests."""

    def __init__(self, service: NativeResponderService, index: int) -> None:
        self._service = service
        self._index = index

    @property
    def stats(self) -> collections.Counter[str]:
        lane = self._service._lane_snapshot(self._index)
        return collections.Counter(lane.get("engine", {}))

    @property
    def pending(self) -> int:
        return int(self._service._lane_snapshot(self._index).get("pending", 0))

    def describe(self) -> dict[str, Any]:
        """``Responder.describe()``: counters and table sizes (no secrets)."""
        lane = self._service._fresh_snapshot().get("lanes", [])
        snap = lane[self._index] if self._index < len(lane) else {}
        return {
            "stats": dict(snap.get("engine", {})),
            "pending": int(snap.get("pending", 0)),
            "response_cache": int(snap.get("response_cache", 0)),
            "half_open": 0,
            "mlkem_runs": int(snap.get("mlkem_runs", 0)),
        }


class _Endpoint:
    """``lane.endpoint`` for a native lane: a duplicate of the Rust socket (socket options,
    its name; closed when the service stops) and the socket layer's drop counters."""

    def __init__(self, service: NativeResponderService, index: int, sock: socket.socket) -> None:
        self._service = service
        self._index = index
        self.sock = sock

    @property
    def local_addr(self) -> Address:
        return norm_addr(self.sock.getsockname())

    @property
    def drops(self) -> dict[str, int]:
        udp = self._service._lane_snapshot(self._index).get("udp", {})
        return {k: int(v) for k, v in udp.items() if k not in ("received", "sent")}

    def close(self) -> None:
        self.sock.close()


class _Lane:
    def __init__(self, name: str, endpoint: _Endpoint, responder: _LaneCore) -> None:
        self.name = name
        self.endpoint = endpoint
        self.responder = responder


def _sa_pair(i2r: Any, r2i: Any, lt: Any, succ: Any) -> SAPair:
    """The responder's SA pair from the native tuples (the successor carries the params)."""
    from resume.native import python_credential

    params = python_credential(succ).params
    return SAPair("responder", params, DirectionKeys(*i2r), DirectionKeys(*r2i), Lifetimes(*lt))


class _Forgetting:
    """Install-outbox rows whose install attempt finished, handed over for deletion in
    batches (:meth:`forget_loop`; ``storelink.StoreLink`` does the same on the Python
    engine): each hand-over rides on the committer's next transaction."""

    def __init__(self) -> None:
        self._forget: list[str] = []

    def forget_install(self, uid: str) -> None:
        self._forget.append(uid)

    def flush_forgotten(self) -> None:
        uids, self._forget = self._forget, []
        if uids:
            # on failure the rows stay: re-installed (idempotently) at the next start-up
            with contextlib.suppress(StoreError):
                self._hand_over(uids)

    def _hand_over(self, uids: list[str]) -> None:
        raise NotImplementedError

    async def forget_loop(self, interval: float = 0.25) -> None:
        while True:
            await trio.sleep(interval)
            self.flush_forgotten()


class _InlineLink(_Forgetting):
    """``service.link`` on the Rust store: lookups are answered inline on the lanes;
    outbox deletions go to the Rust group committer."""

    inline = True

    def __init__(self, service: NativeResponderService) -> None:
        super().__init__()
        self.service = service

    def _hand_over(self, uids: list[str]) -> None:
        if self.service.native is not None:
            self.service.native.forget_installs(uids)


class ExternalStore(_Forgetting):
    """Lookups and accepts of a native service answered by the Python store, in batches
    (PostgreSQL; or SQLite with ``inline_lookups=False``).

    Lookups: every request the native queue delivered meanwhile goes to the store in ONE
    worker-thread hop.  Accepts: the store's :class:`GroupCommitter` (many accepts, one
    transaction); its future's callback answers the native core from the committer thread
    once the transaction is durable.  A probe keeps the readiness flag honest.
    """

    inline = False

    def __init__(self, service: NativeResponderService, group_commit_max: int) -> None:
        super().__init__()
        self.service = service
        self.store = service.store
        self.group_commit_max = group_commit_max
        self.committer: GroupCommitter | None = None
        self.ok = True
        self._lookups: list[tuple[int, int, bytes, float]] = []
        self._ready = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None

    def open(self) -> None:
        """In the service's trio run (durable commits are handed back to it)."""
        self._token = trio.lowlevel.current_trio_token()
        self.committer = GroupCommitter(self.store, max_batch=self.group_commit_max)

    def _hand_over(self, uids: list[str]) -> None:
        if self.committer is not None:
            self.committer.forget(uids)

    async def close(self) -> None:
        self.flush_forgotten()
        committer, self.committer = self.committer, None
        if committer is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(committer.close)

    @property
    def busy(self) -> bool:
        return bool(self._lookups)

    @property
    def transactions(self) -> int:
        return self.committer.stats.transactions if self.committer is not None else 0

    # -- lookups ---------------------------------------------------------------------------
    def queue_lookup(self, lane: int, token: int, handle: bytes, now: float) -> None:
        self._lookups.append((lane, token, handle, now))
        self._ready.set()

    async def lookup_loop(self) -> None:
        from resume.native import native_credential

        native = self.service.native
        while True:
            await self._ready.wait()
            self._ready = trio.Event()
            batch, self._lookups = self._lookups, []
            if not batch:
                continue
            results = await trio.to_thread.run_sync(self._lookup_many, batch)
            answers: list[tuple[int, int, str, Any, Any, str]] = []
            for (lane, token, _h, _now), res in zip(batch, results, strict=True):
                if isinstance(res, BaseException):
                    self.failed("lookup", res)
                    answers.append((lane, token, _store_error_kind(res), None, None, str(res)))
                elif res is None:
                    answers.append((lane, token, "miss", None, None, ""))
                elif not res.allowed or res.credential is None:
                    answers.append((lane, token, "refused", None, None, ""))
                else:
                    lt = res.lifetimes
                    lt_t = None if lt is None else (
                        lt.soft_seconds, lt.hard_seconds, lt.soft_bytes, lt.hard_bytes,
                        lt.soft_packets, lt.hard_packets,
                    )  # fmt: skip
                    cred = native_credential(res.credential)
                    answers.append((lane, token, "found", cred, lt_t, ""))
            if native is not None:
                native.answer_lookups(answers)

    def _lookup_many(
        self, batch: list[tuple[int, int, bytes, float]]
    ) -> list[LookupResult | StoreError | None]:
        out: list[LookupResult | StoreError | None] = []
        for _lane, _token, handle, now in batch:
            try:
                out.append(self.store.lookup(handle, now))
            except StoreError as e:
                out.append(e)
        return out

    # -- accepts ---------------------------------------------------------------------------
    def commit(self, lane: int, token: int, handle: bytes, generation: int, succ: Any,
               now: float, sa: Any = None) -> None:  # fmt: skip
        """``sa``: (i_to_r, r_to_i, lifetimes) when the service installs -- its outbox row
        commits with the compare-and-set and, once durable, the pair goes to the
        installer (from the committer thread through the trio token)."""
        from resume.native import python_credential

        native = self.service.native
        committer = self.committer
        if committer is None or native is None:
            if native is not None:
                native.answer_commits([(lane, token, None, "store closed")])
            return
        node = self.service.install_node
        intent = None
        if sa is not None:
            i2r, r2i, lt = sa
            intent = InstallIntent.new(node, _sa_pair(i2r, r2i, lt, succ))
        try:
            fut = committer.submit(handle, generation, python_credential(succ), now, intent)
        except (StoreError, ValueError) as e:
            self.failed("commit", e)
            native.answer_commits([(lane, token, None, str(e))])
            return

        def done(f: Any) -> None:
            try:
                ok: bool | None = bool(f.result())
                msg = ""
            except Exception as e:  # StoreError: the transaction did not commit
                ok, msg = None, str(e)
                self.failed("commit", e)
            if ok and intent is not None and self._token is not None:
                with contextlib.suppress(trio.RunFinishedError):
                    self._token.run_sync_soon(self.service._committed, intent)
            native.answer_commits([(lane, token, ok, msg)])

        fut.add_done_callback(done)

    # -- health ----------------------------------------------------------------------------
    def failed(self, op: str, e: BaseException) -> None:
        if self.ok:
            logs.event(logging.ERROR, "store_failed", op=op, error=str(e))
        self.ok = False
        if self.service.native is not None:
            self.service.native.set_store_ok(False)

    async def probe_loop(self, interval: float = _PROBE_S) -> None:
        probe = b"\x00" * 16  # no credential has it
        while True:
            try:
                await trio.to_thread.run_sync(self.store.lookup, probe, time.time())
                if not self.ok:
                    logs.event(logging.INFO, "store_recovered")
                self.ok = True
                if self.service.native is not None:
                    self.service.native.set_store_ok(True)
            except StoreError as e:
                self.failed("probe", e)
            await trio.sleep(interval)


class _NativeCommitter:
    """``service.committer`` while the Rust group committer runs (None once stopped)."""

    def __init__(self, service: NativeResponderService) -> None:
        self._service = service

    @property
    def transactions(self) -> int:
        return int(self._service._snapshot().get("commit_batches", 0))

    @property
    def stats(self) -> CommitterStats:
        """The counters :class:`~store.committer.GroupCommitter` keeps that the Rust
        committer keeps too (the others stay 0)."""
        snap = self._service._fresh_snapshot()
        commits = snap.get("commits", {})
        return CommitterStats(
            transactions=int(snap.get("commit_batches", 0)),
            won=int(commits.get("ok", 0)),
            forgotten=int(snap.get("forgotten", 0)),
        )


class NativeResponderService(ResponderService):
    """The responder service with the native engine (see the module docstring).

    :func:`resume.net.service.make_service` makes it when ``[server] engine`` picks it; the
    constructor takes the parent's arguments.
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
        self.native: Any = None
        self._samples: list[float] | None = None
        self._snap: dict[str, Any] = {}
        self._snap_at = -1.0
        super().__init__(
            config,
            store,
            server_secret=server_secret,
            installer=installer,
            clock=clock,
            reuse_port=reuse_port,
            inline_lookups=inline_lookups,
            gc_threshold=gc_threshold,
        )
        self.engine = "native"
        #: the Rust store (an embedded SQLite file, looked up inline) or the Python store's
        self.external = (
            not store.embedded or inline_lookups is False or store.sqlite_file() is None
        )
        self.bridge: ExternalStore | None = (
            ExternalStore(self, config.store.group_commit_max) if self.external else None
        )
        self._inline_link = _InlineLink(self)
        self._draining = False
        self._stopped = False
        self.closed = False

    # -- state -----------------------------------------------------------------------------
    @property
    def metrics(self) -> ServerMetrics:
        """The service's metrics, with the native counters copied in as of now."""
        self._refresh()
        return self._metrics

    @metrics.setter
    def metrics(self, m: ServerMetrics) -> None:
        self._metrics = m

    @property
    def latency_samples(self) -> list[float] | None:
        if self._samples is not None and self.native is not None:
            self._samples.extend(self.native.take_latency_samples())
        return self._samples

    @latency_samples.setter
    def latency_samples(self, v: list[float] | None) -> None:
        self._samples = v
        if self.native is not None:
            self.native.set_latency_sampling(v is not None)

    @property
    def link(self) -> Any:
        """The store side: the external bridge, or the Rust store (``inline``)."""
        return self.bridge if self.bridge is not None else self._inline_link

    @link.setter
    def link(self, _v: Any) -> None:
        pass  # the parent's StoreLink is not used on this engine

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def store_ok(self) -> bool:
        if self.native is None:
            return True
        return bool(self.native.store_ok)

    @property
    def ready(self) -> bool:
        n = self.native
        return (
            n is not None and bool(self.lanes) and not self._draining and not self._stopped
            and n.failure is None and bool(n.store_ok)
        )  # fmt: skip

    @property
    def committer(self) -> Any:
        if self._stopped or self.native is None:
            return None
        if self.bridge is not None:
            return self.bridge.committer
        return _NativeCommitter(self)

    @property
    def pending(self) -> int:
        return 0 if self.native is None else int(self.native.pending)

    def _snapshot(self) -> dict[str, Any]:
        if self.native is None:
            return self._snap
        now = time.monotonic()
        if now - self._snap_at > 0.0005:  # one copy per burst of reads
            self._snap = self.native.metrics()
            self._snap_at = now
        return self._snap

    def _fresh_snapshot(self) -> dict[str, Any]:
        self._snap_at = -1.0
        return self._snapshot()

    def _lane_snapshot(self, index: int) -> dict[str, Any]:
        lanes = self._snapshot().get("lanes", [])
        return lanes[index] if index < len(lanes) else {}

    def _refresh(self) -> None:
        m = getattr(self, "_metrics", None)
        if m is None or self.native is None:
            return
        s = self._fresh_snapshot()  # what a reader of the metrics sees is never stale
        for k, v in s["drops"].items():
            m.drops.values[(k,)] = v
        for k, v in s["exchanges"].items():
            m.exchanges.values[(k,)] = v
        for k, v in s["cache"].items():
            m.cache.values[(k,)] = v
        for k, v in s["commits"].items():
            m.commits.values[(k,)] = v
        for ke, lineage, v in s["resumptions"]:
            m.resumptions.values[(ke, lineage)] = v
        m.commit_batches.values[()] = (
            self.bridge.transactions if self.bridge is not None else s["commit_batches"]
        )
        _bounds, counts, total = s["latency"]
        m.latency.counts = list(counts)
        m.latency.count = sum(counts)
        m.latency.sum = total
        sent = 0
        core: dict[str, int] = {}
        for lane in s["lanes"]:
            m.datagrams.values[(lane["name"],)] = lane["received"]
            sent += lane["udp"].get("sent", 0)
            for k, v in lane["udp"].items():
                if k not in ("received", "sent"):
                    m.drops.values[(f"socket_{k}",)] = v
            for k, v in lane["engine"].items():
                core[k] = core.get(k, 0) + v
        m.sent.values[()] = sent
        for k, v in core.items():
            m.core.set(v, k)
        m.queue_depth.set(sum(lane["pending"] for lane in s["lanes"]), "pending")
        m.queue_depth.set(s["outstanding_commits"], "commit")
        m.queue_depth.set(s["outstanding_lookups"], "lookup")

    # -- lifecycle -------------------------------------------------------------------------
    def _bind(self) -> None:
        mod = _native_module()
        cfg = self.config.server
        rc = self.responder_config
        lim = self.config.limits
        sqlite = None
        if not self.external:
            path_sync_busy = self.store.sqlite_file()
            if path_sync_busy is None or self.store.keyring is None:
                raise ConfigError("[store] the native engine's SQLite store needs a file and keys")
            path, sync, busy = path_sync_busy
            sqlite = {
                "path": path,
                "synchronous": sync,
                "busy_timeout": busy,
                "keys": self.store.keyring.material(),
                "policy": _policy_limits(self.store),
                "group_commit_max": self.config.store.group_commit_max,
                "checkpoint_interval": _CHECKPOINT_S,
                "probe_interval": _PROBE_S,
            }
        try:
            self.native = mod.NativeServer(
                [(a.host, a.port) for a in cfg.listen],
                self.server_secret,
                natt=cfg.natt_framing,
                reuse_port=self.reuse_port,
                buffer_bytes=cfg.socket_buffer,
                recv_batch=cfg.recv_batch,
                allow_x25519=rc.allow_x25519,
                require_x25519=rc.require_x25519,
                allow_mlkem=rc.allow_mlkem,
                require_mlkem=rc.require_mlkem,
                require_pq_lineage=rc.require_pq_lineage,
                mlkem_runs_per_tick=rc.mlkem_runs_per_tick,
                mlkem_runs_per_handle=rc.mlkem_runs_per_handle,
                cookie_tick_seconds=rc.cookie_tick_seconds,
                response_cache_size=rc.response_cache_size,
                max_pending=rc.max_pending,
                lookup_timeout=rc.lookup_timeout,
                completed_cache_size=rc.completed_cache_size,
                credential_cache_size=rc.credential_cache_size,
                per_source_rate=lim.per_source_rate,
                per_source_burst=lim.per_source_burst,
                ipv6_prefix=lim.ipv6_prefix,
                max_sources=lim.max_sources,
                new_exchange_rate=lim.new_exchange_rate,
                limits_max_pending=lim.max_pending,
                miss_reuse_seconds=self.config.store.miss_reuse_seconds,
                sqlite=sqlite,
                install_node=self.install_node if self._install_enabled else None,
            )
        except OSError as e:
            raise ConfigError(f"[server] listen: {e}") from None
        if self._samples is not None:
            self.native.set_latency_sampling(True)
        names = self.native.lane_names()
        for i, fd in enumerate(self.native.filenos()):
            sock = socket.socket(fileno=os.dup(fd))
            if cfg.ipsec_bypass and (why := try_bypass_ipsec(sock)) is not None:
                level = logging.WARNING if self.config.install.mode == "xfrm" else logging.DEBUG
                logs.event(level, "ipsec_bypass_unavailable", listen=names[i], error=why)
            self.lanes.append(_Lane(names[i], _Endpoint(self, i, sock), _LaneCore(self, i)))  # type: ignore[arg-type]

    async def run(
        self, task_status: trio.TaskStatus[ResponderService] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until :meth:`shutdown` (or cancellation); ``started`` once bound."""
        self._bind()
        if self.bridge is not None:
            self.bridge.open()
        try:
            with serving_gc(self.gc_threshold):
                await self._serve(task_status)
        finally:
            self._metrics.ready.set(0)
            with trio.CancelScope(shield=True):
                await self._stop_native()
                if self.bridge is not None:
                    await self.bridge.close()
            self._stopped = True
            for lane in self.lanes:
                lane.endpoint.close()
            self.closed = True
            logs.event(logging.INFO, "stopped", pending=self.pending, engine="native")

    async def _stop_native(self) -> None:
        native = self.native
        if native is None:
            return
        if self.bridge is None:
            self._inline_link.flush_forgotten()  # the committer deletes them as it stops
        await trio.to_thread.run_sync(native.stop)
        self._snap_at = -1.0
        self._snapshot()  # the final counters stay readable
        failure = native.failure
        if failure is not None:
            logs.event(logging.ERROR, "native_failure", error=failure)

    async def _serve(self, task_status: trio.TaskStatus[ResponderService]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.config.http.listen:
                health = HealthServer(self.config.http.listen, self._routes())
                self.http_port = await nursery.start(health.serve)
            await self._replay_outbox()  # before serving: /readyz says "starting" meanwhile
            await trio.to_thread.run_sync(self.native.start)
            nursery.start_soon(self._events_loop)
            nursery.start_soon(self.link.forget_loop)
            nursery.start_soon(self._lineage_loop)
            if self.bridge is not None:
                nursery.start_soon(self.bridge.lookup_loop)
                nursery.start_soon(self.bridge.probe_loop)
            self._metrics.ready.set(1)
            logs.event(
                logging.INFO,
                "serving",
                listen=[str(a) for a in self.config.server.listen],
                bound=[f"{h}:{p}" for h, p in self.addresses],
                http_port=self.http_port,
                install=self.config.install.mode,
                engine="native",
                store="python" if self.external else "native",
            )
            warning = affinity_warning(self.config, self.responder_config)
            if warning:
                logs.event(logging.WARNING, "message3_affinity_unstated", detail=warning)
            task_status.started(self)
            await self._stop.wait()
            await self._drain([])
            nursery.cancel_scope.cancel()

    @property
    def addresses(self) -> list[Address]:
        return [lane.endpoint.local_addr for lane in self.lanes]

    def shutdown(self) -> None:
        """Begin a graceful stop (idempotent, callable from a signal handler task)."""
        if not self._draining:
            self._draining = True
            if self.native is not None:
                self.native.drain()
            self._metrics.ready.set(0)
            logs.event(logging.INFO, "draining", pending=self.pending)
        self._stop.set()

    async def _drain(self, recv_scopes: list[trio.CancelScope]) -> None:
        grace = self.config.server.shutdown_grace
        native = self.native
        with trio.move_on_after(grace) as scope:
            while native is not None and native.failure is None:
                quiet = native.idle_seconds() >= DRAIN_QUIET_S
                busy = (
                    native.pending
                    or native.outstanding
                    or self._installs_running
                    or (self.bridge is not None and self.bridge.busy)
                )
                if quiet and not busy:
                    break
                await trio.sleep(0.02)
        if scope.cancelled_caught:
            logs.event(logging.WARNING, "drain_timeout", pending=self.pending, grace_s=grace)

    # -- what the native core hands over ---------------------------------------------------
    async def _events_loop(self) -> None:
        """Drain the native queue in batches (the wait runs in a worker thread, GIL
        released); completions go to the installer, store requests to the bridge."""
        native = self.native
        while True:
            items = await trio.to_thread.run_sync(native.wait_events, _WAIT_S)
            if native.failure is not None:
                logs.event(logging.ERROR, "native_failure", error=native.failure)
                self._stop.set()
                return
            for item in items:
                self._handle(item)

    def _handle(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        if kind == "committed":
            # (uid, handle, generation, successor, addr, i_to_r, r_to_i, lifetimes): the
            # commit with its outbox row is durable -- install the pair
            _k, uid, _h, _g, succ, _addr, i2r, r2i, lt = item
            self._committed(InstallIntent(uid, self.install_node, _sa_pair(i2r, r2i, lt, succ)))
        elif kind == "lookup" and self.bridge is not None:
            _k, lane, token, handle, now = item
            self.bridge.queue_lookup(lane, token, handle, now)
        elif kind == "commit" and self.bridge is not None:
            _k, lane, token, handle, generation, succ, now, sa = item
            self.bridge.commit(lane, token, handle, generation, succ, now, sa)
        elif kind == "store_failed":
            logs.event(logging.ERROR, "store_failed", op=item[1], error=item[2])
        elif kind == "store_recovered":
            logs.event(logging.INFO, "store_recovered")

    # -- metrics and HTTP ------------------------------------------------------------------
    def _update_gauges(self) -> None:
        self._refresh()

    def render_metrics(self) -> str:
        return self.metrics.render()
