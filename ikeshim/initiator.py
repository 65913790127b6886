"""The initiator's whole resumption for an embedding IKE daemon: cache -> exchange -> kernel.

:func:`resume_and_install` is what a long-running daemon calls with its store already open
and its XFRM socket already bound: look the credential up, run the three-message exchange
(:func:`resume.net.client.resume_once`), make the successor durable BEFORE message 3 leaves
(:func:`resume.net.client.write_ahead`, the same write the library API and ``ikeresume
resume`` make) and install the fresh SAs.  ``ikeresume resume --install xfrm`` does the same
work in sequence (``resume_with_store``, then the installer).

Why the write comes first, and what it may overlap with
------------------------------------------------------
Message 3 is what lets the responder move to generation g+1.  The protocol core does not
send it until the save is reported (spec 6.1 step 5), so a crash at any point leaves the
store holding either g alone (nothing was sent: the responder is at g too) or g+1 next to
g -- and the next attempt tries g+1 and, on a NACK, g once (spec 9.2).  No order of
crash and message 3 strands the client.

The write is an fsync'd transaction (milliseconds on a disk); the install is a few netlink
round trips.  By default they run one after the other: write, message 3, install.  With
``overlap_write=True`` the write goes to a worker thread while this task installs the SA
pair (known as soon as message 2 verified); message 3 still waits for BOTH the durable
write and the install, so it never leaves before the successor is durable.  (In
``bench/bench_e2e.py`` on one UML CPU the thread hand-off and the contention cost more
than the overlap saved; where the install is long and cores are free, overlap.)

What the overlap must not change, and does not: a success is reported only when BOTH the
write is durable and the SAs are in.  If the write fails (or lost its compare-and-set)
message 3 is never sent and the SAs just installed are removed again before returning, so
the caller's full IKE does not compete with orphaned SAs; if the install fails after a
durable write, message 3 is still sent (the store already moved on; the responder must
follow) and the caller runs a full IKE.

ESP keys are never a cached key: they are derived from the credential AND both fresh
nonces (hardened mode, X25519 where configured), so a retry with the same generation yields
different keys and SPIs.  SAs a crashed process left in the kernel carry keys nothing else
will ever use; their hard lifetime (the policy's budget) removes them, and the next install
takes over their policies and deletes them (``remove_superseded``).
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
from resume.events import Address, SaveSuccessor
from resume.initiator import InitiatorConfig
from resume.net.client import (
    ClientOptions,
    Outcome,
    ResumeResult,
    SaveFailed,
    lookup,
    resume_once,
    write_ahead,
)
from resume.sa import SAPair
from store.repository import LookupResult, Store

T = TypeVar("T")


@dataclass(frozen=True)
class ResumeInstallResult:
    """What happened; ``resumed`` False means: run a full IKE now.

    ``timings`` (seconds, ``time.perf_counter``) say where the time went: ``lookup``,
    ``exchange`` (message 1 sent .. message 2 verified), ``ratchet`` (the durable write
    ahead of message 3, in its thread when overlapped), ``install``, ``to_message3``
    (message 1 sent .. message 3 sent: the exchange plus the write, and the install when
    overlapped) and ``after_exchange`` (message 2 verified .. both write and install done).
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
    """The two steps after message 2 verified -- the durable write (before message 3) and
    the install -- and what each left behind, so that they can run in sequence or with
    the install overlapping the write."""

    store: Store
    clock: Callable[[], float]
    timings: dict[str, float]
    writer: StoreWriter | None
    overlap: bool
    xfrm: XfrmOps
    options: InstallOptions
    replace_old: InstalledSA | None
    verified_at: float = 0.0
    save_error: SaveFailed | None = None
    installed: InstalledSA | None = None
    install_error: XfrmError | ValueError | None = None

    def ratchet(self, ev: SaveSuccessor) -> None:
        t = time.perf_counter()
        try:
            write_ahead(self.store, ev, self.clock())
        finally:
            self.timings["ratchet"] = time.perf_counter() - t

    async def write(self, ev: SaveSuccessor, in_thread: bool) -> None:
        """The durable write: in ``writer``, in a trio worker thread, or in this thread."""
        try:
            if self.writer is not None:
                await self.writer.run(lambda: self.ratchet(ev))
            elif in_thread:
                await trio.to_thread.run_sync(self.ratchet, ev)
            else:
                self.ratchet(ev)
        except SaveFailed as e:
            self.save_error = e

    async def save(self, ev: SaveSuccessor) -> None:
        """The attempt's ``save``: message 3 leaves when this returns (raises SaveFailed)."""
        self.verified_at = time.perf_counter()
        if self.overlap:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.write, ev, True)
                await trio.lowlevel.checkpoint()  # let the write reach its thread first
                self.install(ev.sa)
        else:
            await self.write(ev, self.writer is not None)
        if self.save_error is not None:
            raise self.save_error

    def install(self, sa: SAPair) -> None:
        t = time.perf_counter()
        try:
            self.installed = install_sa_pair(
                self.xfrm, sa, self.options, replace_old=self.replace_old
            )
        except (XfrmError, ValueError) as e:
            self.install_error = e
        self.timings["install"] = time.perf_counter() - t

    def result(self, ex: ResumeResult) -> ResumeInstallResult:
        """Success only with both steps done; SAs whose write failed are removed again."""
        timings = self.timings
        if self.save_error is not None:
            detail = str(self.save_error)
            if self.installed is not None:
                try:
                    remove_sa_pair(self.xfrm, self.installed)
                except XfrmError as e:
                    detail += f"; removing the SAs again failed: {e}"
            return ResumeInstallResult("store_error", ex, detail=detail, timings=timings)
        if not ex.resumed or ex.sa is None:
            return ResumeInstallResult(ex.outcome, ex, detail=ex.detail, timings=timings)
        if not self.overlap:
            self.install(ex.sa)
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
    native: bool | None = False,
) -> ResumeInstallResult:
    """Resume with the cached credential for ``id_r`` and install the fresh SAs on ``xfrm``.

    ``xfrm`` is the daemon's open XFRM socket (a blocking :class:`XfrmSocket` is right here:
    the kernel handles an XFRM request inside ``sendmsg`` and queues the reply before it
    returns, so the receive never waits, and a thread hop would cost more than the request).
    ``inline_lookup`` None reads the cache in this thread for an embedded (SQLite) store
    (an indexed read on a WAL database, which writers do not block) and in a worker thread
    for PostgreSQL (a network round trip).  The durable write runs when message 2 has
    verified, before message 3 leaves: in ``writer`` when given (the event loop keeps
    running) or else in this thread (no hand-off; the loop waits for one commit), and the
    install after message 3.  With ``overlap_write`` the write runs in ``writer`` (or a trio
    worker thread) while this task installs, and message 3 leaves once both are done; see
    the module docstring for why that is safe.  ``config``, ``natt``, ``local``,
    ``clock`` and ``native`` (the protocol core) are the attempt's
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
    client = ClientOptions(config=config, natt=natt, local=local, clock=clock, native=native)
    after = _AfterExchange(
        store, clock, timings, writer, overlap_write, xfrm, install_options, replace_old
    )
    ex = await resume_once(res, server, client, save=after.save)
    t2 = time.perf_counter()
    if after.verified_at:
        timings["exchange"] = after.verified_at - t1
        timings["to_message3"] = t2 - t1
    else:
        timings["exchange"] = t2 - t1
    result = after.result(ex)
    if after.verified_at:
        timings["after_exchange"] = time.perf_counter() - after.verified_at
    return result
