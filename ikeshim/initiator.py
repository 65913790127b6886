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
from typing import Literal, TypeVar

import trio

from ikeshim.errors import XfrmError
from ikeshim.installer import InstalledSA, InstallOptions, install_sa_pair, remove_sa_pair
from ikeshim.xfrm import XfrmOps
from resume.events import Address
from resume.initiator import InitiatorConfig
from resume.net.client import ResumeResult, advance_after, no_credential_reason, resume_cached
from store.errors import StoreError
from store.repository import LookupResult, Store

T = TypeVar("T")

Outcome = Literal[
    "resumed",
    "nack",
    "timeout",
    "network",
    "no_credential",
    "store_error",
    "install_failed",
]


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
) -> LookupResult | None:
    if inline:
        return store.lookup_peer(id_r, now, id_i=id_i)
    res: LookupResult | None = await trio.to_thread.run_sync(
        lambda: store.lookup_peer(id_r, now, id_i=id_i)
    )
    return res


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
    ``inline_lookup`` None reads the cache in this thread for SQLite (an indexed read on a
    WAL database, which writers do not block) and in a worker thread for PostgreSQL (a
    network round trip).  The durable write then runs before the install, in ``writer``
    when given (the event loop keeps running) or else in this thread (no hand-off; the loop
    waits for one commit).  With ``overlap_write`` it runs in ``writer`` (or a trio worker
    thread) while this task installs; see the module docstring for why that is safe.
    """
    opts = options or InstallOptions()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    inline = store.embedded if inline_lookup is None else inline_lookup
    try:
        res = await _lookup(store, id_r, clock(), id_i, inline)
    except StoreError as e:
        return ResumeInstallResult("store_error", detail=str(e))
    t1 = time.perf_counter()
    timings["lookup"] = t1 - t0
    if res is None or res.credential is None:
        detail = no_credential_reason(res)
        return ResumeInstallResult("no_credential", detail=detail, timings=timings)
    ex = await resume_cached(res, server, config=config, natt=natt, local=local, clock=clock)
    t2 = time.perf_counter()
    timings["exchange"] = t2 - t1
    if not ex.resumed or ex.sa is None or ex.successor is None or ex.used_handle is None:
        return ResumeInstallResult(ex.outcome, ex, detail=ex.detail, timings=timings)

    def ratchet() -> bool:
        t = time.perf_counter()
        try:
            return advance_after(store, ex, clock())
        finally:
            timings["ratchet"] = time.perf_counter() - t

    advanced: bool | None = None
    ratchet_error: StoreError | None = None

    async def write() -> None:
        nonlocal advanced, ratchet_error
        try:
            if writer is not None:
                advanced = await writer.run(ratchet)
            elif overlap_write:
                advanced = await trio.to_thread.run_sync(ratchet)
            else:
                advanced = ratchet()
        except StoreError as e:
            ratchet_error = e

    installed: InstalledSA | None = None
    install_error: XfrmError | ValueError | None = None
    sa = ex.sa

    def install() -> None:
        nonlocal installed, install_error
        t = time.perf_counter()
        try:
            installed = install_sa_pair(xfrm, sa, opts, replace_old=replace_old)
        except (XfrmError, ValueError) as e:
            install_error = e
        timings["install"] = time.perf_counter() - t

    if overlap_write:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            await trio.lowlevel.checkpoint()  # let the write reach its thread before we block
            install()
    else:
        await write()
        if ratchet_error is None and advanced:
            install()
    timings["after_exchange"] = time.perf_counter() - t2
    if ratchet_error is not None or not advanced:
        detail = f"ratchet: {ratchet_error}" if ratchet_error else "credential changed meanwhile"
        if installed is not None:
            try:
                remove_sa_pair(xfrm, installed)
            except XfrmError as e:
                detail += f"; removing the SAs again failed: {e}"
        return ResumeInstallResult("store_error", ex, detail=detail, timings=timings)
    if install_error is not None:
        return ResumeInstallResult(
            "install_failed", ex, detail=f"install: {install_error}", timings=timings
        )
    return ResumeInstallResult("resumed", ex, installed, timings=timings)
