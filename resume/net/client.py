"""The initiator side over UDP: try a resumption, or tell the caller to run a full IKE.

Two levels, each taking one :class:`ClientOptions` (how the attempt runs):

* :func:`resume_once` drives one :class:`~resume.initiator.Initiator` over a connected UDP
  socket (retransmission with backoff and the overall timeout are the core's timers; this
  only sleeps until ``get_timer()``), with a credential or a store lookup's result (its
  kept previous generation and lifetimes), and a ``save`` callable that makes the
  successor durable when the core asks (``SaveSuccessor``).  It never raises for network
  trouble: the outcome is ``resumed`` or a fallback with its reason (``nack``,
  ``timeout``, ``network``, ``store_error``).
* :func:`resume_with_store` adds the initiator's credential cache: picks the credential for
  the responder identity, passes the kept ``previous`` generation (lost-message-3 rule), and
  saves the successor with :func:`write_ahead` -- one durable transaction, BEFORE message 3
  leaves (the core holds message 3 back until the save is reported; spec 6.1 step 5).  A
  crash at any point therefore leaves the cache holding the successor next to the
  generation used, and the next attempt's "try g+1, on NACK once g" (spec 9.2) resumes
  whichever the responder holds: no client is stranded by a crash.

Each has a blocking twin (``resume_once_blocking``, ``resume_with_store_blocking``) that
waits with ``selectors`` instead of trio and runs the store calls inline: ``ikeresume
resume`` runs before every reconnection of a road warrior, and importing trio alone costs
it 100-180 ms.  trio is imported only inside the async functions (tests/test_startup.py
checks that importing this module and a blocking attempt do not pull it in).
``ikeshim.initiator.resume_and_install`` runs the same attempt with its own ``save`` (the
same :func:`write_ahead`, optionally overlapped with the SA install).

An IKE daemon embeds these; ``ikeresume resume`` wraps the blocking ones (exit code 3 = run
a full IKE).
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from resume.credential import Credential
from resume.errors import DecodeError
from resume.events import Address, FallbackToFullIKE, ResumptionComplete, SaveSuccessor
from resume.initiator import Initiator, InitiatorConfig
from resume.net.udpwire import MAX_DATAGRAM, try_bypass_ipsec
from resume.sa import Lifetimes, SAPair
from resume.wire import add_non_esp_marker, strip_non_esp_marker_untrusted
from store.errors import StoreError
from store.repository import LookupResult, Store

if TYPE_CHECKING:
    from resume.native import NativeInitiator

#: Every outcome of a client attempt; ``install_failed`` only from
#: :func:`ikeshim.initiator.resume_and_install`, which also installs the SAs.
Outcome = Literal[
    "resumed",
    "nack",
    "timeout",
    "pq_refused",
    "network",
    "no_credential",
    "store_error",
    "install_failed",
]


@dataclass(frozen=True)
class ClientOptions:
    """How an attempt runs: the initiator's timers, the framing and the socket.

    ``id_i`` picks our identity when the cache holds several credentials for one
    responder (the store calls only); ``natt`` frames datagrams for UDP 4500 (RFC 3948);
    ``local`` binds the socket;
    ``bypass_ipsec`` exempts it from IPsec policies (needs CAP_NET_ADMIN; silently skipped
    without it): a previous session's policies must not capture this attempt.  ``clock``
    gives ``now`` to the core (wall-clock seconds).  ``native`` picks the protocol core
    (:func:`resume.native.make_initiator`): False the Python core (the default: the one-shot
    CLI does not pay the extension's import), None the native one when it is built (and
    ``IKERESUME_CORE`` does not say otherwise), True the native one or an error.
    """

    config: InitiatorConfig | None = None
    id_i: bytes | None = None
    natt: bool = False
    local: Address | None = None
    bypass_ipsec: bool = True
    clock: Callable[[], float] = time.time
    native: bool | None = False


_DEFAULT = ClientOptions()


@dataclass(frozen=True)
class ResumeResult:
    """What happened.  ``resumed`` False means: run a full IKE now."""

    outcome: Outcome
    elapsed: float
    sa: SAPair | None = field(default=None, repr=False)
    used_handle: bytes | None = field(default=None, repr=False)
    used_generation: int | None = None
    successor: Credential | None = field(default=None, repr=False)
    retransmits: int = 0
    detail: str = ""
    #: the key exchanges the run mixed in (``ResumptionComplete.ke``), when resumed
    ke: str = ""

    @property
    def resumed(self) -> bool:
        return self.outcome == "resumed"


def _socket_for(server: Address, local: Address | None, bypass: bool) -> socket.socket:
    fam = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        if bypass:
            try_bypass_ipsec(s)  # best effort: only matters where policies exist
        if local is not None:
            s.bind(local)
        s.connect(server)  # the kernel drops datagrams from anyone else
    except BaseException:
        s.close()
        raise
    return s


class SaveFailed(Exception):
    """A ``save`` callable could not make the successor durable (the message says why).

    The attempt then ends as ``store_error`` with message 3 never sent: the credential
    used is still the one the responder holds.
    """


#: What :func:`resume_once_blocking` calls when the core asks for the successor to be
#: stored; it returns once the write is durable, or raises :class:`SaveFailed`.
Save = Callable[[SaveSuccessor], None]
#: :data:`Save` for :func:`resume_once` (awaited in the caller's trio run).
AsyncSave = Callable[[SaveSuccessor], Awaitable[None]]


def write_ahead(store: Store, ev: SaveSuccessor, now: float) -> None:
    """Store ``ev.successor`` as current, keeping the generation used as previous: ONE
    durable transaction (``Store.advance_initiator``), done before message 3 leaves.

    No confirm_initiator first: when the current generation was used, advance_initiator
    overwrites the older kept generation with it in the same row update, so a confirm
    would only add a second fsync'd transaction for the same end state.  Raises
    :class:`SaveFailed` if the store failed or the record moved meanwhile (another process
    used or replaced this credential).
    """
    try:
        advanced = store.advance_initiator(ev.handle, ev.generation, ev.successor, now)
    except StoreError as e:
        raise SaveFailed(f"write-ahead: {e}") from e
    if not advanced:
        raise SaveFailed("write-ahead: credential changed meanwhile")


async def keep_in_memory(ev: SaveSuccessor) -> None:
    """A ``save`` that stores nothing: for callers that hold no cache (tests, benchmarks,
    a one-off attempt with a credential in hand).  The result still carries the successor,
    but a crash after message 3 loses it: a cache must use :func:`write_ahead`."""


def keep_in_memory_blocking(ev: SaveSuccessor) -> None:
    """:func:`keep_in_memory` for :func:`resume_once_blocking`."""


class _Attempt:
    """One Initiator over one connected socket: everything an attempt does except waiting
    and saving.

    The trio and the blocking client differ only in how they wait for the socket to become
    readable and how they run the save; sending, the outcome, draining and the timers live
    here once, so the two cannot drift apart.  The loop is: :meth:`step` (a result, a save
    request, or seconds to wait), wait for readability at most that long -- or run the
    save and report it with :meth:`saved` --, again.
    """

    def __init__(
        self,
        credential: Credential,
        server: Address,
        options: ClientOptions,
        previous: Credential | None,
        lifetimes: Lifetimes | None,
    ) -> None:
        self.t0 = time.perf_counter()
        self.server = server
        self.natt = options.natt
        self.clock = clock = options.clock
        self.ini: Initiator | NativeInitiator
        if options.native is False:
            self.ini = Initiator(
                credential, options.config, previous=previous, peer=server, lifetimes=lifetimes
            )
        else:
            from resume.native import make_initiator  # loads the extension: only when asked

            self.ini = make_initiator(
                credential, options.config, previous=previous, peer=server,
                lifetimes=lifetimes, native=options.native,
            )  # fmt: skip
        self.sock = _socket_for(server, options.local, options.bypass_ipsec)
        self._waited = False
        self._save_error = ""
        try:
            self.ini.initiate(clock())
        except BaseException:
            self.sock.close()  # the callers' ``with att.sock`` is not reached
            raise

    @classmethod
    def open(
        cls,
        what: Credential | LookupResult,
        server: Address,
        options: ClientOptions | None,
    ) -> _Attempt | ResumeResult:
        """The attempt, or the ``network`` outcome when no socket could be set up."""
        previous: Credential | None = None
        lifetimes: Lifetimes | None = None
        if isinstance(what, LookupResult):
            if what.credential is None:
                raise ValueError("resume_once needs a lookup that found a credential")
            credential, previous, lifetimes = what.credential, what.previous, what.lifetimes
        else:
            credential = what
        try:
            return cls(credential, server, options or _DEFAULT, previous, lifetimes)
        except OSError as e:
            return ResumeResult("network", 0.0, detail=f"socket: {e.strerror or e}")

    def step(self) -> ResumeResult | SaveSuccessor | float:
        """Feed the core what arrived since the last step (firing its timer when due), send
        what it queued; the outcome if there is one, the core's request to save the
        successor (answer with :meth:`saved`, then step again), else how long to wait for
        the socket."""
        if self._waited:
            self.after_wait()
        self._waited = True
        ini, clock = self.ini, self.clock
        for data, _addr in ini.datagrams_to_send(clock()):
            try:
                self.sock.send(add_non_esp_marker(data) if self.natt else data)
            except BlockingIOError:
                pass  # counts as a lost datagram: the core retransmits
            except OSError as e:
                # ECONNREFUSED from an earlier ICMP: treat like loss, keep trying
                ini.stats[f"send_{type(e).__name__}"] += 1
        ev = ini.next_event()
        if isinstance(ev, SaveSuccessor):
            self._waited = False  # the next step sends message 3; nothing to read first
            return ev
        if isinstance(ev, ResumptionComplete):
            return ResumeResult(
                "resumed",
                time.perf_counter() - self.t0,
                sa=ev.sa,
                used_handle=ev.handle,
                used_generation=ev.generation,
                successor=ev.successor,
                retransmits=ini.stats["retransmit"],
                ke=ev.ke,
            )
        if isinstance(ev, FallbackToFullIKE):
            elapsed = time.perf_counter() - self.t0
            if ev.reason == "save_failed":
                return ResumeResult(
                    "store_error", elapsed, retransmits=ini.stats["retransmit"],
                    detail=self._save_error,
                )  # fmt: skip
            return ResumeResult(ev.reason, elapsed, retransmits=ini.stats["retransmit"])
        deadline = ini.get_timer()
        return 1.0 if deadline is None else max(0.0, deadline - clock())

    def saved(self, error: SaveFailed | None) -> None:
        """Report the save the last :meth:`step` asked for: done (``None``) or failed."""
        if error is None:
            self.ini.successor_saved(self.clock())
        else:
            self._save_error = str(error)
            self.ini.successor_save_failed(self.clock())

    def after_wait(self) -> None:
        """Feed the core whatever arrived, then fire its timer if it is due."""
        self._drain()
        now = self.clock()
        deadline = self.ini.get_timer()
        if deadline is not None and now >= deadline:
            self.ini.handle_timer(now)

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                self.ini.stats["recv_error"] += 1  # ICMP port unreachable: like a lost datagram
                return
            if self.natt:
                try:
                    data = strip_non_esp_marker_untrusted(data)
                except DecodeError:
                    continue  # ESP or a keepalive on the shared port: not ours
            self.ini.receive_datagram(data, self.server, self.clock())


async def resume_once(
    what: Credential | LookupResult,
    server: Address,
    options: ClientOptions | None = None,
    *,
    save: AsyncSave,
) -> ResumeResult:
    """One resumption attempt against ``server`` with a credential, or with a store
    lookup's result (its credential, kept previous generation and lifetimes).

    ``save`` is awaited when the core has verified message 2 and asks for the successor to
    be stored; message 3 leaves only after it returns (raise :class:`SaveFailed` to end the
    attempt with nothing sent).  A cache passes :func:`write_ahead` (as
    :func:`resume_with_store` does); :func:`keep_in_memory` stores nothing.  See the module
    docstring."""
    import trio  # here, not at the top: the blocking path must not import trio

    att = _Attempt.open(what, server, options)
    if isinstance(att, ResumeResult):
        return att
    with att.sock:
        while not isinstance(step := att.step(), ResumeResult):
            if isinstance(step, SaveSuccessor):
                try:
                    await save(step)
                except SaveFailed as e:
                    att.saved(e)
                else:
                    att.saved(None)
                continue
            with trio.move_on_after(step):
                await trio.lowlevel.wait_readable(att.sock)
    return step


def resume_once_blocking(
    what: Credential | LookupResult,
    server: Address,
    options: ClientOptions | None = None,
    *,
    save: Save,
) -> ResumeResult:
    """:func:`resume_once` for callers without an event loop: blocks the calling thread
    (``save`` runs in it)."""
    att = _Attempt.open(what, server, options)
    if isinstance(att, ResumeResult):
        return att
    with att.sock, selectors.DefaultSelector() as sel:
        sel.register(att.sock, selectors.EVENT_READ)
        while not isinstance(step := att.step(), ResumeResult):
            if isinstance(step, SaveSuccessor):
                try:
                    save(step)
                except SaveFailed as e:
                    att.saved(e)
                else:
                    att.saved(None)
                continue
            sel.select(step)
    return step


def no_credential_reason(res: LookupResult | None) -> str:
    """Why an initiator lookup that gave no credential gave none (the outcome's detail)."""
    return "no cached credential" if res is None else f"policy refuses: {res.refusal}"


def lookup(
    store: Store, id_r: bytes, id_i: bytes | None, now: float
) -> LookupResult | ResumeResult:
    """The usable cached credential, or the outcome that says why there is none."""
    try:
        res = store.lookup_peer(id_r, now, id_i=id_i)
    except StoreError as e:
        return ResumeResult("store_error", 0.0, detail=str(e))
    if res is None or res.credential is None:
        return ResumeResult("no_credential", 0.0, detail=no_credential_reason(res))
    return res


async def resume_with_store(
    store: Store, id_r: bytes, server: Address, options: ClientOptions | None = None
) -> ResumeResult:
    """Resume with the cached credential for responder ``id_r``; the successor is durable in
    ``store`` before message 3 leaves (:func:`write_ahead`).

    Store calls run in a worker thread (the caller's event loop keeps running).
    """
    import trio  # here, not at the top: the blocking path must not import trio

    opts = options or _DEFAULT
    res = await trio.to_thread.run_sync(lookup, store, id_r, opts.id_i, opts.clock())
    if isinstance(res, ResumeResult):
        return res

    async def save(ev: SaveSuccessor) -> None:
        await trio.to_thread.run_sync(write_ahead, store, ev, opts.clock())

    return await resume_once(res, server, options, save=save)


def resume_with_store_blocking(
    store: Store, id_r: bytes, server: Address, options: ClientOptions | None = None
) -> ResumeResult:
    """:func:`resume_with_store` without an event loop: store calls run inline.

    For one-shot callers (``ikeresume resume``) that have nothing else to keep responsive
    and should not pay trio's import cost.
    """
    opts = options or _DEFAULT
    res = lookup(store, id_r, opts.id_i, opts.clock())
    if isinstance(res, ResumeResult):
        return res

    def save(ev: SaveSuccessor) -> None:
        write_ahead(store, ev, opts.clock())

    return resume_once_blocking(res, server, options, save=save)
