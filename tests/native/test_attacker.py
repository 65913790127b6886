"""tests/resume/test_attacker.py's active network attacker against the native engines.

The same rules and invariants (the responder completes a generation at most once, every
responder completion has the matching initiator completion with equal keys, initiators
complete only on a message 2 the responder really sent, fresh keys every run): zero false
acceptances, with the native responder alone and with native initiators too.
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
        self.responder = native.NativeResponder(self.CONFIG, b"K" * 32)  # type: ignore[assignment]


class NativeResponderWithCredentialCacheAttacked(NativeResponderAttacked):
    CONFIG = ResponderConfig(lookup_timeout=3.0, credential_cache_size=4)


class NativeBothSidesAttacked(NativeResponderAttacked):
    @rule(i=st.integers(0, 2), x25519=st.booleans())
    def start_attempt(self, i: int, x25519: bool) -> None:
        c = self.clients[i]
        if c.attempt is not None and c.attempt.state is InitiatorState.WAIT_RESPONSE:
            return
        c.attempt = native.NativeInitiator(  # type: ignore[assignment]
            c.current, InitiatorConfig(use_x25519=x25519), previous=c.previous
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
