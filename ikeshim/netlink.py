"""Generic netlink framing (RFC 3549 / linux/netlink.h), sans-I/O.

Why our own: the only XFRM consumer we need is small, and pyroute2 has no XFRM SA/policy
messages.  Everything that reads kernel bytes ends in ``_untrusted`` and raises only
:class:`~ikeshim.errors.XfrmDecodeError`; the request/reply bookkeeping (sequence numbers,
multi-part dumps, acks, NLMSG_ERROR) lives in :class:`Exchange` so that the blocking socket
and the trio socket share it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from ikeshim.errors import XfrmDecodeError, XfrmError, xfrm_error

NETLINK_XFRM = 6
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
# Flags on NLMSG_ERROR replies (extended ack).
NLM_F_CAPPED = 0x100
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1

NLMSGHDR = struct.Struct("=IHHII")
NLATTR = struct.Struct("=HH")
NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF
_ERR = struct.Struct("=i")


def align4(n: int) -> int:
    return (n + 3) & ~3


@dataclass(frozen=True)
class NetlinkMessage:
    """One parsed message: header fields and the payload (without the header)."""

    type: int
    flags: int
    seq: int
    pid: int
    payload: bytes = field(repr=False)


def encode_message(msg_type: int, flags: int, seq: int, payload: bytes, pid: int = 0) -> bytes:
    length = NLMSGHDR.size + len(payload)
    return (
        NLMSGHDR.pack(length, msg_type, flags, seq, pid)
        + payload
        + b"\0" * (align4(length) - length)
    )


def encode_attr(attr_type: int, value: bytes) -> bytes:
    length = NLATTR.size + len(value)
    return NLATTR.pack(length, attr_type) + value + b"\0" * (align4(length) - length)


def parse_messages_untrusted(data: bytes | memoryview) -> list[NetlinkMessage]:
    """Split one datagram into netlink messages; any inconsistency is an XfrmDecodeError."""
    view = memoryview(data)
    out: list[NetlinkMessage] = []
    off = 0
    total = len(view)
    while off < total:
        if total - off < NLMSGHDR.size:
            raise XfrmDecodeError(f"truncated netlink header at offset {off}")
        length, mtype, flags, seq, pid = NLMSGHDR.unpack_from(view, off)
        if length < NLMSGHDR.size or off + length > total:
            raise XfrmDecodeError(f"bad netlink message length {length} at offset {off}")
        out.append(
            NetlinkMessage(mtype, flags, seq, pid, bytes(view[off + NLMSGHDR.size : off + length]))
        )
        off += align4(length)
    return out


def iter_attrs_untrusted(data: bytes | memoryview, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """Yield (type, value) of each netlink attribute from ``offset`` on."""
    view = memoryview(data)
    total = len(view)
    off = offset
    while off < total:
        if total - off < NLATTR.size:
            # The kernel pads to 4 bytes; a shorter tail of zeros is padding, anything else not.
            if any(view[off:]):
                raise XfrmDecodeError("truncated netlink attribute header")
            return
        length, atype = NLATTR.unpack_from(view, off)
        if length < NLATTR.size or off + length > total:
            raise XfrmDecodeError(f"bad netlink attribute length {length} (type {atype})")
        yield atype & NLA_TYPE_MASK, bytes(view[off + NLATTR.size : off + length])
        off += align4(length)


def decode_error_untrusted(msg: NetlinkMessage) -> tuple[int, str | None]:
    """Return (positive errno or 0 for an ACK, extended-ack message) of an NLMSG_ERROR."""
    p = msg.payload
    if len(p) < _ERR.size:
        raise XfrmDecodeError("truncated NLMSG_ERROR")
    (err,) = _ERR.unpack_from(p, 0)
    if err > 0 or err < -4095:
        raise XfrmDecodeError(f"NLMSG_ERROR with impossible error code {err}")
    text: str | None = None
    if msg.flags & NLM_F_ACK_TLVS:
        if len(p) < _ERR.size + NLMSGHDR.size:
            raise XfrmDecodeError("truncated NLMSG_ERROR echo header")
        echoed_len = NLMSGHDR.unpack_from(p, _ERR.size)[0]
        start = _ERR.size + (NLMSGHDR.size if msg.flags & NLM_F_CAPPED else align4(echoed_len))
        if start > len(p):
            raise XfrmDecodeError("NLMSG_ERROR echo longer than the message")
        for atype, value in iter_attrs_untrusted(p, start):
            if atype == NLMSGERR_ATTR_MSG:
                text = value.split(b"\0", 1)[0].decode("utf-8", "replace")
    return -err, text


class Exchange:
    """Bookkeeping of one request: which replies belong to it and when it is finished.

    Feed every datagram received on the socket to :meth:`feed_untrusted`; it returns True
    when the request is complete.  Replies for other sequence numbers (stale replies of an
    abandoned request) are ignored.  A dump collects messages until NLMSG_DONE; a
    non-dump request with NLM_F_ACK finishes on the ACK (NLMSG_ERROR with error 0) or on
    the single reply of a GET.
    """

    def __init__(self, op: str, seq: int, *, dump: bool, expect_reply: bool) -> None:
        self.op = op
        self.seq = seq
        self.dump = dump
        self.expect_reply = expect_reply
        self.messages: list[NetlinkMessage] = []
        self.done = False
        self.datagrams = 0

    def feed_untrusted(self, data: bytes | memoryview) -> bool:
        self.datagrams += 1
        for msg in parse_messages_untrusted(data):
            # The kernel addresses replies to our port id; the sequence number is what
            # distinguishes this request's replies from a stale one's.
            if msg.seq != self.seq:
                continue
            if self.done:
                continue
            if msg.type == NLMSG_ERROR:
                err, text = decode_error_untrusted(msg)
                if err:
                    self.done = True
                    raise xfrm_error(self.op, err, text)
                if self.dump:
                    raise XfrmDecodeError(f"ACK in the middle of a dump ({self.op})")
                self.done = True
            elif msg.type == NLMSG_DONE:
                if not self.dump:
                    raise XfrmDecodeError(f"NLMSG_DONE for a non-dump request ({self.op})")
                self.done = True
            elif msg.type == NLMSG_OVERRUN:
                raise XfrmError(self.op, 0, "netlink overrun: replies were lost")
            elif msg.type == NLMSG_NOOP:
                continue
            else:
                if self.dump and not msg.flags & NLM_F_MULTI:
                    raise XfrmDecodeError(f"dump reply without NLM_F_MULTI ({self.op})")
                self.messages.append(msg)
                if not self.dump and self.expect_reply:
                    # A GET answers with one message and no ACK.
                    self.done = True
        return self.done
