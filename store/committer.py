"""Group commit: many concurrent ratchet accepts, one durable transaction.

A durable commit costs an fsync (SQLite FULL) or a WAL flush and round trip (PostgreSQL)
whatever it carries, so one-row-per-transaction caps a responder at the disk's sync rate.
A single worker thread owns the writes: while one transaction is being made durable, new
accepts queue up, and the next transaction takes all of them (up to ``max_batch``).  No
waiter is answered before the transaction holding its row has committed; if the commit
fails, every waiter of that batch gets the error (StoreError -> the responder refuses).

Callers: plain threads use :meth:`GroupCommitter.submit` (a ``concurrent.futures.Future``)
or :meth:`commit_ratchet_blocking`; trio code awaits :meth:`commit_ratchet`, which parks
the task until the worker reschedules it through the trio token -- no thread per waiting
task, so hundreds of concurrent accepts cost no more threads than one.

Install-outbox deletions (:meth:`GroupCommitter.forget`: rows whose SAs the service has
installed) ride along with the next batch's transaction; with no accept to ride on, they
get one transaction of their own.  Nobody waits for them: a deletion lost in a crash only
means an idempotent re-install at the next start-up.

Accepts submitted from a trio thread (either call) are handed to the worker once per
scheduler pass, all together, not one by one: otherwise, on a busy core, the worker wakes
at the first accept, takes the two or three queued by the time it holds the GIL, and
commits those -- many small transactions, each paying the fixed cost of a commit (and
resetting every reader's page cache).  Handing over a whole pass's worth costs one
``run_sync_soon`` per pass and makes a batch what the event loop produced meanwhile.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass

import trio

from resume.credential import Credential
from store.errors import StoreError, StoreUnavailable
from store.outbox import InstallIntent
from store.repository import RatchetRequest, Store


class _Waiter:
    """One queued accept; answered through a Future (threads) or a trio Event (tasks)."""

    __slots__ = ("error", "future", "req", "result", "task", "token")

    def __init__(self, req: RatchetRequest) -> None:
        self.req = req
        self.result = False
        self.error: BaseException | None = None
        self.future: Future[bool] | None = None
        self.task: trio.lowlevel.Task | None = None
        self.token: trio.lowlevel.TrioToken | None = None


@dataclass
class CommitterStats:
    transactions: int = 0
    accepts: int = 0  # requests processed (won or lost)
    won: int = 0
    failed_transactions: int = 0
    largest_batch: int = 0
    forgotten: int = 0  # install-outbox rows deleted (installed)


class _Forget:
    """Queued install-outbox deletions (no waiter)."""

    __slots__ = ("uids",)

    def __init__(self, uids: list[str]) -> None:
        self.uids = uids


class GroupCommitter:
    """Batches ``Store.commit_ratchet`` calls from any thread or trio task.

    ``max_batch=1`` turns batching off (one row per transaction: the baseline).
    Use as a context manager, or call :meth:`close` (waits for queued work).
    """

    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 1024,
        sqlite_checkpoint_interval_s: float | None = 0.25,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.store = store
        self.max_batch = max_batch
        # SQLite: checkpoint the WAL from another thread instead of inside a commit (an
        # automatic checkpoint would stall every waiter of that batch for its fsyncs).
        self._checkpointer: _Checkpointer | None = None
        if store.embedded and sqlite_checkpoint_interval_s is not None:
            self._checkpointer = _Checkpointer(store, sqlite_checkpoint_interval_s)
        self.stats = CommitterStats()
        self._q: queue.SimpleQueue[_Waiter | list[_Waiter] | _Forget | None] = queue.SimpleQueue()
        #: per trio run: accepts of the current scheduler pass, not yet handed over
        self._pending: dict[trio.lowlevel.TrioToken, list[_Waiter]] = {}
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name="ikeresume-group-commit", daemon=True
        )
        self._thread.start()

    def __enter__(self) -> GroupCommitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for batch in self._pending.values():  # accepted before the close: commit them
                self._q.put(batch)
            self._pending.clear()
            self._q.put(None)
        self._thread.join()
        if self._checkpointer is not None:
            self._checkpointer.close()

    # -- submitting ------------------------------------------------------------------
    def _enqueue(self, w: _Waiter, token: trio.lowlevel.TrioToken | None = None) -> None:
        if token is None:
            try:
                token = trio.lowlevel.current_trio_token()
            except RuntimeError:  # a plain thread: straight to the worker
                with self._lock:
                    if self._closed:
                        raise StoreUnavailable("group committer is closed") from None
                    self._q.put(w)
                return
        with self._lock:
            if self._closed:
                raise StoreUnavailable("group committer is closed")
            pending = self._pending.get(token)
            if pending is not None:
                pending.append(w)
                return
            self._pending[token] = [w]
        try:
            token.run_sync_soon(self._hand_over, token)
        except trio.RunFinishedError:  # cannot happen from inside the run; be safe
            self._hand_over(token)

    def _hand_over(self, token: trio.lowlevel.TrioToken) -> None:
        """Runs in the trio thread once per scheduler pass: this pass's accepts, at once.

        (Nothing to do if :meth:`close` already queued them.)
        """
        with self._lock:
            batch = self._pending.pop(token, None)
            if batch:
                self._q.put(batch)

    def forget(self, uids: list[str]) -> None:
        """Delete these install-outbox rows with the next transaction (nobody waits)."""
        if not uids:
            return
        with self._lock:
            if self._closed:
                raise StoreUnavailable("group committer is closed")
            self._q.put(_Forget(list(uids)))

    def submit(
        self,
        handle: bytes,
        generation: int,
        successor: Credential,
        now: float,
        install: InstallIntent | None = None,
    ) -> Future[bool]:
        """Queue one compare-and-set (with ``install``, its outbox row in the same
        transaction); the future resolves once its transaction is durable."""
        w = _Waiter(RatchetRequest(handle, generation, successor, now, install))  # validates
        w.future = Future()
        w.future.set_running_or_notify_cancel()
        self._enqueue(w)
        return w.future

    def commit_ratchet_blocking(
        self, handle: bytes, generation: int, successor: Credential, now: float
    ) -> bool:
        return self.submit(handle, generation, successor, now).result()

    async def commit_ratchet(
        self,
        handle: bytes,
        generation: int,
        successor: Credential,
        now: float,
        install: InstallIntent | None = None,
    ) -> bool:
        """Trio: the CAS result once durable; raises StoreError if the commit failed.

        The wait cannot be cancelled: once queued the commit happens anyway, and the
        caller must learn whether the record moved before it acknowledges anything.  (The
        task parks with ``wait_task_rescheduled`` and is rescheduled by one trio-token
        callback per batch: cheaper than an Event plus a shielded cancel scope per accept.)
        """
        w = _Waiter(RatchetRequest(handle, generation, successor, now, install))
        w.task = trio.lowlevel.current_task()
        w.token = trio.lowlevel.current_trio_token()
        self._enqueue(w, w.token)
        # nothing yields between the enqueue and parking, and the wake-up callback runs on
        # this trio thread, so the task is always parked before it is rescheduled
        await trio.lowlevel.wait_task_rescheduled(_uncancellable)
        if w.error is not None:
            raise w.error
        return w.result

    # -- the worker ------------------------------------------------------------------
    def _run(self) -> None:
        if self._checkpointer is not None:
            self.store.set_thread_autocheckpoint(0)
        stop = False
        max_batch = self.max_batch
        while not stop:
            first = self._q.get()
            if first is None:
                break
            batch: list[_Waiter] = []
            forget: list[str] = []
            item: _Waiter | list[_Waiter] | _Forget | None = first
            while True:
                if isinstance(item, _Forget):
                    forget.extend(item.uids)
                elif isinstance(item, list):
                    batch.extend(item)
                elif item is not None:
                    batch.append(item)
                if len(batch) >= max_batch:
                    break
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
            if not batch:
                self._forget(forget)
                continue
            for k in range(0, len(batch), max_batch):
                self._commit(batch[k : k + max_batch], forget if k == 0 else [])

    def _forget(self, uids: list[str]) -> None:
        # on failure the rows stay: the next start-up re-installs them (idempotent)
        with contextlib.suppress(StoreError):
            self.stats.forgotten += self.store.forget_installs(uids)

    def _commit(self, batch: list[_Waiter], forget: list[str]) -> None:
        st = self.stats
        try:
            results = self.store.commit_ratchet_many([w.req for w in batch], forget=forget)
        except BaseException as e:  # the batch did not commit: every waiter gets the error
            st.failed_transactions += 1
            for w in batch:
                w.error = e
            self._notify(batch)
            if not isinstance(e, Exception):
                raise
            return
        st.transactions += 1
        st.forgotten += len(forget)
        st.accepts += len(batch)
        st.won += sum(results)
        st.largest_batch = max(st.largest_batch, len(batch))
        for w, ok in zip(batch, results, strict=True):
            w.result = ok
        self._notify(batch)

    @staticmethod
    def _notify(batch: list[_Waiter]) -> None:
        """Wake waiters: one trio-token callback per trio run per batch, not per waiter."""
        by_token: dict[trio.lowlevel.TrioToken, list[trio.lowlevel.Task]] = {}
        for w in batch:
            if w.future is not None:
                if w.error is not None:
                    w.future.set_exception(w.error)
                else:
                    w.future.set_result(w.result)
            elif w.token is not None and w.task is not None:
                by_token.setdefault(w.token, []).append(w.task)
        for token, tasks in by_token.items():
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(_reschedule_all, tasks)


class _Checkpointer:
    """Background WAL checkpoints for a SQLite store (PASSIVE, then a short RESTART).

    PASSIVE copies WAL frames into the database concurrently with the committer; the
    RESTART that follows only has the last frames left to copy, then lets the next writer
    reuse the WAL from its start, so the WAL does not grow without bound under load.
    Checkpointing never weakens durability: commits are durable in the WAL already.
    """

    def __init__(self, store: Store, interval_s: float) -> None:
        self.store = store
        self.interval_s = interval_s
        self.checkpoints = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="ikeresume-wal-checkpoint", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._checkpoint()
        self._checkpoint()

    def _checkpoint(self) -> None:
        try:
            self.store.wal_checkpoint("PASSIVE")
            self.store.wal_checkpoint("RESTART")
            self.checkpoints += 1
        except StoreError:
            self.errors += 1  # e.g. busy: the next round retries

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _uncancellable(_raise_cancel: object) -> trio.lowlevel.Abort:
    return trio.lowlevel.Abort.FAILED


def _reschedule_all(tasks: list[trio.lowlevel.Task]) -> None:
    for t in tasks:
        trio.lowlevel.reschedule(t)
