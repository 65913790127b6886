"""Fuzz target: every reader of kernel netlink bytes in ``ikeshim`` (XFRM replies and events).

The input is one datagram as the kernel would send it: parsed into netlink messages, each
decoded as a multicast event, fed to a dump's and a request's bookkeeping, and the raw
bytes decoded as an SA, a policy and an SA id.  The readers' documented errors are
``XfrmDecodeError`` (malformed bytes) and, from an exchange, ``XfrmError`` (the kernel said
no); anything else escaping is a finding.  A decoded SA or policy must also be a valid
value object: its lifetimes encode again (issue 21: lifetimes in [2^62, 2^63) raised).
Seeds: states, policies and events as our encoders write them, a state with the issue's
lifetime, NLMSG_ERROR/DONE replies.
"""

from __future__ import annotations

import contextlib
import socket
import struct

from ikeshim import netlink as nl
from ikeshim.errors import XfrmDecodeError, XfrmError
from ikeshim.xfrm import (
    LifetimeCfg,
    decode_event_untrusted,
    decode_policy_untrusted,
    decode_state_untrusted,
)
from ikeshim.xfrm.codec import decode_sa_id_untrusted

SEQ = 7


def _valid(lt: LifetimeCfg) -> None:
    LifetimeCfg(**lt.__dict__).pack()


def one_input(data: bytes) -> None:
    with contextlib.suppress(XfrmDecodeError):
        for msg in nl.parse_messages_untrusted(data):
            with contextlib.suppress(XfrmDecodeError):
                ev = decode_event_untrusted(msg)
                for attr in ("state", "policy"):
                    obj = getattr(ev, attr, None)
                    if obj is not None:
                        _valid(obj.lifetime)
            if msg.type == nl.NLMSG_ERROR:
                with contextlib.suppress(XfrmDecodeError):
                    err, _text = nl.decode_error_untrusted(msg)
                    assert err >= 0
    for dump, reply in ((True, False), (False, True), (False, False)):
        ex = nl.Exchange("fuzz", SEQ, dump=dump, expect_reply=reply)
        with contextlib.suppress(XfrmError):
            ex.feed_untrusted(data)
    with contextlib.suppress(XfrmDecodeError):
        _valid(decode_state_untrusted(data).lifetime)
    with contextlib.suppress(XfrmDecodeError):
        _valid(decode_policy_untrusted(data).lifetime)
    with contextlib.suppress(XfrmDecodeError):
        decode_sa_id_untrusted(data)


def seeds() -> dict[str, bytes]:
    """Named seed inputs (written to the corpus by ``python -m tests.fuzz.seeds netlink``)."""
    from ikeshim.xfrm import (
        LIFETIME_CFG,
        XFRM_POLICY_OUT,
        Algo,
        Encap,
        Mark,
        Selector,
        Template,
        XfrmPolicy,
        XfrmState,
        encode_policy,
        encode_state,
    )
    from ikeshim.xfrm.abi import (
        SELECTOR,
        XFRM_ID,
        XFRM_MSG_DELSA,
        XFRM_MSG_EXPIRE,
        XFRM_MSG_NEWPOLICY,
        XFRM_MSG_NEWSA,
        XFRMA_SA,
    )

    sa = XfrmState(
        "192.0.2.1", "192.0.2.2", 0xC0000001, reqid=1, replay_window=128,
        aead=Algo("rfc4106(gcm(aes))", bytes(range(20)), 128),
        selector=Selector.hosts("192.0.2.1", "192.0.2.2"), encap=Encap(4500, 4500),
        mark=Mark(5), if_id=9,
    )  # fmt: skip
    cbc = XfrmState(
        "2001:db8::1", "2001:db8::2", 0x1234, mode=1,
        crypt=Algo("cbc(aes)", bytes(16)), auth=Algo("hmac(sha256)", bytes(32), 128),
    )  # fmt: skip
    pol = XfrmPolicy(
        Selector.hosts("192.0.2.1", "192.0.2.2"), XFRM_POLICY_OUT,
        templates=(Template(socket.AF_INET, 0, reqid=1),),
    )  # fmt: skip
    lft = SELECTOR.size + XFRM_ID.size + 16
    huge = encode_state(sa)
    huge = huge[:lft] + LIFETIME_CFG.pack(*[2**64 - 1] * 4, *[2**62] * 4) + huge[lft + 64 :]
    pol_huge = encode_policy(pol)
    pol_huge = (
        pol_huge[: SELECTOR.size] + LIFETIME_CFG.pack(*[5] * 4, *[2**62 + 1] * 4)
        + pol_huge[SELECTOR.size + 64 :]
    )  # fmt: skip

    raw = encode_state(sa)
    expire = raw[:224] + b"\x01" + bytes(7) + raw[224:]  # xfrm_user_expire, hard, attributes

    def msg(t: int, body: bytes, flags: int = 0) -> bytes:
        return nl.encode_message(t, flags, SEQ, body)

    err = struct.pack("=i", -2) + nl.encode_message(0x10, 0, SEQ, b"")[:16]
    return {
        "newsa-gcm-natt": msg(XFRM_MSG_NEWSA, encode_state(sa)),
        "newsa-cbc-v6": msg(XFRM_MSG_NEWSA, encode_state(cbc), nl.NLM_F_MULTI),
        "issue21-sa-lifetime-2p62": msg(XFRM_MSG_NEWSA, huge),
        "issue21-policy-lifetime-2p62": msg(XFRM_MSG_NEWPOLICY, pol_huge),
        "newpolicy": msg(XFRM_MSG_NEWPOLICY, encode_policy(pol)),
        "expire": msg(XFRM_MSG_EXPIRE, expire),
        "delsa": msg(XFRM_MSG_DELSA, bytes(24) + nl.encode_attr(XFRMA_SA, huge)),
        "error-enoent": msg(nl.NLMSG_ERROR, err),
        "ack": msg(nl.NLMSG_ERROR, bytes(4) + bytes(16)),
        "done": msg(nl.NLMSG_DONE, bytes(4)),
        "dump-two": msg(XFRM_MSG_NEWSA, encode_state(sa), nl.NLM_F_MULTI)
        + msg(XFRM_MSG_NEWSA, encode_state(cbc), nl.NLM_F_MULTI)
        + msg(nl.NLMSG_DONE, bytes(4)),
        "raw-state": encode_state(sa),
        "raw-policy": encode_policy(pol),
    }
