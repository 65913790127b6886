"""tests/resume/test_attacker.py's active network attacker against the native engines.

The same rules and invariants (the responder completes a generation at most once, every
responder completion has the matching initiator completion with equal keys, initiators
complete only on a message 2 the responder really sent, fresh keys every run, no ML-KEM
downgrade accepted): zero false acceptances, with the native responder alone and with
native initiators too.
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

from resume import native
from resume.initiator import InitiatorConfig
from resume.responder import ResponderConfig
from resume.states import InitiatorState
from tests.resume.test_attacker import AttackedNetwork


class NativeResponderAttacked(AttackedNetwork):
    CONFIG = ResponderConfig(lookup_timeout=3.0)

    def __init__(self) -> None:
        super().__init__()
        self.responder = native.NativeResponder(  # type: ignore[assignment]
            self.CONFIG,
            b"K" * 32,
            native.SeededRng(b"responder"),
            native.SeededKem(b"responder kem"),
        )


class NativeResponderWithCredentialCacheAttacked(NativeResponderAttacked):
    CONFIG = ResponderConfig(lookup_timeout=3.0, credential_cache_size=4)


class NativeBothSidesAttacked(NativeResponderAttacked):
    @rule(
        i=st.integers(0, 2),
        x25519=st.booleans(),
        mlkem=st.sampled_from(["off", "offer", "require"]),
    )
    def start_attempt(self, i: int, x25519: bool, mlkem: str = "off") -> None:
        c = self.clients[i]
        if c.attempt is not None and c.attempt.state is InitiatorState.WAIT_RESPONSE:
            return
        self.draws += 1
        c.attempt = native.NativeInitiator(  # type: ignore[assignment]
            c.current,
            InitiatorConfig(use_x25519=x25519, mlkem=mlkem),
            native.SeededRng(b"initiator %d" % self.draws),
            previous=c.previous,
        )
        c.attempt.initiate(self.now)
        self._collect()


for machine in (
    NativeResponderAttacked,
    NativeResponderWithCredentialCacheAttacked,
    NativeBothSidesAttacked,
):
    machine.TestCase.settings = settings(max_examples=60, stateful_step_count=50, deadline=None)

TestNativeResponderAttacked = NativeResponderAttacked.TestCase
TestNativeResponderWithCredentialCacheAttacked = NativeResponderWithCredentialCacheAttacked.TestCase
TestNativeBothSidesAttacked = NativeBothSidesAttacked.TestCase
