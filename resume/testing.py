"""In-process plumbing for tests, the demo and benchmarks (h11's ConnectionPair idea).

``MemoryTable`` plays the responder's store (lookup + compare-and-set ratchet commit),
``answer_events`` plays the application loop that answers the responder's requests,
``answer_save`` plays the initiator's application saving the successor (write-ahead), and
``ConnectionPair`` moves datagrams between an initiator and a responder, with an optional
loss filter, advancing a simulated clock through the initiator's timers.  Nothing here
touches a socket or a database, and the protocol only ever sees the simulated clock;
``ConnectionPair`` reads ``time.perf_counter`` for one thing only, the CPU time each side
spent (the demo's figures), never to decide anything.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from resume import keyschedule as ks
from resume.credential import Credential, ProtocolMode
from resume.events import (
    Address,
    CommitNeeded,
    CredentialNeeded,
    Event,
    SaveSuccessor,
)
from resume.initiator import Initiator
from resume.responder import Responder, ResponderConfig
from resume.sa import (
    DirectionKeys,
    Encr,
    Integ,
    Lifetimes,
    Mode,
    SAParams,
    TrafficSelector,
)

CLIENT_ADDR: Address = ("198.51.100.7", 500)
SERVER_ADDR: Address = ("192.0.2.1", 500)


def example_params(encr: Encr = Encr.AES_GCM_16, integ: Integ = Integ.NONE) -> SAParams:
    """A typical road-warrior tunnel (documentation addresses)."""
    return SAParams(
        mode=Mode.TUNNEL,
        encr=encr,
        encr_key_bits=256,
        integ=integ,
        initiator_addr=CLIENT_ADDR[0],
        responder_addr=SERVER_ADDR[0],
        tsi=(TrafficSelector.host("10.8.0.7"),),
        tsr=(TrafficSelector.from_network("10.0.0.0/16"),),
    )


def simulated_full_ike(
    rng: Callable[[int], bytes] = os.urandom,
    params: SAParams | None = None,
    id_i: bytes = b"\x02client.example.org",
    id_r: bytes = b"\x02vpn.example.org",
    mode: ProtocolMode = ProtocolMode.HARDENED,
) -> Credential:
    """The credential both peers would harvest after a full IKE (random CHILD_SA keys)."""
    p = params if params is not None else example_params()
    i2r = DirectionKeys(ks.esp_spi_from(rng(4)), rng(p.encr_key_len), rng(p.integ.key_len))
    r2i = DirectionKeys(ks.esp_spi_from(rng(4)), rng(p.encr_key_len), rng(p.integ.key_len))
    if mode is ProtocolMode.PAPER:
        return ks.bootstrap_paper_credential(p, i2r, r2i, id_i, id_r)
    return ks.bootstrap_credential(p, i2r, r2i, id_i, id_r)


@dataclass
class MemoryTable:
    """Responder-side credential table: lookup by handle, compare-and-set commit."""

    records: dict[bytes, Credential] = field(default_factory=dict)
    lifetimes: Lifetimes = field(default_factory=Lifetimes)
    available: bool = True  # False simulates a store outage (fail closed)
    commits: int = 0

    def add(self, cred: Credential) -> None:
        self.records[cred.handle] = cred

    def lookup(self, handle: bytes) -> Credential | None:
        if not self.available:
            return None
        return self.records.get(handle)

    def commit(self, handle: bytes, generation: int, successor: Credential) -> bool:
        """Replace generation ``generation`` of ``handle`` by ``successor``, atomically."""
        cur = self.records.get(handle) if self.available else None
        if cur is None or cur.generation != generation:
            return False
        del self.records[handle]
        self.records[successor.handle] = successor
        self.commits += 1
        return True


def answer_events(responder: Responder, table: MemoryTable, now: float) -> list[Event]:
    """Answer every pending request from ``table``; return the other events."""
    out: list[Event] = []
    while (ev := responder.next_event()) is not None:
        if isinstance(ev, CredentialNeeded):
            cred = table.lookup(ev.handle)
            responder.provide_credential(ev.token, cred, table.lifetimes, now)
        elif isinstance(ev, CommitNeeded):
            ok = table.commit(ev.handle, ev.generation, ev.successor)
            responder.commit_result(ev.token, ok, now)
        else:
            out.append(ev)
    return out


def answer_save(initiator: Initiator, now: float, ok: bool = True) -> list[Event]:
    """Answer the initiator's pending ``SaveSuccessor`` (saved, or with ``ok`` False failed);
    return every event it had queued.  Nothing is durable here: in-process tests only."""
    events = drain(initiator)
    if any(isinstance(e, SaveSuccessor) for e in events):
        if ok:
            initiator.successor_saved(now)
        else:
            initiator.successor_save_failed(now)
    return events


def drain(conn: Initiator | Responder) -> list[Event]:
    out: list[Event] = []
    while (ev := conn.next_event()) is not None:
        out.append(ev)
    return out


# "i2r"/"r2i" and the datagram; return False to drop it.
LossFilter = Callable[[str, bytes], bool]


@dataclass
class ConnectionPair:
    """One responder and its table; runs initiators against it in-process."""

    responder: Responder
    table: MemoryTable
    client_addr: Address = CLIENT_ADDR
    #: CPU-ish wall time spent inside each side (perf_counter; for demo figures, not tests).
    responder_seconds: float = 0.0
    initiator_seconds: float = 0.0

    @classmethod
    def create(
        cls,
        config: ResponderConfig | None = None,
        server_secret: bytes | None = None,
    ) -> ConnectionPair:
        secret = server_secret if server_secret is not None else os.urandom(32)
        return cls(Responder(config or ResponderConfig(), secret), MemoryTable())

    def run(
        self,
        initiator: Initiator,
        now: float,
        keep: LossFilter | None = None,
        max_steps: int = 64,
        save_ok: bool = True,
    ) -> tuple[list[Event], list[Event], float]:
        """Run one attempt to quiescence: (initiator events, responder events, end time).

        The initiator's ``SaveSuccessor`` is answered at once (``save_ok`` False: failed).
        """
        i_events: list[Event] = []
        r_events: list[Event] = []
        clock = time.perf_counter
        t0 = clock()
        initiator.initiate(now)
        self.initiator_seconds += clock() - t0
        for _ in range(max_steps):
            moved = False
            for data, _addr in initiator.datagrams_to_send(now):
                moved = True
                if keep is None or keep("i2r", data):
                    t0 = clock()
                    self.responder.receive_datagram(data, self.client_addr, now)
                    r_events += answer_events(self.responder, self.table, now)
                    self.responder_seconds += clock() - t0
            for data, _addr in self.responder.datagrams_to_send(now):
                moved = True
                if keep is None or keep("r2i", data):
                    t0 = clock()
                    initiator.receive_datagram(data, SERVER_ADDR, now)
                    self.initiator_seconds += clock() - t0
            t0 = clock()
            new = answer_save(initiator, now, save_ok)
            self.initiator_seconds += clock() - t0
            i_events += new
            if any(isinstance(e, SaveSuccessor) for e in new):
                moved = True  # message 3 (or nothing, after a failed save) is queued now
            if moved:
                continue
            timer = initiator.get_timer()
            if timer is None:
                break
            now = max(now, timer)
            initiator.handle_timer(now)
            self.responder.handle_timer(now)
        return i_events, r_events, now
