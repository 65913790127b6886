"""Differential state machines: the Python and the native engines fed the same inputs.

Responder: two responders (Python reference, native) with the same configuration, server
secret and seeded randomness (ML-KEM encapsulation included) receive the same datagrams --
honest messages 1 and 3 from several clients with and without X25519 and ML-KEM-768,
replays from other addresses, bit flips, truncations, unusable X25519 shares and ML-KEM
keys, garbage --, the same answers (the right credential, none, a wrong one, commit ok or
failed), the same clock and timers; the credentials have different lineages and some
configurations require ML-KEM, refuse it, require a PQ lineage or have tiny ML-KEM
bounds.  After every step both must have sent the same bytes to the same addresses, emitted
equal events, kept equal counters and the same pending count and timer.

Initiator: the same, one attempt per engine, fed the responses of a Python responder and
the attacker's variations of them.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, ClassVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from resume import native
from resume import wire as wm
from resume.credential import Credential, Lineage
from resume.errors import LocalProtocolError
from resume.events import CommitNeeded, CredentialNeeded, Event
from resume.initiator import Initiator, InitiatorConfig
from resume.responder import Responder, ResponderConfig
from resume.sa import Encr, Integ, Lifetimes
from resume.testing import example_params, simulated_full_ike

SECRET = b"S" * 32
SERVER = ("192.0.2.1", 500)
ADDRS = [("198.51.100.1", 500), ("198.51.100.2", 4500), ("2001:db8::7", 500)]


def _rng(label: str) -> Any:
    return native.seeded_rng(label.encode())


class ResponderPair(RuleBasedStateMachine):
    CONFIGS: ClassVar[list[ResponderConfig]] = [
        ResponderConfig(),
        ResponderConfig(credential_cache_size=2, max_pending=3, response_cache_size=2),
        ResponderConfig(require_x25519=True, lookup_timeout=1.0, completed_cache_size=1),
        ResponderConfig(response_cache_size=1, credential_cache_size=1),
        ResponderConfig(allow_x25519=False, cookie_tick_seconds=3.0),
        ResponderConfig(require_mlkem=True, mlkem_runs_per_handle=1, response_cache_size=1),
        ResponderConfig(allow_mlkem=False, require_pq_lineage=True),
        ResponderConfig(mlkem_runs_per_tick=2, credential_cache_size=2, cookie_tick_seconds=3.0),
    ]
    LINEAGES: ClassVar[list[Lineage]] = [Lineage.CLASSICAL, Lineage.HYBRID_PQ, Lineage.UNKNOWN]

    def __init__(self) -> None:
        super().__init__()
        self.now = 1_000_000.0
        self.config: ResponderConfig | None = None
        self.py: Responder | None = None
        self.nat: native.NativeResponder | None = None
        self.creds: list[Credential] = []
        self.previous: dict[int, Credential] = {}
        self.attempts: list[tuple[int, Initiator]] = []
        self.seen: list[bytes] = []
        self.pending: list[tuple[int, Event]] = []
        self.counter = 0

    @precondition(lambda self: self.py is None)
    @rule(which=st.integers(0, 7), seed=st.integers(0, 3))
    def start(self, which: int, seed: int) -> None:
        self.config = self.CONFIGS[which]
        label = f"responder {seed}".encode()
        kem = f"kem {seed}".encode()
        self.py = Responder(
            self.config,
            SECRET,
            rng=native.seeded_rng(label),
            encapsulate=native.seeded_encapsulation(kem),
        )
        self.nat = native.NativeResponder(
            self.config, SECRET, rng=native.SeededRng(label), kem=native.SeededKem(kem)
        )
        cbc = example_params(Encr.AES_CBC, Integ.HMAC_SHA2_256_128)
        for i in range(3):
            params = cbc if i == 2 else example_params()
            cred = simulated_full_ike(_rng(f"cred {seed} {i}"), params, id_i=b"\x02c%d" % i)
            self.creds.append(dataclasses.replace(cred, lineage=self.LINEAGES[i]))

    # --- inputs ---------------------------------------------------------------------------

    def _feed(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.py is not None and self.nat is not None
        if data:
            self.seen.append(data)
        self.py.receive_datagram(data, addr, self.now)
        self.nat.receive_datagram(data, addr, self.now)
        self._compare()

    @precondition(lambda self: self.py is not None)
    @rule(
        client=st.integers(0, 2),
        x25519=st.booleans(),
        addr=st.integers(0, 2),
        mlkem=st.sampled_from(["off", "offer", "offer"]),
    )
    def message1(self, client: int, x25519: bool, addr: int, mlkem: str = "off") -> None:
        self.counter += 1
        init = Initiator(
            self.creds[client],
            InitiatorConfig(use_x25519=x25519, mlkem=mlkem),
            _rng(f"initiator {self.counter}"),
            peer=SERVER,
        )
        init.initiate(self.now)
        [(m1, _)] = init.datagrams_to_send(self.now)
        self.attempts.append((addr, init))
        self._feed(m1, ADDRS[addr])

    @precondition(lambda self: self.py is not None)
    @rule(client=st.integers(0, 2), share=st.sampled_from([bytes(32), b"\x01" + bytes(31)]))
    def low_order_share(self, client: int, share: bytes) -> None:
        """A message 1 whose X25519 share gives an all-zero secret."""
        cred = self.creds[client]
        p = cred.params
        sa = wm.ResumeSA(0x1000, int(p.encr), p.encr_key_bits, int(p.integ), 2)
        self._feed(
            wm.build_hardened_init(b"\x05" * 8, cred.handle, sa, b"\x06" * 32, share), ADDRS[client]
        )

    @precondition(lambda self: self.py is not None)
    @rule(client=st.integers(0, 2), coefficient=st.integers(0, 767), x25519=st.booleans())
    def unusable_mlkem_key(self, client: int, coefficient: int, x25519: bool) -> None:
        """A message 1 whose ML-KEM key has one coefficient >= q (FIPS 203 7.2 refuses it):
        both cores NACK it after the lookup (bad_key_share) and keep no state."""
        cred = self.creds[client]
        p = cred.params
        sa = wm.ResumeSA(0x1000, int(p.encr), p.encr_key_bits, int(p.integ), 2)
        ek = bytearray(native._require().mlkem_public(b"\x07" * 64))
        off = 3 * (coefficient // 2)
        if coefficient % 2 == 0:  # low 12 bits of the 3-byte group: 0xfff
            ek[off], ek[off + 1] = 0xFF, ek[off + 1] | 0x0F
        else:
            ek[off + 1], ek[off + 2] = ek[off + 1] | 0xF0, 0xFF
        share = native._require().x25519_public(b"\x09" * 32) if x25519 else None
        m1 = wm.build_hardened_init(b"\x05" * 8, cred.handle, sa, b"\x06" * 32, share, bytes(ek))
        self._feed(m1, ADDRS[client])

    @precondition(lambda self: self.seen)
    @rule(data=st.data(), addr=st.integers(0, 2))
    def replay(self, data: st.DataObject, addr: int) -> None:
        self._feed(data.draw(st.sampled_from(self.seen)), ADDRS[addr])

    @precondition(lambda self: self.seen)
    @rule(data=st.data(), pos=st.integers(0, 400), xor=st.integers(1, 255), cut=st.booleans())
    def modify(self, data: st.DataObject, pos: int, xor: int, cut: bool) -> None:
        b = bytearray(data.draw(st.sampled_from(self.seen)))
        b[pos % len(b)] ^= xor
        self._feed(bytes(b[: pos % len(b)] if cut else b), ADDRS[pos % 3])

    @precondition(lambda self: self.py is not None)
    @rule(junk=st.binary(max_size=120))
    def garbage(self, junk: bytes) -> None:
        self._feed(junk, ADDRS[0])

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), wrong_state=st.booleans())
    def misuse(self, data: st.DataObject, wrong_state: bool) -> None:
        """The application answers with another handle's credential, or answers a lookup
        with a commit result: both cores raise LocalProtocolError and change nothing."""
        assert self.py is not None and self.nat is not None
        _, ev = data.draw(st.sampled_from(self.pending))
        stranger = self.creds[0] if ev.handle != self.creds[0].handle else self.creds[1]
        outcomes = []
        for core in (self.py, self.nat):
            try:
                if wrong_state and isinstance(ev, CredentialNeeded):
                    core.commit_result(ev.token, True, self.now)
                elif wrong_state:
                    core.provide_credential(ev.token, None, None, self.now)
                else:
                    core.provide_credential(ev.token, stranger, None, self.now)
                outcomes.append("accepted")  # only for a slot already expired: late_answer
            except LocalProtocolError:
                outcomes.append("refused")
        assert outcomes[0] == outcomes[1]
        self._compare()

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), answer=st.sampled_from(["right", "none", "other", "old", "ok", "fail"]))
    def answer(self, data: st.DataObject, answer: str) -> None:
        assert self.py is not None and self.nat is not None
        idx = data.draw(st.integers(0, len(self.pending) - 1))
        _, ev = self.pending.pop(idx)
        if isinstance(ev, CommitNeeded):
            ok = answer != "fail"
            self.py.commit_result(ev.token, ok, self.now)
            self.nat.commit_result(ev.token, ok, self.now)
            if ok:
                for i, c in enumerate(self.creds):
                    if c.handle == ev.handle:
                        self.previous[i] = c
                        self.creds[i] = ev.successor
        else:
            assert isinstance(ev, CredentialNeeded)
            by_handle = {c.handle: c for c in [*self.creds, *self.previous.values()]}
            cred = by_handle.get(ev.handle)
            if answer == "none" or cred is None:
                cred = None
            elif answer == "other":  # same handle, other parameters: params_mismatch
                cbc = example_params(Encr.AES_CBC, Integ.HMAC_SHA2_256_128)
                other = example_params() if cred.params.encr is Encr.AES_CBC else cbc
                cred = Credential(
                    cred.mode,
                    cred.handle,
                    cred.generation,
                    cred.secret,
                    cred.id_i,
                    cred.id_r,
                    other,
                )
            elif answer == "old":  # same handle, wrong secret: MAC fails
                cred = Credential(
                    cred.mode,
                    cred.handle,
                    cred.generation,
                    b"\x00" * 32,
                    cred.id_i,
                    cred.id_r,
                    cred.params,
                )
            lt = Lifetimes(soft_seconds=100) if answer == "ok" else None
            self.py.provide_credential(ev.token, cred, lt, self.now)
            self.nat.provide_credential(ev.token, cred, lt, self.now)
        self._compare()

    def _answer_all(self, commit_ok: bool) -> None:
        assert self.py is not None and self.nat is not None
        while self.pending:
            _, ev = self.pending.pop(0)
            if isinstance(ev, CommitNeeded):
                self.py.commit_result(ev.token, commit_ok, self.now)
                self.nat.commit_result(ev.token, commit_ok, self.now)
                if commit_ok:
                    for i, c in enumerate(self.creds):
                        if c.handle == ev.handle:
                            self.previous[i] = c
                            self.creds[i] = ev.successor
            elif isinstance(ev, CredentialNeeded):
                by_handle = {c.handle: c for c in [*self.creds, *self.previous.values()]}
                cred = by_handle.get(ev.handle)
                self.py.provide_credential(ev.token, cred, None, self.now)
                self.nat.provide_credential(ev.token, cred, None, self.now)
            self._compare()

    @precondition(lambda self: self.py is not None)
    @rule(
        client=st.integers(0, 2),
        x25519=st.booleans(),
        addr=st.integers(0, 2),
        commit_ok=st.booleans(),
        interleave=st.integers(0, 2),
        mlkem=st.sampled_from(["off", "offer", "offer"]),
    )
    def honest_exchange(
        self,
        client: int,
        x25519: bool,
        addr: int,
        commit_ok: bool,
        interleave: int,
        mlkem: str,
    ) -> None:
        """A whole exchange with every request answered at once (completions happen);
        ``interleave`` other messages 1 between message 2 and 3 evict small caches."""
        self.message1(client, x25519, addr, mlkem)
        self._answer_all(commit_ok)
        _, init = self.attempts[-1]
        for k in range(interleave):
            self.message1((client + 1 + k) % 3, x25519, (addr + 1) % 3, mlkem)
            self._answer_all(commit_ok)
        for m in self.r_out[-4:]:
            init.receive_datagram(m, SERVER, self.now)
        for m3, _ in init.datagrams_to_send(self.now):
            self._feed(m3, ADDRS[addr])
        self._answer_all(commit_ok)

    @precondition(lambda self: self.attempts)
    @rule(data=st.data())
    def message3(self, data: st.DataObject) -> None:
        """An initiator that got a message 2 sends its message 3 (from its address)."""
        addr, init = data.draw(st.sampled_from(self.attempts))
        for m in self.r_out[-20:]:
            init.receive_datagram(m, SERVER, self.now)
        for m3, _ in init.datagrams_to_send(self.now):
            self._feed(m3, ADDRS[addr])

    @precondition(lambda self: self.py is not None)
    @rule(dt=st.sampled_from([0.5, 1.5, 2.5, 7.0, 13.0, 31.0]))
    def advance(self, dt: float) -> None:
        assert self.py is not None and self.nat is not None
        self.now += dt
        if self.py.get_timer() is not None:
            self.py.handle_timer(self.now)
            self.nat.handle_timer(self.now)
        self._compare()

    # --- the comparison ----------------------------------------------------------------------

    r_out: list[bytes]

    def _compare(self) -> None:
        assert self.py is not None and self.nat is not None
        out_py = self.py.datagrams_to_send(self.now)
        out_nat = self.nat.datagrams_to_send(self.now)
        assert out_nat == out_py
        self.r_out = [*self.r_out, *(d for d, _ in out_py)]
        self.seen.extend(d for d, _ in out_py)
        while True:
            a, b = self.py.next_event(), self.nat.next_event()
            assert b == a
            if a is None:
                break
            if isinstance(a, CredentialNeeded | CommitNeeded):
                self.pending.append((a.token, a))
        assert self.nat.stats == self.py.stats
        assert self.nat.pending == self.py.pending
        assert self.nat.get_timer() == self.py.get_timer()

    @invariant()
    def same_tables(self) -> None:
        if self.py is not None and self.nat is not None:
            a, b = self.nat.describe(), self.py.describe()
            assert (a["response_cache"], a["mlkem_runs"]) == (b["response_cache"], b["mlkem_runs"])


ResponderPair.r_out = []
ResponderPair.TestCase.settings = settings(max_examples=120, stateful_step_count=40, deadline=None)
TestResponderPair = ResponderPair.TestCase


class InitiatorPair(RuleBasedStateMachine):
    """A Python and a native initiator attempt with the same draws and inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 2_000_000.0
        self.py: Initiator | None = None
        self.nat: native.NativeInitiator | None = None
        self.responder = Responder(
            ResponderConfig(),
            SECRET,
            rng=_rng("responder"),
            encapsulate=native.seeded_encapsulation(b"responder kem"),
        )
        self.seen: list[bytes] = []
        self.cred = simulated_full_ike(_rng("cred"))
        self.old = Credential(
            self.cred.mode,
            b"\x01" * 16,
            0,
            self.cred.secret,
            self.cred.id_i,
            self.cred.id_r,
            self.cred.params,
        )

    @precondition(lambda self: self.py is None)
    @rule(
        x25519=st.booleans(),
        require=st.booleans(),
        previous=st.booleans(),
        retransmits=st.integers(0, 3),
        mlkem=st.sampled_from(["off", "offer", "require"]),
        responder_mlkem=st.booleans(),
    )
    def start(
        self,
        x25519: bool,
        require: bool,
        previous: bool,
        retransmits: int,
        mlkem: str,
        responder_mlkem: bool,
    ) -> None:
        if not responder_mlkem:  # the refusal is authenticated: "require" falls back
            self.responder = Responder(
                ResponderConfig(allow_mlkem=False), SECRET, rng=_rng("responder")
            )
        cur = Credential(
            self.cred.mode,
            self.cred.handle,
            1,
            self.cred.secret,
            self.cred.id_i,
            self.cred.id_r,
            self.cred.params,
        )
        cfg = InitiatorConfig(
            use_x25519=x25519,
            require_x25519=require and x25519,
            max_retransmits=retransmits,
            mlkem=mlkem,
        )
        prev = self.old if previous else None
        self.py = Initiator(cur, cfg, native.seeded_rng(b"i"), previous=prev, peer=SERVER)
        self.nat = native.NativeInitiator(
            cur, cfg, native.SeededRng(b"i"), previous=prev, peer=SERVER
        )
        self.py.initiate(self.now)
        self.nat.initiate(self.now)
        self._compare()

    def _feed(self, data: bytes) -> None:
        assert self.py is not None and self.nat is not None
        self.py.receive_datagram(data, SERVER, self.now)
        self.nat.receive_datagram(data, SERVER, self.now)
        self._compare()

    @precondition(lambda self: self.py is not None and self.sent)
    @rule(data=st.data(), credential=st.sampled_from(["right", "none", "wrong"]))
    def responder_answers(self, data: st.DataObject, credential: str) -> None:
        """A real responder answers one of the initiator's messages."""
        m = data.draw(st.sampled_from(self.sent))
        self.responder.receive_datagram(m, ("198.51.100.9", 500), self.now)
        while (ev := self.responder.next_event()) is not None:
            if isinstance(ev, CredentialNeeded):
                cred = {
                    "right": Credential(
                        self.cred.mode,
                        ev.handle,
                        1,
                        self.cred.secret,
                        self.cred.id_i,
                        self.cred.id_r,
                        self.cred.params,
                    ),
                    "none": None,
                    "wrong": Credential(
                        self.cred.mode,
                        ev.handle,
                        1,
                        b"\x09" * 32,
                        self.cred.id_i,
                        self.cred.id_r,
                        self.cred.params,
                    ),
                }[credential]
                self.responder.provide_credential(ev.token, cred, None, self.now)
            elif isinstance(ev, CommitNeeded):
                self.responder.commit_result(ev.token, True, self.now)
        for d, _ in self.responder.datagrams_to_send(self.now):
            self.seen.append(d)  # never empty
            self._feed(d)

    @precondition(lambda self: self.seen)
    @rule(data=st.data(), pos=st.integers(0, 300), xor=st.integers(0, 255))
    def attacker(self, data: st.DataObject, pos: int, xor: int) -> None:
        b = bytearray(data.draw(st.sampled_from(self.seen)))
        b[pos % len(b)] ^= xor
        self._feed(bytes(b))

    @precondition(lambda self: self.py is not None)
    @rule(dt=st.sampled_from([0.3, 0.6, 1.1, 2.0, 5.0]))
    def advance(self, dt: float) -> None:
        assert self.py is not None and self.nat is not None
        self.now += dt
        self.py.handle_timer(self.now)
        self.nat.handle_timer(self.now)
        self._compare()

    sent: list[bytes]

    def _compare(self) -> None:
        assert self.py is not None and self.nat is not None
        a = self.py.datagrams_to_send(self.now)
        b = self.nat.datagrams_to_send(self.now)
        assert b == a
        self.sent = [*self.sent, *(d for d, _ in a)]
        while True:
            x, y = self.py.next_event(), self.nat.next_event()
            assert y == x
            if x is None:
                break
        assert self.nat.state is self.py.state
        assert self.nat.credential == self.py.credential
        assert self.nat.get_timer() == self.py.get_timer()
        assert collections.Counter(self.nat.stats) == self.py.stats


InitiatorPair.sent = []
InitiatorPair.TestCase.settings = settings(max_examples=80, stateful_step_count=30, deadline=None)
TestInitiatorPair = InitiatorPair.TestCase
