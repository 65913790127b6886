"""The store side of the service: answering the core's ``CredentialNeeded`` and ``CommitNeeded``.

* Lookups run inline on SQLite (a local indexed read is cheaper than a thread hop) and,
  elsewhere (PostgreSQL), in ONE worker-thread hop per batch: a per-lane lookup task takes
  every request queued meanwhile, so a burst of message 1s costs one hop, not one each.
* One lookup per resumption: message 3 reuses the credential message 1 was answered with
  inside the protocol core (``[protocol] credential_cache_size``, on by default in the
  service), so it never reaches this class.  The durable commit decides, not that copy.
* Commits go to the store's :class:`~store.committer.GroupCommitter`; completions come back
  through the lane's inbox (one event-loop wake-up per durable transaction, not per accept),
  and the core hears ``commit_result`` only once its row is durable.
* A handle the store did not know is answered "unknown" from memory for
  ``miss_reuse_seconds``: a flood of replayed or forged message 1s costs no database read
  after the first, and each still gets its NACK (spec 6.2 step 6), so a peer that really
  holds that handle falls back to a full IKE at once.  The memory can only refuse.
* Any ``StoreError`` answers ``None`` / ``False``: the peer gets the NACK an unknown handle
  gets and falls back to a full IKE (fail closed); readiness drops until a probe succeeds.
* Install outbox (spec 6.2.1): when the service installs SAs, each commit carries its SA
  pair (:class:`~store.outbox.InstallIntent`) into the same transaction, and a durable
  commit hands the intent to the service's installer -- from the commit's result, not from
  the core's completion, so an exchange whose slot expired while its commit was in flight
  is installed too.  Installed rows are deleted in batches riding on later commits.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future

import trio

from resume.events import CommitNeeded, CredentialNeeded
from resume.net import logs
from resume.net.lane import Lane
from resume.net.metrics import ServerMetrics
from store.committer import GroupCommitter
from store.errors import StoreError
from store.outbox import InstallIntent
from store.repository import LookupResult, Store

#: bound on the per-lane latency bookkeeping and on the remembered misses
MAX_TRACKED = 65536
_PROBE_HANDLE = b"\x00" * 16  # no credential has it


class StoreLink:
    """Lookups, commits and store health for every lane of one service."""

    def __init__(
        self,
        store: Store,
        metrics: ServerMetrics,
        *,
        group_commit_max: int,
        miss_seconds: float = 0.0,
        inline_lookups: bool | None = None,
        install_node: str | None = None,
        on_committed: Callable[[InstallIntent], None] | None = None,
    ) -> None:
        """``install_node``: commit each exchange's SA pair into the install outbox under
        this node name, and call ``on_committed`` with it once durable (None: the service
        installs nothing, so nothing goes into the outbox)."""
        self.store = store
        self.install_node = install_node
        self.on_committed = on_committed
        #: (lane, token) -> the intent committed with that request
        self._intents: dict[tuple[str, int], InstallIntent] = {}
        #: outbox rows installed (or failed) and not yet handed over for deletion
        self._forget: list[str] = []
        self.metrics = metrics
        self.inline = store.embedded if inline_lookups is None else inline_lookups
        self.miss_seconds = miss_seconds
        #: handle -> until when it is answered "unknown" (a NACK) without reading the store
        self.misses: dict[bytes, float] = {}
        self.group_commit_max = group_commit_max
        self.committer: GroupCommitter | None = None
        self.ok = True
        #: lane name -> lookups waiting for that lane's worker-thread hop
        self._queued: dict[str, list[CredentialNeeded]] = {}
        self._ready: dict[str, trio.Event] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> None:
        self.committer = GroupCommitter(self.store, max_batch=self.group_commit_max)

    async def close(self) -> None:
        """Flush queued accepts and outbox deletions and stop the commit thread, even when
        cancelled (a leaked committer would write through a store its owner has closed)."""
        self.flush_forgotten()
        committer, self.committer = self.committer, None
        if committer is not None:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(committer.close)

    # -- lookups ---------------------------------------------------------------------------
    def lookup(self, lane: Lane, ev: CredentialNeeded, now: float) -> None:
        """Answer now (remembered miss, inline store) or queue for the lane's lookup task."""
        if self.misses and self.misses.get(ev.handle, 0.0) > now:
            self.metrics.cache.inc("miss_recent")
            lane.responder.provide_credential(ev.token, None, None, now)
        elif self.inline:
            try:
                res = self.store.lookup(ev.handle, now)
            except StoreError as e:
                self._answer_error(lane, ev, e, now)
            else:
                self._answer(lane, ev, res, now)
        else:
            q = self._queued.setdefault(lane.name, [])
            q.append(ev)
            if len(q) == 1:
                self._ready.setdefault(lane.name, trio.Event()).set()

    def _answer(
        self, lane: Lane, ev: CredentialNeeded, res: LookupResult | None, now: float
    ) -> None:
        if res is None or not res.allowed:
            self.metrics.cache.inc("miss" if res is None else "refused")
            if res is None and self.miss_seconds > 0:
                misses = self.misses
                if len(misses) >= MAX_TRACKED:
                    del misses[next(iter(misses))]  # the oldest
                misses[ev.handle] = now + self.miss_seconds
            lane.responder.provide_credential(ev.token, None, None, now)
            return
        self.metrics.cache.inc("hit")
        lane.responder.provide_credential(ev.token, res.credential, res.lifetimes, now)

    def _answer_error(self, lane: Lane, ev: CredentialNeeded, e: BaseException, now: float) -> None:
        self.failed("lookup", e)
        self.metrics.cache.inc("error")
        lane.responder.provide_credential(ev.token, None, None, now)

    async def lookup_loop(self, lane: Lane, clock: Callable[[], float]) -> None:
        """The lane's lookup task (non-inline stores): one worker-thread hop per batch."""
        ready = self._ready.setdefault(lane.name, trio.Event())
        depth = self.metrics.queue_depth
        while True:
            await ready.wait()
            ready = self._ready[lane.name] = trio.Event()
            batch = self._queued.pop(lane.name, [])
            if not batch:
                continue
            depth.set(len(batch), "lookup")
            now = clock()
            answers = await trio.to_thread.run_sync(
                self._lookup_many, [e.handle for e in batch], now
            )
            depth.set(0, "lookup")
            now = clock()
            for ev, res in zip(batch, answers, strict=True):
                if isinstance(res, BaseException):
                    self._answer_error(lane, ev, res, now)
                else:
                    self._answer(lane, ev, res, now)
            lane.kick()  # the service task pumps the core's new events and flushes

    def _lookup_many(
        self, handles: list[bytes], now: float
    ) -> list[LookupResult | StoreError | None]:
        out: list[LookupResult | StoreError | None] = []
        for h in handles:
            try:
                out.append(self.store.lookup(h, now))
            except StoreError as e:
                out.append(e)
        return out

    # -- commits ---------------------------------------------------------------------------
    def commit(self, lane: Lane, ev: CommitNeeded, now: float) -> None:
        committer = self.committer
        if committer is None:
            lane.responder.commit_result(ev.token, False, now)
            return
        intent = None
        if self.install_node is not None and ev.sa is not None:
            intent = InstallIntent.new(self.install_node, ev.sa)
        try:
            fut = committer.submit(ev.handle, ev.generation, ev.successor, now, intent)
        except (StoreError, ValueError) as e:
            self.failed("commit", e)
            self.metrics.commits.inc("error")
            lane.responder.commit_result(ev.token, False, now)
            return
        lane.outstanding_commits += 1
        started = lane.started
        if len(started) > MAX_TRACKED:
            started.clear()
        started[ev.handle] = now  # message 3 -> durable commit latency
        token = ev.token
        if intent is not None:
            self._intents[(lane.name, token)] = intent
        post = lane.post
        fut.add_done_callback(lambda f: post(("commit", token, f)))

    def commit_finished(self, lane: Lane, token: int, fut: Future[bool], now: float) -> None:
        lane.outstanding_commits -= 1
        intent = self._intents.pop((lane.name, token), None)
        try:
            ok = fut.result()
        except Exception as e:
            self.failed("commit", e)
            self.metrics.commits.inc("error")
            ok = False
        else:
            self.metrics.commits.inc("ok" if ok else "conflict")
        if ok and intent is not None and self.on_committed is not None:
            self.on_committed(intent)  # durable with the ratchet: install it
        lane.responder.commit_result(token, ok, now)

    # -- the install outbox ----------------------------------------------------------------
    def forget_install(self, uid: str) -> None:
        """An outbox row's install attempt finished: delete the row with a later commit."""
        self._forget.append(uid)

    def flush_forgotten(self) -> None:
        """Hand the rows to forget to the committer (they ride on its next transaction)."""
        uids, self._forget = self._forget, []
        if uids and self.committer is not None:
            # on failure the rows stay: re-installed (idempotently) at the next start-up
            with contextlib.suppress(StoreError):
                self.committer.forget(uids)

    async def forget_loop(self, interval: float = 0.25) -> None:
        """Batch the deletions: at most one hand-over per ``interval`` seconds (with no
        commit to ride on, each hand-over costs one transaction)."""
        while True:
            await trio.sleep(interval)
            self.flush_forgotten()

    @property
    def transactions(self) -> int:
        return self.committer.stats.transactions if self.committer is not None else 0

    # -- health ----------------------------------------------------------------------------
    def failed(self, op: str, e: BaseException) -> None:
        if self.ok:
            logs.event(logging.ERROR, "store_failed", op=op, error=str(e))
        self.ok = False

    async def probe_loop(self, clock: Callable[[], float], interval: float = 2.0) -> None:
        """Re-check the store every few seconds so readiness recovers after an outage.

        The probe is a real lookup (of a handle no credential has), so it fails exactly
        when resumptions would: unreachable database, missing table, wrong schema.
        """
        while True:
            try:
                await trio.to_thread.run_sync(self.store.lookup, _PROBE_HANDLE, clock())
                if not self.ok:
                    logs.event(logging.INFO, "store_recovered")
                self.ok = True
            except StoreError as e:
                self.failed("probe", e)
            await trio.sleep(interval)
