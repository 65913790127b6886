"""The initiator's whole resumption for an embedding IKE daemon: cache -> exchange -> kernel.

:func:`resume_and_install` is what a long-running daemon calls with its store already open
and its XFRM socket already bound: look the credential up, run the three-message exchange
(:func:`resume.net.client.resume_once`), then make the successor durable and install the
fresh SAs.  ``ikeresume resume --install xfrm`` does the same work in sequence
(``resume_with_store``, then the installer).

Why the successor write MAY run concurrently with the SA install, and why that is safe
-------------------------------------------------------------------------------------
The write is an fsync'd transaction (milliseconds on a disk); the install is a few netlink
round trips.  Run one after the other they add up on the path to the first ESP packet;
with ``overlap_write=True`` the write goes to a worker thread while this task installs.
(The default is write, then install: in ``bench/bench_e2e.py`` on one UML CPU the thread
hand-off and the contention cost more than the overlap saved; where the install is long
and cores are free, overlap.)  Safety holds in both orders because the order between the
two changes nothing a crash can leave behind in the *store*:

* By the time either starts, message 3 is on the wire: the responder may already have
  committed the successor generation, whatever we do next.  The store of a crashed
  initiator then holds either the successor (write durable) or the generation it just
  used (write not durable) -- in both orders of the two steps alike.
* If the used generation survives a crash, the next attempt offers it again: the
  responder either still holds it (it never saw message 3, so it never accepted it) or has
  moved past it and NACKs (its compare-and-set accepts every generation at most once), and
  we run a full IKE.  A generation the responder has moved past is never accepted twice.
* ESP keys are never a cached key: they are derived from the credential AND both fresh
  nonces (hardened mode, X25519 where configured), so a retry with the same generation
  yields different keys and SPIs.  SAs the crashed process left in the kernel carry keys
  nothing else will ever use; their hard lifetime (the policy's budget) removes them, and
  the next install takes over their policies and deletes them (``remove_superseded``).

What the concurrency must not change, and does not: a success is reported only when BOTH
the write is durable and the SAs are in.  If the write fails (or lost its compare-and-set)
the SAs just installed are removed again before returning, so the caller's full IKE does not
compete with orphaned SAs; if the install fails the write still completes (the responder
may have moved on; the store must follow) and the caller runs a full IKE.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import trio

from ikeshim.errors import XfrmError
from ikeshim.installer import InstalledSA, InstallOptions, install_sa_pair, remove_sa_pair
from ikeshim.xfrm import XfrmOps
from resume.events import Address
from resume.initiator import InitiatorConfig
from resume.net.client import (
    ClientOptions,
    Outcome,
    ResumeResult,
    advance_after,
    lookup,
    resume_once,
)
from resume.sa import SAPair
from store.errors import StoreError
from store.repository import LookupResult, Store

T = TypeVar("T")


@dataclass(frozen=True)
class ResumeInstallResult:
    """What happened; ``resumed`` False means: run a full IKE now.

    ``timings`` (seconds, ``time.perf_counter``) say where the time went: ``lookup``,
    ``exchange`` (message 1 sent .. message 3 sent), ``install``, ``ratchet`` (the durable
    write, in its thread) and ``after_exchange`` (until both finished).
    """

    outcome: Outcome
    exchange: ResumeResult | None = field(default=None, repr=False)
    installed: InstalledSA | None = None
    detail: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def resumed(self) -> bool:
        return self.outcome == "resumed"


class StoreWriter:
    """A long-lived worker thread for the initiator's durable writes.

    Why not ``trio.to_thread``: trio's idle worker threads exit after 10 s, so a daemon
    resuming less often than that spawns a thread on every resumption, on the path to the
    first ESP packet (under User-Mode Linux a spawn costs milliseconds).  One thread started
    with the daemon and fed through a queue stays warm.  Use as a context manager, or call
    :meth:`close`.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="ikeresume-store-writer")
        self._thread.daemon = True
        self._thread.start()

    def _loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the writer thread; like ``trio.to_thread.run_sync``, not cancellable
        (a durable write that started must be waited for)."""
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: list[T] = []
        err: list[BaseException] = []

        def job() -> None:
            try:
                box.append(fn())
            except BaseException as e:  # handed to the caller
                err.append(e)
            token.run_sync_soon(done.set)

        self._jobs.put(job)
        with trio.CancelScope(shield=True):
            await done.wait()
        if err:
            raise err[0]
        return box[0]

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _lookup(
    store: Store, id_r: bytes, now: float, id_i: bytes | None, inline: bool
) -> LookupResult | ResumeResult:
    if inline:
        return lookup(store, id_r, id_i, now)
    res: LookupResult | ResumeResult = await trio.to_thread.run_sync(lookup, store, id_r, id_i, now)
    return res


@dataclass
class _AfterExchange:
    """The two steps after message 3 -- the durable write and the install -- and what each
    left behind, so that they can run in either order or concurrently."""

    store: Store
    exchange: ResumeResult
    sa: SAPair
    clock: Callable[[], float]
    timings: dict[str, float]
    advanced: bool | None = None
    ratchet_error: StoreError | None = None
    installed: InstalledSA | None = None
    install_error: XfrmError | ValueError | None = None

    def ratchet(self) -> bool:
        t = time.perf_counter()
        try:
            return advance_after(self.store, self.exchange, self.clock())
        finally:
            self.timings["ratchet"] = time.perf_counter() - t

    async def write(self, writer: StoreWriter | None, in_thread: bool) -> None:
        """The durable write: in ``writer``, in a trio worker thread, or in this thread."""
        try:
            if writer is not None:
                self.advanced = await writer.run(self.ratchet)
            elif in_thread:
                self.advanced = await trio.to_thread.run_sync(self.ratchet)
            else:
                self.advanced = self.ratchet()
        except StoreError as e:
            self.ratchet_error = e

    def install(
        self, xfrm: XfrmOps, options: InstallOptions, replace_old: InstalledSA | None
    ) -> None:
        t = time.perf_counter()
        try:
            self.installed = install_sa_pair(xfrm, self.sa, options, replace_old=replace_old)
        except (XfrmError, ValueError) as e:
            self.install_error = e
        self.timings["install"] = time.perf_counter() - t

    def written(self) -> bool:
        return self.ratchet_error is None and bool(self.advanced)

    def result(self, xfrm: XfrmOps) -> ResumeInstallResult:
        """Success only with both steps done; SAs whose write failed are removed again."""
        ex, timings = self.exchange, self.timings
        if not self.written():
            err = self.ratchet_error
            detail = f"ratchet: {err}" if err else "credential changed meanwhile"
            if self.installed is not None:
                try:
                    remove_sa_pair(xfrm, self.installed)
                except XfrmError as e:
                    detail += f"; removing the SAs again failed: {e}"
            return ResumeInstallResult("store_error", ex, detail=detail, timings=timings)
        if self.install_error is not None:
            detail = f"install: {self.install_error}"
            return ResumeInstallResult("install_failed", ex, detail=detail, timings=timings)
        return ResumeInstallResult("resumed", ex, self.installed, timings=timings)


async def resume_and_install(
    store: Store,
    id_r: bytes,
    server: Address,
    xfrm: XfrmOps,
    *,
    options: InstallOptions | None = None,
    replace_old: InstalledSA | None = None,
    id_i: bytes | None = None,
    config: InitiatorConfig | None = None,
    natt: bool = False,
    local: Address | None = None,
    inline_lookup: bool | None = None,
    writer: StoreWriter | None = None,
    overlap_write: bool = False,
    clock: Callable[[], float] = time.time,
) -> ResumeInstallResult:
    """Resume with the cached credential for ``id_r`` and install the fresh SAs on ``xfrm``.

    ``xfrm`` is the daemon's open XFRM socket (a blocking :class:`XfrmSocket` is right here:
    the kernel handles an XFRM request inside ``sendmsg`` and queues the reply before it
    returns, so the receive never waits, and a thread hop would cost more than the request).
    ``inline_lookup`` None reads the cache in this thread for an embedded (SQLite) store
    (an indexed read on a WAL database, which writers do not block) and in a worker thread
    for PostgreSQL (a network round trip).  The durable write then runs before the install,
    in ``writer`` when given (the event loop keeps running) or else in this thread (no
    hand-off; the loop waits for one commit).  With ``overlap_write`` it runs in ``writer``
    (or a trio worker thread) while this task installs; see the module docstring for why
    that is safe.  ``config``, ``natt``, ``local`` and ``clock`` are the attempt's
    :class:`~resume.net.client.ClientOptions`.
    """
    install_options = options or InstallOptions()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    inline = store.embedded if inline_lookup is None else inline_lookup
    res = await _lookup(store, id_r, clock(), id_i, inline)
    if isinstance(res, ResumeResult) and res.outcome == "store_error":
        return ResumeInstallResult("store_error", detail=res.detail)
    t1 = time.perf_counter()
    timings["lookup"] = t1 - t0
    if isinstance(res, ResumeResult):
        return ResumeInstallResult(res.outcome, detail=res.detail, timings=timings)
    client = ClientOptions(config=config, natt=natt, local=local, clock=clock)
    ex = await resume_once(res, server, client)
    t2 = time.perf_counter()
    timings["exchange"] = t2 - t1
    if not ex.resumed or ex.sa is None or ex.successor is None or ex.used_handle is None:
        return ResumeInstallResult(ex.outcome, ex, detail=ex.detail, timings=timings)
    after = _AfterExchange(store, ex, ex.sa, clock, timings)
    if overlap_write:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(after.write, writer, True)
            await trio.lowlevel.checkpoint()  # let the write reach its thread before we block
            after.install(xfrm, install_options, replace_old)
    else:
        await after.write(writer, False)
        if after.written():
            after.install(xfrm, install_options, replace_old)
    timings["after_exchange"] = time.perf_counter() - t2
    return after.result(xfrm)
