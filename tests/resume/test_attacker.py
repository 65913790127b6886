"""An active network attacker between many initiators and one responder.

The attacker controls delivery: it may deliver in any order, drop, duplicate, replay anything
ever sent (from any source address), reflect a message back to its sender's side, and
modify bytes.  Time advances arbitrarily (ticks and retransmission timers fire).

Initiators offer or require ML-KEM-768 or go without; the attacker also tries to
downgrade: it strips the KE(36) payload from messages 1, 2 and 3's echo, or relabels its
method (to X25519 -- the echo's 32-byte digest then parses as a share -- or to an unknown
method).

Invariants (checked after every step):
* the responder completes a (handle, generation) at most once;
* every responder completion has an initiator completion for the same run with equal
  keys, SPIs, successor and key exchange mode;
* an initiator completes only on a message 2 the responder really sent, at most once;
* a completed initiator's keys equal the responder's whenever both completed;
* no downgrade is ever accepted: the responder allows ML-KEM, so an attempt that offered
  it completes only with ML-KEM in the run (and a PQ successor).
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from resume.credential import Credential
from resume.errors import DecodeError
from resume.events import FallbackToFullIKE, ResumptionComplete
from resume.initiator import Initiator, InitiatorConfig
from resume.kem_testing import deterministic_encapsulation
from resume.responder import Responder, ResponderConfig
from resume.states import InitiatorState
from resume.testing import MemoryTable, answer_events, simulated_full_ike
from resume.wire import (
    GROUP_CURVE25519,
    KE_MLKEM768,
    PT_KE,
    PT_RESUME_ECHO,
    decode_message_untrusted,
    encode_message,
)

N_CLIENTS = 3
SERVER = ("192.0.2.1", 500)
_ML = KE_MLKEM768.to_bytes(2, "big")


def _is_mlkem(ptype: int, body: bytes) -> bool:
    return ptype == PT_KE and body[:2] == _ML


def downgraded(data: bytes, how: str) -> bytes | None:
    """``data`` with its KE(36) payload -- or, in message 3, the echoed one -- stripped
    ("strip") or relabelled to X25519 ("x25519") or to an unknown method ("unknown"); the
    chain re-framed, the MAC left as it was.  None when there is no KE(36) payload."""
    try:
        m = decode_message_untrusted(data)
    except DecodeError:
        return None
    payloads: list[tuple[int, bytes]] = []
    changed = False
    for p in m.payloads:
        body = p.body
        if p.type == PT_RESUME_ECHO:
            inner = downgraded(body, how)
            if inner is not None:
                body, changed = inner, True
        elif _is_mlkem(p.type, body):
            changed = True
            if how == "strip":
                continue
            method = GROUP_CURVE25519 if how == "x25519" else 0x0025
            body = method.to_bytes(2, "big") + body[2:]
        payloads.append((p.type, body))
    if not changed:
        return None
    h = m.header
    return encode_message(h.spi_i, h.spi_r, h.flags, h.message_id, payloads, h.exchange_type)


@dataclass
class Client:
    addr: tuple[str, int]
    current: Credential
    previous: Credential | None = None
    attempt: Initiator | None = None
    completions: list[ResumptionComplete] = field(default_factory=list)
    #: the ML-KEM policy of each attempt that completed, beside its completion
    policies: list[str] = field(default_factory=list)


@dataclass
class Packet:
    to_responder: bool
    data: bytes
    src: tuple[str, int]  # as seen by the receiver
    client: int  # for r2i: the client it is addressed to


class AttackedNetwork(RuleBasedStateMachine):
    CONFIG = ResponderConfig(lookup_timeout=3.0)

    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000_000.0
        #: every random draw is seeded: hypothesis replays a failing run exactly
        self.draws = 0
        self.responder = Responder(
            self.CONFIG,
            b"K" * 32,
            rng=self._rng("responder"),
            encapsulate=deterministic_encapsulation(self._rng("responder kem")),
        )
        self.table = MemoryTable()
        self.clients: list[Client] = []
        for i in range(N_CLIENTS):
            cred = simulated_full_ike(self._rng(f"cred {i}"), id_i=f"\x02c{i}.example".encode())
            self.table.add(cred)
            self.clients.append(Client((f"198.51.100.{i + 1}", 500), cred))
        self.in_flight: list[Packet] = []
        self.history: list[Packet] = []
        self.r_sent: set[bytes] = set()
        self.r_completions: list[ResumptionComplete] = []
        self.i_completions: list[ResumptionComplete] = []
        self.initiator_done_on: dict[int, tuple[Initiator, bytes]] = {}
        self.downgrades = 0

    # --- plumbing ------------------------------------------------------------------------

    def _rng(self, label: str) -> Callable[[int], bytes]:
        self.draws += 1
        seed = f"{label} {self.draws}".encode()
        counter = 0

        def draw(n: int) -> bytes:
            nonlocal counter
            counter += 1
            return hashlib.sha512(seed + counter.to_bytes(8, "big")).digest()[:n]

        return draw

    def _collect(self) -> None:
        for ev in answer_events(self.responder, self.table, self.now):
            if isinstance(ev, ResumptionComplete):
                self.r_completions.append(ev)
        for data, addr in self.responder.datagrams_to_send(self.now):
            self.r_sent.add(data)
            idx = next((i for i, c in enumerate(self.clients) if c.addr == addr), -1)
            pkt = Packet(False, data, SERVER, idx)
            self.in_flight.append(pkt)
            self.history.append(pkt)
        for i, c in enumerate(self.clients):
            init = c.attempt
            if init is None:
                continue
            for data, _peer in init.datagrams_to_send(self.now):
                pkt = Packet(True, data, c.addr, i)
                self.in_flight.append(pkt)
                self.history.append(pkt)
            while (ev := init.next_event()) is not None:
                if isinstance(ev, ResumptionComplete):
                    c.completions.append(ev)
                    c.policies.append(init.config.mlkem)
                    self.i_completions.append(ev)
                    c.previous, c.current = init.credential, ev.successor
                elif isinstance(ev, FallbackToFullIKE):
                    fresh = simulated_full_ike(self._rng("full ike"), id_i=c.current.id_i)
                    self.table.add(fresh)
                    c.current, c.previous = fresh, None

    def _deliver(self, pkt: Packet) -> None:
        if pkt.to_responder:
            self.responder.receive_datagram(pkt.data, pkt.src, self.now)
        elif 0 <= pkt.client < N_CLIENTS and self.clients[pkt.client].attempt is not None:
            init = self.clients[pkt.client].attempt
            assert init is not None
            was = init.state
            init.receive_datagram(pkt.data, pkt.src, self.now)
            if was is InitiatorState.WAIT_RESPONSE and init.state is InitiatorState.DONE:
                # completion only on a message 2 the responder really produced
                assert pkt.data in self.r_sent
                assert id(init) not in self.initiator_done_on
                # keep the object alive so that its id is not reused by a later attempt
                self.initiator_done_on[id(init)] = (init, pkt.data)
        self._collect()

    # --- honest behaviour ------------------------------------------------------------------

    @rule(
        i=st.integers(0, N_CLIENTS - 1),
        x25519=st.booleans(),
        mlkem=st.sampled_from(["off", "offer", "require"]),
    )
    def start_attempt(self, i: int, x25519: bool, mlkem: str = "off") -> None:
        c = self.clients[i]
        if c.attempt is not None and c.attempt.state is InitiatorState.WAIT_RESPONSE:
            return
        c.attempt = Initiator(
            c.current,
            InitiatorConfig(use_x25519=x25519, mlkem=mlkem),
            self._rng("initiator"),
            previous=c.previous,
        )
        c.attempt.initiate(self.now)
        self._collect()

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        """Deliver any in-flight packet (arbitrary order = reordering)."""
        pkt = self.in_flight.pop(data.draw(st.integers(0, len(self.in_flight) - 1)))
        self._deliver(pkt)

    @precondition(lambda self: self.in_flight)
    @rule(rounds=st.integers(1, 4))
    def deliver_in_order(self, rounds: int) -> None:
        """An honest network for a while: everything in flight, oldest first."""
        for _ in range(rounds):
            batch, self.in_flight = self.in_flight, []
            for pkt in batch:
                self._deliver(pkt)

    @rule(dt=st.sampled_from([0.3, 1.0, 2.5, 7.0, 15.0]))
    def advance_time(self, dt: float) -> None:
        self.now += dt
        self.responder.handle_timer(self.now)
        for c in self.clients:
            if c.attempt is not None:
                c.attempt.handle_timer(self.now)
        self._collect()

    # --- attacker --------------------------------------------------------------------------

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        self.in_flight.pop(data.draw(st.integers(0, len(self.in_flight) - 1)))

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        pkt = self.in_flight[data.draw(st.integers(0, len(self.in_flight) - 1))]
        self.in_flight.append(pkt)

    @precondition(lambda self: self.history)
    @rule(data=st.data(), spoof=st.integers(-1, N_CLIENTS - 1))
    def replay(self, data: st.DataObject, spoof: int) -> None:
        """Re-inject anything ever sent, optionally from another client's address."""
        pkt = self.history[data.draw(st.integers(0, len(self.history) - 1))]
        if spoof >= 0:
            src = self.clients[spoof].addr if pkt.to_responder else SERVER
            pkt = Packet(pkt.to_responder, pkt.data, src, spoof)
        self._deliver(pkt)

    @precondition(lambda self: self.history)
    @rule(data=st.data(), victim=st.integers(0, N_CLIENTS - 1))
    def reflect(self, data: st.DataObject, victim: int) -> None:
        """Send a message to the side that sent it (or its kind)."""
        pkt = self.history[data.draw(st.integers(0, len(self.history) - 1))]
        src = SERVER if pkt.to_responder else self.clients[victim].addr
        self._deliver(Packet(not pkt.to_responder, pkt.data, src, victim))

    @precondition(lambda self: self.history)
    @rule(data=st.data(), pos=st.integers(0, 10_000), xor=st.integers(1, 255))
    def modify(self, data: st.DataObject, pos: int, xor: int) -> None:
        pkt = self.history[data.draw(st.integers(0, len(self.history) - 1))]
        b = bytearray(pkt.data)
        b[pos % len(b)] ^= xor
        self._deliver(Packet(pkt.to_responder, bytes(b), pkt.src, pkt.client))

    @precondition(lambda self: self.history)
    @rule(data=st.data(), how=st.sampled_from(["strip", "x25519", "unknown"]))
    def downgrade(self, data: st.DataObject, how: str) -> None:
        """Strip or relabel the ML-KEM payload of a message ever sent (messages 1 and 2,
        message 3's echo) and deliver it the way it was going."""
        with_ml = [(p, d) for p in self.history if (d := downgraded(p.data, how)) is not None]
        if not with_ml:
            return
        pkt, forged = with_ml[data.draw(st.integers(0, len(with_ml) - 1))]
        self.downgrades += 1
        self._deliver(Packet(pkt.to_responder, forged, pkt.src, pkt.client))

    # --- invariants --------------------------------------------------------------------------

    @invariant()
    def no_downgrade_is_accepted(self) -> None:
        for c in self.clients:
            for ev, policy in zip(c.completions, c.policies, strict=True):
                if policy != "off":  # the responder allows ML-KEM: it is always in the run
                    assert "mlkem768" in ev.ke, (policy, ev.ke)
                    assert ev.successor.lineage.is_pq

    @invariant()
    def responder_completes_each_generation_once(self) -> None:
        seen = collections.Counter((e.handle, e.generation) for e in self.r_completions)
        assert all(n == 1 for n in seen.values()), seen

    @invariant()
    def every_responder_completion_has_a_matching_initiator(self) -> None:
        for r in self.r_completions:
            matches = [
                i
                for i in self.i_completions
                if (i.handle, i.generation) == (r.handle, r.generation)
                and (i.sa.i_to_r, i.sa.r_to_i) == (r.sa.i_to_r, r.sa.r_to_i)
                and i.successor == r.successor
                and i.ke == r.ke
            ]
            assert len(matches) == 1

    @invariant()
    def initiators_complete_at_most_once(self) -> None:
        for c in self.clients:
            if c.attempt is not None:
                assert c.attempt.stats["complete"] <= 1
        keys = [(e.sa.i_to_r.encr_key, e.sa.r_to_i.encr_key) for e in self.i_completions]
        assert len(keys) == len(set(keys))  # fresh keys for every run

    @invariant()
    def table_never_holds_two_generations_of_a_chain(self) -> None:
        per_id = collections.Counter(c.id_i for c in self.table.records.values())
        # one record per client chain, plus stale chains abandoned after a fallback
        assert len(self.table.records) >= N_CLIENTS
        assert all(n >= 1 for n in per_id.values())


class AttackedNetworkWithCredentialCache(AttackedNetwork):
    """The same attacker against a responder that skips the second lookup."""

    CONFIG = ResponderConfig(lookup_timeout=3.0, credential_cache_size=4)


AttackedNetwork.TestCase.settings = settings(max_examples=80, stateful_step_count=50, deadline=None)
AttackedNetworkWithCredentialCache.TestCase.settings = settings(
    max_examples=60, stateful_step_count=50, deadline=None
)
TestAttackedNetwork = AttackedNetwork.TestCase
TestAttackedNetworkWithCredentialCache = AttackedNetworkWithCredentialCache.TestCase
