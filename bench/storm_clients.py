"""Many resumption clients in one process: sans-I/O initiators over many UDP sockets.

Used by ``bench_storm.py``.  A failover storm needs thousands of clients that each hold a
credential, reconnect at the same moment and retransmit on their own schedule; one Python
process per client would measure the machine's process table, not the responder.  So a
few worker processes each drive a share of the clients: one ``make_initiator`` (the native
core when it is built) and one connected UDP socket per client, bound to the client's own
127.x.y.z source address (Linux routes all of 127/8 to lo, so the responder's per-source
fairness sees distinct hosts), one epoll over all sockets, and one heap of the cores'
timers.  Each initiator's retransmission and overall timeout are its own
``InitiatorConfig`` -- the client's normal schedule, nothing added here.

A client whose attempt ends in ``timeout`` (the responder was down or dropped it) starts a
new attempt at once, as a reconnecting client would; a ``nack`` is a failure (that client
would run a full IKE).  The successor is kept in memory (``successor_saved`` at once): the
durability measured here is the responder's, and the client's kept previous generation
gives the lost-message-3 retry exactly as a cache would.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import resource
import selectors
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from resume.credential import Credential
from resume.events import FallbackToFullIKE, ResumptionComplete, SaveSuccessor
from resume.initiator import InitiatorConfig
from resume.native import make_initiator

Address = tuple[str, int]
#: (handle hex, generation) of a client's current credential and of its kept previous one
Held = tuple[tuple[str, int], tuple[str, int] | None]


def client_addr(i: int) -> str:
    """A distinct loopback source per client: 127.(1+k/65536%250).(k/256%256).(1+k%254)."""
    last, rest = 1 + i % 254, i // 254
    return f"127.{1 + (rest >> 8) % 250}.{rest & 255}.{last}"


@dataclass
class Client:
    """One simulated host: its credential chain (current, kept previous) and its attempt."""

    index: int
    current: Credential
    previous: Credential | None = None
    sock: socket.socket | None = None
    ini: Any = None
    attempts: int = 0
    retransmits: int = 0
    done_at: float | None = None
    outcome: str = ""
    used_previous: bool = False

    @property
    def held(self) -> Held:
        """The credentials this client would offer next: current, then kept previous."""
        prev = self.previous
        return (
            (self.current.handle.hex(), self.current.generation),
            None if prev is None else (prev.handle.hex(), prev.generation),
        )


@dataclass
class RoundResult:
    """What one worker saw in one round: per client (index, seconds after ``t0`` it
    resumed or -1, outcome, attempts, retransmits, used its kept previous generation)."""

    rows: list[tuple[int, float, str, int, int, bool]] = field(default_factory=list)
    held: dict[int, Held] = field(default_factory=dict)
    cpu_s: float = 0.0  # this worker's CPU during the round (the clients' side)


def _raise_nofile(n: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(soft, n + 64), hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


class ClientPool:
    """A share of the clients and one event loop that drives all of their attempts."""

    def __init__(self, creds: list[tuple[int, Credential]], config: InitiatorConfig) -> None:
        self.clients = [Client(i, c) for i, c in creds]
        self.config = config
        _raise_nofile(len(self.clients))

    def _open(self, c: Client, server: Address, now: float) -> None:
        if c.sock is None:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setblocking(False)
            s.bind((client_addr(c.index), 0))
            c.sock = s
        c.sock.connect(server)  # a new target (failover) reconnects the same socket
        c.ini = make_initiator(c.current, self.config, previous=c.previous, peer=server)
        c.ini.initiate(now)
        c.attempts += 1

    def _flush(self, c: Client) -> None:
        assert c.sock is not None
        for data, _addr in c.ini.datagrams_to_send(time.time()):
            # buffer full or ICMP refused earlier: a lost datagram, the core resends
            with contextlib.suppress(OSError):
                c.sock.send(data)

    def run_round(
        self, server: Address, t0: float, deadline_s: float, window: int = 0
    ) -> RoundResult:
        """Every client makes an attempt; returns when each has resumed, been refused, or
        ``deadline_s`` (a hang bound, not a verdict) has passed.  ``window`` 0: all first
        message 1s leave together (the storm); else at most ``window`` attempts at a time
        (steady traffic).  Times are relative to ``t0`` (``time.time()`` of the
        orchestrator's zero: the restart)."""
        cpu0 = time.process_time()
        rnd = _Round(server, selectors.EpollSelector())
        for c in self.clients:
            c.done_at, c.outcome, c.attempts, c.retransmits = None, "", 0, 0
            c.used_previous = False
        rnd.waiting.extend(self.clients)
        for _ in range(window or len(self.clients)):
            if rnd.waiting:
                self._begin(rnd.waiting.popleft(), rnd)
        end = time.time() + deadline_s
        timers = rnd.timers
        while rnd.live and time.time() < end:
            wait = max(0.0, min(timers[0][0] if timers else end, end) - time.time())
            for key, _mask in rnd.sel.select(min(wait, 0.5)):
                c = key.data
                if c.index in rnd.live:
                    self._readable(c)
                    self._after(c, rnd)
            now = time.time()
            while timers and timers[0][0] <= now:
                _when, idx = heapq.heappop(timers)
                c = rnd.live.get(idx)
                if c is None:
                    continue
                deadline = c.ini.get_timer()
                if deadline is not None and deadline <= now:
                    c.ini.handle_timer(now)
                    self._after(c, rnd)
                elif deadline is not None:
                    heapq.heappush(timers, (deadline, idx))
        out = RoundResult()
        for c in self.clients:
            if c.index in rnd.live or c.outcome == "":
                c.outcome = "no_answer"
            at = -1.0 if c.done_at is None else c.done_at - t0
            out.rows.append((c.index, at, c.outcome, c.attempts, c.retransmits, c.used_previous))
            out.held[c.index] = c.held
        rnd.sel.close()
        out.cpu_s = time.process_time() - cpu0
        return out

    def _begin(self, c: Client, rnd: _Round) -> None:
        self._open(c, rnd.server, time.time())
        assert c.sock is not None
        rnd.sel.register(c.sock, selectors.EVENT_READ, c)
        rnd.live[c.index] = c
        self._flush(c)
        self._arm(c, rnd.timers)

    def _end(self, c: Client, rnd: _Round) -> None:
        """``c`` is done (resumed or refused): the next waiting client starts."""
        del rnd.live[c.index]
        rnd.sel.unregister(c.sock)
        if rnd.waiting:
            self._begin(rnd.waiting.popleft(), rnd)

    def _arm(self, c: Client, timers: list[tuple[float, int]]) -> None:
        deadline = c.ini.get_timer()
        if deadline is not None:
            heapq.heappush(timers, (deadline, c.index))

    def _readable(self, c: Client) -> None:
        assert c.sock is not None
        while True:
            try:
                data, addr = c.sock.recvfrom(2048)
            except BlockingIOError:
                return
            except OSError:
                continue  # ICMP port unreachable while the responder is down: like a loss
            c.ini.receive_datagram(data, addr, time.time())

    def _after(self, c: Client, rnd: _Round) -> None:
        """Send what the core queued and act on its event (save, success, fallback)."""
        while True:
            self._flush(c)
            ev = c.ini.next_event()
            if isinstance(ev, SaveSuccessor):
                c.ini.successor_saved(time.time())  # kept in memory (module docstring)
                continue
            break
        if isinstance(ev, ResumptionComplete):
            c.retransmits += c.ini.stats["retransmit"]
            used = c.current if ev.generation == c.current.generation else c.previous
            c.used_previous = used is not c.current
            c.previous, c.current = used, ev.successor
            c.done_at, c.outcome = time.time(), "resumed"
            self._end(c, rnd)
        elif isinstance(ev, FallbackToFullIKE):
            c.retransmits += c.ini.stats["retransmit"]
            if ev.reason == "timeout":  # reconnect: a new attempt at once
                self._open(c, rnd.server, time.time())
                self._flush(c)
                self._arm(c, rnd.timers)
            else:
                c.outcome = ev.reason
                self._end(c, rnd)
        else:
            self._arm(c, rnd.timers)


@dataclass
class _Round:
    """One round's event loop state: the epoll, the cores' timers, who is under way."""

    server: Address
    sel: selectors.BaseSelector
    timers: list[tuple[float, int]] = field(default_factory=list)
    live: dict[int, Client] = field(default_factory=dict)
    waiting: deque[Client] = field(default_factory=deque)


def worker_main(
    creds: list[tuple[int, Credential]], config: InitiatorConfig, conn: Connection
) -> None:
    """A worker process: waits for ``("round", server, t0, go_at, deadline_s, window)``
    and answers each with its :class:`RoundResult`; ``("stop",)`` ends it."""
    pool = ClientPool(creds, config)
    conn.send(("ready", os.getpid()))
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            return
        _, server, t0, go_at, deadline_s, window = msg
        delay = go_at - time.time()
        if delay > 0:
            time.sleep(delay)
        conn.send(pool.run_round(server, t0, deadline_s, window))
