"""Kernel lifetimes anywhere in the u64 range decode (issue 21).

``ip xfrm state ... limit time-soft 4611686018427387904`` gives the kernel a lifetime in
[2^62, 2^63); the decoders raised ``ValueError`` from ``LifetimeCfg.__post_init__`` on it, so
one such SA broke every dump, get and monitor.  Every u64 value of every lifetime field of
an SA, a policy, and their expire events must now decode, and a decoded value must encode
back without error.
"""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ikeshim import netlink as nl
from ikeshim.xfrm import (
    LIFETIME_CFG,
    XFRM_POLICY_OUT,
    Algo,
    LifetimeCfg,
    Selector,
    XfrmPolicy,
    XfrmState,
    decode_event_untrusted,
    decode_policy_untrusted,
    decode_state_untrusted,
    encode_policy,
    encode_state,
)
from ikeshim.xfrm.abi import SELECTOR, XFRM_ID, XFRM_MSG_EXPIRE, XFRM_MSG_NEWPOLICY, XFRM_MSG_NEWSA
from ikeshim.xfrm.model import MAX_SECONDS

SA_LFT = SELECTOR.size + XFRM_ID.size + 16  # xfrm_usersa_info: sel, id, saddr, lft
POLICY_LFT = SELECTOR.size  # xfrm_userpolicy_info: sel, lft
U64 = st.integers(0, 2**64 - 1)


def _state() -> XfrmState:
    return XfrmState(
        "10.0.0.1", "10.0.0.2", 0x12345678, reqid=1,
        aead=Algo("rfc4106(gcm(aes))", bytes(20), 128), selector=Selector(socket.AF_INET),
    )  # fmt: skip


def _with_lifetime(payload: bytes, offset: int, values: list[int]) -> bytes:
    return payload[:offset] + LIFETIME_CFG.pack(*values) + payload[offset + LIFETIME_CFG.size :]


def _check(lt: LifetimeCfg) -> None:
    for v in (lt.soft_add_seconds, lt.hard_add_seconds, lt.soft_use_seconds,
              lt.hard_use_seconds):  # fmt: skip
        assert v is None or 0 < v < MAX_SECONDS
    LifetimeCfg(**lt.__dict__).pack()  # a decoded value is a valid value


@pytest.mark.parametrize("seconds", [2**62, 2**62 + 1, 2**63 - 1, 2**63, 2**64 - 1])
def test_issue_21_lifetimes_decode_as_unlimited(seconds: int) -> None:
    raw = _with_lifetime(encode_state(_state()), SA_LFT, [2**64 - 1] * 4 + [seconds] * 4)
    st_ = decode_state_untrusted(raw)
    assert st_.lifetime == LifetimeCfg()
    pol = encode_policy(XfrmPolicy(Selector(socket.AF_INET), XFRM_POLICY_OUT))
    assert decode_policy_untrusted(_with_lifetime(pol, POLICY_LFT, [5] * 4 + [seconds] * 4))


def test_a_finite_lifetime_is_kept() -> None:
    raw = _with_lifetime(encode_state(_state()), SA_LFT, [10, 20, 30, 40, 50, 60, 70, 2**62 - 1])
    lt = decode_state_untrusted(raw).lifetime
    assert lt == LifetimeCfg(10, 20, 30, 40, 50, 60, 70, 2**62 - 1)


@given(st.lists(U64, min_size=8, max_size=8))
def test_every_u64_lifetime_decodes_in_states_policies_and_events(values: list[int]) -> None:
    sa = _with_lifetime(encode_state(_state()), SA_LFT, values)
    _check(decode_state_untrusted(sa).lifetime)
    pol = encode_policy(XfrmPolicy(Selector(socket.AF_INET), XFRM_POLICY_OUT))
    pol = _with_lifetime(pol, POLICY_LFT, values)
    _check(decode_policy_untrusted(pol).lifetime)
    for mtype, body in ((XFRM_MSG_NEWSA, sa), (XFRM_MSG_NEWPOLICY, pol),
                        (XFRM_MSG_EXPIRE, sa[:224] + bytes(8) + sa[224:])):  # fmt: skip
        (msg,) = nl.parse_messages_untrusted(nl.encode_message(mtype, 0, 1, body))
        decode_event_untrusted(msg)
