"""The initiator side over UDP: try a resumption, or tell the caller to run a full IKE.

Two levels, each taking one :class:`ClientOptions` (how the attempt runs):

* :func:`resume_once` drives one :class:`~resume.initiator.Initiator` over a connected UDP
  socket (retransmission with backoff and the overall timeout are the core's timers; this
  only sleeps until ``get_timer()``), with a credential or a store lookup's result (its
  kept previous generation and lifetimes).  It never raises for network trouble: the
  outcome is ``resumed`` or a fallback with its reason (``nack``, ``timeout``, ``network``).
* :func:`resume_with_store` adds the initiator's credential cache: picks the credential for
  the responder identity, passes the kept ``previous`` generation (lost-message-3 rule), and
  on success ratchets the store *before* returning the SA pair, so a crash after returning
  can never leave the store at a generation the responder has moved past.

Each has a blocking twin (``resume_once_blocking``, ``resume_with_store_blocking``) that
waits with ``selectors`` instead of trio and runs the store calls inline: ``ikeresume
resume`` runs before every reconnection of a road warrior, and importing trio alone costs
it 100-180 ms.  trio is imported only inside the async functions (tests/test_startup.py
checks that importing this module and a blocking attempt do not pull it in).

An IKE daemon embeds these; ``ikeresume resume`` wraps the blocking ones (exit code 3 = run
a full IKE).
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from resume.credential import Credential
from resume.errors import DecodeError
from resume.events import Address, FallbackToFullIKE, ResumptionComplete
from resume.initiator import Initiator, InitiatorConfig
from resume.net.udpwire import MAX_DATAGRAM, try_bypass_ipsec
from resume.sa import Lifetimes, SAPair
from resume.wire import add_non_esp_marker, strip_non_esp_marker_untrusted
from store.errors import StoreError
from store.repository import LookupResult, Store

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
    gives ``now`` to the core (wall-clock seconds).
    """

    config: InitiatorConfig | None = None
    id_i: bytes | None = None
    natt: bool = False
    local: Address | None = None
    bypass_ipsec: bool = True
    clock: Callable[[], float] = time.time


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


class _Attempt:
    """One Initiator over one connected socket: everything an attempt does except waiting.

    The trio and the blocking client differ only in how they wait for the socket to become
    readable; sending, the outcome, draining and the timers live here once, so the two
    cannot drift apart.  The loop is: :meth:`step` (a result, or seconds to wait), wait for
    readability at most that long, again.
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
        self.ini = Initiator(
            credential, options.config, previous=previous, peer=server, lifetimes=lifetimes
        )
        self.sock = _socket_for(server, options.local, options.bypass_ipsec)
        self._waited = False
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

    def step(self) -> ResumeResult | float:
        """Feed the core what arrived since the last step (firing its timer when due), send
        what it queued; the outcome if there is one, else how long to wait for the socket."""
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
            return ResumeResult(
                ev.reason, time.perf_counter() - self.t0, retransmits=ini.stats["retransmit"]
            )
        deadline = ini.get_timer()
        return 1.0 if deadline is None else max(0.0, deadline - clock())

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
    what: Credential | LookupResult, server: Address, options: ClientOptions | None = None
) -> ResumeResult:
    """One resumption attempt against ``server`` with a credential, or with a store
    lookup's result (its credential, kept previous generation and lifetimes); see the
    module docstring."""
    import trio  # here, not at the top: the blocking path must not import trio

    att = _Attempt.open(what, server, options)
    if isinstance(att, ResumeResult):
        return att
    with att.sock:
        while not isinstance(step := att.step(), ResumeResult):
            with trio.move_on_after(step):
                await trio.lowlevel.wait_readable(att.sock)
    return step


def resume_once_blocking(
    what: Credential | LookupResult, server: Address, options: ClientOptions | None = None
) -> ResumeResult:
    """:func:`resume_once` for callers without an event loop: blocks the calling thread."""
    att = _Attempt.open(what, server, options)
    if isinstance(att, ResumeResult):
        return att
    with att.sock, selectors.DefaultSelector() as sel:
        sel.register(att.sock, selectors.EVENT_READ)
        while not isinstance(step := att.step(), ResumeResult):
            sel.select(step)
    return step


def no_credential_reason(res: LookupResult | None) -> str:
    """Why an initiator lookup that gave no credential gave none (the outcome's detail)."""
    return "no cached credential" if res is None else f"policy refuses: {res.refusal}"


def advance_after(store: Store, result: ResumeResult, now: float) -> bool:
    """Ratchet the initiator's record after ``result`` resumed: ONE durable transaction.

    The successor becomes current and the generation just used is kept as the previous one
    (the responder may not have received message 3).  No confirm_initiator first: when the
    current generation was used, advance_initiator overwrites the older kept generation with
    it in the same row update, so a confirm would only add a second fsync'd transaction for
    the same end state.  False when the record moved meanwhile.
    """
    if result.used_handle is None or result.successor is None:
        raise ValueError("advance_after needs a resumed result")
    return store.advance_initiator(
        result.used_handle, result.used_generation or 0, result.successor, now
    )


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


def needs_ratchet(result: ResumeResult) -> bool:
    """``result`` resumed: the store must hold its successor before anything else."""
    return result.resumed and result.successor is not None and result.used_handle is not None


def ratchet(store: Store, result: ResumeResult, clock: Callable[[], float]) -> ResumeResult:
    """``result`` once the store holds its successor, or the store_error that prevented it."""
    try:
        advanced = advance_after(store, result, clock())
    except StoreError as e:
        return ResumeResult("store_error", result.elapsed, detail=f"ratchet: {e}")
    if not advanced:
        return ResumeResult("store_error", result.elapsed, detail="credential changed meanwhile")
    return result


async def resume_with_store(
    store: Store, id_r: bytes, server: Address, options: ClientOptions | None = None
) -> ResumeResult:
    """Resume with the cached credential for responder ``id_r`` and ratchet the store.

    Store calls run in a worker thread (the caller's event loop keeps running).
    """
    import trio  # here, not at the top: the blocking path must not import trio

    opts = options or _DEFAULT
    res = await trio.to_thread.run_sync(lookup, store, id_r, opts.id_i, opts.clock())
    if isinstance(res, ResumeResult):
        return res
    result = await resume_once(res, server, options)
    if not needs_ratchet(result):
        return result
    ratcheted: ResumeResult = await trio.to_thread.run_sync(ratchet, store, result, opts.clock)
    return ratcheted


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
    result = resume_once_blocking(res, server, options)
    return ratchet(store, result, opts.clock) if needs_ratchet(result) else result
