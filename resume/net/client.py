"""The initiator side over UDP: try a resumption, or tell the caller to run a full IKE.

Two levels:

* :func:`resume_once` drives one :class:`~resume.initiator.Initiator` over a connected UDP
  socket (retransmission with backoff and the overall timeout are the core's timers; this
  only sleeps until ``get_timer()``).  It never raises for network trouble: the outcome is
  ``resumed`` or a fallback with its reason (``nack``, ``timeout``, ``network``).
* :func:`resume_with_store` adds the initiator's credential cache: picks the credential for
  the responder identity, passes the kept ``previous`` generation (lost-message-3 rule), and
  on success ratchets the store *before* returning the SA pair, so a crash after returning
  can never leave the store at a generation the responder has moved past.

An IKE daemon embeds these; ``ikeresume resume`` wraps them (exit code 3 = run a full IKE).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import trio

from resume.credential import Credential
from resume.events import FallbackToFullIKE, ResumptionComplete
from resume.initiator import Initiator, InitiatorConfig
from resume.net.udp import MAX_DATAGRAM, NON_ESP_MARKER, Addr, try_bypass_ipsec
from resume.sa import Lifetimes, SAPair
from store.errors import StoreError
from store.repository import LookupResult, Store

Outcome = Literal["resumed", "nack", "timeout", "network", "no_credential", "store_error"]


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

    @property
    def resumed(self) -> bool:
        return self.outcome == "resumed"


def _socket_for(server: Addr, local: Addr | None, bypass: bool) -> socket.socket:
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


async def resume_once(
    credential: Credential,
    server: Addr,
    *,
    config: InitiatorConfig | None = None,
    previous: Credential | None = None,
    lifetimes: Lifetimes | None = None,
    natt: bool = False,
    local: Addr | None = None,
    bypass_ipsec: bool = True,
    clock: Callable[[], float] = time.time,
) -> ResumeResult:
    """One resumption attempt against ``server``; see the module docstring.

    ``bypass_ipsec`` exempts the socket from IPsec policies (needs CAP_NET_ADMIN; silently
    skipped without it): a previous session's policies must not capture this attempt.
    """
    t0 = time.perf_counter()
    ini = Initiator(credential, config, previous=previous, peer=server, lifetimes=lifetimes)
    try:
        sock = _socket_for(server, local, bypass_ipsec)
    except OSError as e:
        return ResumeResult("network", 0.0, detail=f"socket: {e.strerror or e}")
    with sock:
        ini.initiate(clock())
        while True:
            for data, _addr in ini.datagrams_to_send(clock()):
                try:
                    sock.send(NON_ESP_MARKER + data if natt else data)
                except BlockingIOError:
                    pass  # counts as a lost datagram: the core retransmits
                except OSError as e:
                    # ECONNREFUSED from an earlier ICMP: treat like loss, keep trying
                    ini.stats[f"send_{type(e).__name__}"] += 1
            ev = ini.next_event()
            if isinstance(ev, ResumptionComplete):
                return ResumeResult(
                    "resumed",
                    time.perf_counter() - t0,
                    sa=ev.sa,
                    used_handle=ev.handle,
                    used_generation=ev.generation,
                    successor=ev.successor,
                    retransmits=ini.stats["retransmit"],
                )
            if isinstance(ev, FallbackToFullIKE):
                return ResumeResult(
                    ev.reason, time.perf_counter() - t0, retransmits=ini.stats["retransmit"]
                )
            deadline = ini.get_timer()
            wait = 1.0 if deadline is None else max(0.0, deadline - clock())
            with trio.move_on_after(wait):
                await trio.lowlevel.wait_readable(sock)
            _drain(sock, ini, natt, server, clock)
            now = clock()
            deadline = ini.get_timer()
            if deadline is not None and now >= deadline:
                ini.handle_timer(now)


def _drain(
    sock: socket.socket, ini: Initiator, natt: bool, server: Addr, clock: Callable[[], float]
) -> None:
    while True:
        try:
            data = sock.recv(MAX_DATAGRAM)
        except BlockingIOError:
            return
        except OSError:
            ini.stats["recv_error"] += 1  # ICMP port unreachable: like a lost datagram
            return
        if natt:
            if data[:4] != NON_ESP_MARKER:
                continue
            data = data[4:]
        ini.receive_datagram(data, server, clock())


def no_credential_reason(res: LookupResult | None) -> str:
    """Why an initiator lookup that gave no credential gave none (the outcome's detail)."""
    return "no cached credential" if res is None else f"policy refuses: {res.refusal}"


async def resume_cached(
    res: LookupResult,
    server: Addr,
    *,
    config: InitiatorConfig | None = None,
    natt: bool = False,
    local: Addr | None = None,
    clock: Callable[[], float] = time.time,
) -> ResumeResult:
    """One exchange with a looked-up credential, its kept previous generation and lifetimes."""
    if res.credential is None:
        raise ValueError("resume_cached needs a lookup that found a credential")
    return await resume_once(
        res.credential,
        server,
        config=config,
        previous=res.previous,
        lifetimes=res.lifetimes,
        natt=natt,
        local=local,
        clock=clock,
    )


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


async def resume_with_store(
    store: Store,
    id_r: bytes,
    server: Addr,
    *,
    id_i: bytes | None = None,
    config: InitiatorConfig | None = None,
    natt: bool = False,
    local: Addr | None = None,
    clock: Callable[[], float] = time.time,
) -> ResumeResult:
    """Resume with the cached credential for responder ``id_r`` and ratchet the store.

    Store calls run in a worker thread (the caller's event loop keeps running).
    """
    now = clock()
    try:
        res = await trio.to_thread.run_sync(lambda: store.lookup_peer(id_r, now, id_i=id_i))
    except StoreError as e:
        return ResumeResult("store_error", 0.0, detail=str(e))
    if res is None or res.credential is None:
        return ResumeResult("no_credential", 0.0, detail=no_credential_reason(res))
    result = await resume_cached(res, server, config=config, natt=natt, local=local, clock=clock)
    if not result.resumed or result.successor is None or result.used_handle is None:
        return result
    try:
        advanced = await trio.to_thread.run_sync(lambda: advance_after(store, result, clock()))
    except StoreError as e:
        return ResumeResult("store_error", result.elapsed, detail=f"ratchet: {e}")
    if not advanced:
        return ResumeResult("store_error", result.elapsed, detail="credential changed meanwhile")
    return result
