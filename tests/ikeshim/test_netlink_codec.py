"""Netlink/XFRM codec on the host: layouts, encode->decode round trips, fuzzed replies."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ikeshim import netlink as nl
from ikeshim.errors import (
    XfrmDecodeError,
    XfrmError,
    XfrmExistsError,
    XfrmNotFoundError,
    XfrmPermissionError,
)
from ikeshim.xfrm import (
    USERSA_INFO,
    XFRM_MODE_TUNNEL,
    XFRM_MSG_NEWSA,
    XFRM_POLICY_OUT,
    Algo,
    Encap,
    LifetimeCfg,
    Mark,
    Selector,
    Template,
    XfrmPolicy,
    XfrmState,
    decode_event_untrusted,
    decode_policy_untrusted,
    decode_state_untrusted,
    encode_policy,
    encode_state,
)
from tests.conftest import require
from tests.ikeshim.caps import run_without_net_admin

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _state(**kw: object) -> XfrmState:
    base: dict[str, object] = dict(
        src="10.0.0.1",
        dst="10.0.0.2",
        spi=0x12345678,
        reqid=9,
        replay_window=32,
        aead=Algo("rfc4106(gcm(aes))", bytes(range(20)), 128),
        selector=Selector(socket.AF_INET),
    )
    base.update(kw)
    return XfrmState(**base)  # type: ignore[arg-type]


def test_usersa_info_layout_matches_the_kernel_abi() -> None:
    raw = encode_state(_state())
    # xfrm_usersa_info is 224 bytes on 64-bit ABIs; SPI in network order at offset 56+16.
    assert USERSA_INFO.size == 224
    assert raw[72:76] == bytes.fromhex("12345678")
    assert raw[76] == 50  # IPPROTO_ESP
    assert raw[80:84] == socket.inet_aton("10.0.0.1")  # saddr
    assert struct.unpack_from("=I", raw, 208)[0] == 9  # reqid
    assert struct.unpack_from("=H", raw, 212)[0] == socket.AF_INET
    assert raw[215] == 32  # legacy replay window


def test_large_replay_window_uses_the_esn_attribute() -> None:
    raw = encode_state(_state(replay_window=128))
    assert raw[215] == 0  # kernel rejects a legacy window together with XFRMA_REPLAY_ESN_VAL
    assert decode_state_untrusted(raw).replay_window == 128


def test_seconds_unlimited_is_zero_not_xfrm_inf() -> None:
    raw = LifetimeCfg(hard_bytes=5).pack()
    vals = struct.unpack("=8Q", raw)
    assert vals[0] == 2**64 - 1 and vals[1] == 5
    assert vals[4:] == (0, 0, 0, 0)
    with pytest.raises(ValueError):
        LifetimeCfg(hard_add_seconds=0)


addrs4 = st.ip_addresses(v=4).map(str)
addrs6 = st.ip_addresses(v=6).map(str)


@st.composite
def states(draw: st.DrawFn) -> XfrmState:
    v6 = draw(st.booleans())
    a = addrs6 if v6 else addrs4
    src, dst = draw(a), draw(a)
    aead = draw(st.booleans())
    secs = st.none() | st.integers(1, 2**40)
    counts = st.none() | st.integers(0, 2**63)
    return XfrmState(
        src=src,
        dst=dst,
        spi=draw(st.integers(0, 2**32 - 1)),
        mode=draw(st.sampled_from([0, 1])),
        reqid=draw(st.integers(0, 2**32 - 1)),
        replay_window=draw(st.integers(0, 4096)),
        selector=Selector.hosts(src, dst, draw(st.integers(0, 255))),
        aead=Algo("rfc4106(gcm(aes))", draw(st.binary(min_size=20, max_size=36)), 128)
        if aead
        else None,
        crypt=None if aead else Algo("cbc(aes)", draw(st.binary(min_size=16, max_size=32))),
        auth=None if aead else Algo("hmac(sha256)", draw(st.binary(min_size=32, max_size=32)), 128),
        encap=draw(st.none() | st.builds(Encap, st.integers(0, 65535), st.integers(0, 65535))),
        lifetime=LifetimeCfg(*[draw(counts) for _ in range(4)], *[draw(secs) for _ in range(4)]),
        mark=draw(
            st.none() | st.builds(Mark, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
        ),
        if_id=draw(st.none() | st.integers(0, 2**32 - 1)),
        esn=draw(st.booleans()),
    )


@given(states())
def test_state_encode_decode_round_trip(s: XfrmState) -> None:
    assert decode_state_untrusted(encode_state(s)) == s


@given(st.integers(0, 2), st.integers(0, 2**32 - 1), addrs4, addrs4, st.integers(0, 32))
def test_policy_encode_decode_round_trip(d: int, prio: int, a: str, b: str, plen: int) -> None:
    pol = XfrmPolicy(
        selector=Selector(socket.AF_INET, b, a, plen, 32, 17, 53, 0xFFFF, 0, 0),
        dir=d,
        priority=prio,
        templates=(
            Template(socket.AF_INET, XFRM_MODE_TUNNEL, 5, dst=b, src=a),
            Template(socket.AF_INET, 0, 6),
        ),
        mark=Mark(1, 2),
        if_id=3,
    )
    assert decode_policy_untrusted(encode_policy(pol)) == pol


def _reply(payload: bytes, seq: int = 7, mtype: int = XFRM_MSG_NEWSA, flags: int = 0) -> bytes:
    return nl.encode_message(mtype, flags, seq, payload)


def _error(err: int, seq: int = 7, text: str | None = None) -> bytes:
    body = struct.pack("=i", -err) + nl.NLMSGHDR.pack(16, XFRM_MSG_NEWSA, 5, seq, 0)
    flags = nl.NLM_F_CAPPED
    if text is not None:
        flags |= nl.NLM_F_ACK_TLVS
        body += nl.encode_attr(nl.NLMSGERR_ATTR_MSG, text.encode() + b"\0")
    return nl.encode_message(nl.NLMSG_ERROR, flags, seq, body)


def test_exchange_maps_errno_to_typed_errors_with_kernel_text() -> None:
    for err, cls in (
        (errno.EPERM, XfrmPermissionError),
        (errno.ENOENT, XfrmNotFoundError),
        (errno.ESRCH, XfrmNotFoundError),
        (errno.EEXIST, XfrmExistsError),
        (errno.EINVAL, XfrmError),
    ):
        ex = nl.Exchange("add SA", 7, dump=False, expect_reply=False)
        with pytest.raises(cls) as info:
            ex.feed_untrusted(_error(err, text="Invalid thing"))
        assert info.value.errno == err
        assert "Invalid thing" in str(info.value)
    with pytest.raises(XfrmPermissionError, match="CAP_NET_ADMIN"):
        nl.Exchange("add SA", 7, dump=False, expect_reply=False).feed_untrusted(_error(errno.EPERM))


def test_exchange_ack_dump_and_stale_replies() -> None:
    ex = nl.Exchange("add SA", 7, dump=False, expect_reply=False)
    assert not ex.feed_untrusted(_error(0, seq=6))  # a stale reply is ignored
    assert ex.feed_untrusted(_error(0))
    payload = encode_state(_state())
    dump = nl.Exchange("dump SAs", 7, dump=True, expect_reply=False)
    assert not dump.feed_untrusted(_reply(payload, flags=nl.NLM_F_MULTI) * 3)
    assert dump.feed_untrusted(nl.encode_message(nl.NLMSG_DONE, nl.NLM_F_MULTI, 7, b"\0" * 4))
    assert len(dump.messages) == 3 and dump.datagrams == 2


def test_dump_reply_without_multi_flag_is_a_decode_error() -> None:
    dump = nl.Exchange("dump SAs", 7, dump=True, expect_reply=False)
    with pytest.raises(XfrmDecodeError):
        dump.feed_untrusted(_reply(encode_state(_state())))


def _feed_and_decode(ex: nl.Exchange, data: bytes) -> None:
    """Feed ``data`` and decode what it delivered: a value, or XfrmDecodeError (the one
    error of the decoders).  A *well-formed* NLMSG_ERROR carrying an errno, or
    NLMSG_OVERRUN, for this request's sequence number is the kernel's answer: it is raised
    as that typed error, never as a decode failure in disguise."""
    try:
        ex.feed_untrusted(data)
        for m in ex.messages:
            decode_state_untrusted(m.payload)
    except XfrmDecodeError:
        pass
    except XfrmError as e:
        assert e.errno != 0 or "overrun" in str(e), e


@given(st.binary(max_size=600))
def test_garbage_datagrams_raise_only_decode_errors(data: bytes) -> None:
    for dump in (True, False):
        ex = nl.Exchange("dump SAs", 7, dump=dump, expect_reply=not dump)
        _feed_and_decode(ex, data)


@given(st.binary(max_size=700), st.integers(0x10, 0x20))
def test_garbage_payloads_raise_only_decode_errors(data: bytes, mtype: int) -> None:
    for decode in (decode_state_untrusted, decode_policy_untrusted):
        with contextlib.suppress(XfrmDecodeError):
            decode(data)
    with contextlib.suppress(XfrmDecodeError):
        decode_event_untrusted(nl.NetlinkMessage(mtype, 0, 0, 0, data))


@given(st.data())
def test_mutated_real_replies_raise_only_decode_errors(data: st.DataObject) -> None:
    """Bit flips and truncations of a well-formed reply: decoded or one typed error."""
    raw = bytearray(
        _reply(
            encode_state(_state(encap=Encap(4500, 4500), mark=Mark(1), if_id=2, replay_window=300)),
            flags=nl.NLM_F_MULTI,
        )
    )
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    ex = nl.Exchange("dump SAs", 7, dump=True, expect_reply=False)
    _feed_and_decode(ex, bytes(raw[:cut]))


def test_permission_error_on_the_host_kernel_without_cap_net_admin() -> None:
    """The host kernel has XFRM (not ESP): enough to see the EPERM path for real."""
    require(os.geteuid() == 0 and shutil.which("setpriv") is not None, "root and setpriv")
    code = (
        "from ikeshim.xfrm import XfrmSocket\n"
        "from ikeshim.errors import XfrmPermissionError\n"
        "try:\n"
        "    XfrmSocket().dump_policies()\n"
        "except XfrmPermissionError as e:\n"
        "    print('PERM', e)\n"
    )
    out = run_without_net_admin(code, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    assert out.stdout.startswith("PERM"), (out.stdout, out.stderr)
    assert "CAP_NET_ADMIN / root" in out.stdout


_ = XFRM_POLICY_OUT


def test_recv_reply_refuses_a_datagram_longer_than_the_buffer() -> None:
    from ikeshim.xfrm.client import recv_reply

    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b:
        a.send(b"\x01" * 100)
        a.send(b"\x02" * 5000)
        buf = bytearray(4096)
        assert bytes(recv_reply(b, buf, "t")) == b"\x01" * 100
        with pytest.raises(XfrmError) as info:
            recv_reply(b, buf, "dump SAs")
        assert info.value.errno == errno.EMSGSIZE and "5000 bytes" in str(info.value)


def test_sa_dump_filter_encodes_struct_xfrm_address_filter() -> None:
    from ikeshim.xfrm.codec import encode_sa_dump_filter

    raw = encode_sa_dump_filter("192.0.2.1", "192.0.2.2")
    (atype, value), = nl.iter_attrs_untrusted(raw)
    assert atype == 26 and len(value) == 36
    assert value[:4] == bytes([192, 0, 2, 1]) and value[16:20] == bytes([192, 0, 2, 2])
    assert struct.unpack_from("=HBB", value, 32) == (socket.AF_INET, 32, 32)
    raw6 = encode_sa_dump_filter("2001:db8::1", "2001:db8::2")
    assert struct.unpack_from("=HBB", raw6, 4 + 32) == (socket.AF_INET6, 128, 128)
    with pytest.raises(ValueError):
        encode_sa_dump_filter("192.0.2.1", "2001:db8::2")
