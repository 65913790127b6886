"""Test oracles for :mod:`resume.wire`: the layouts written declaratively with construct,
and message 2 through the generic framer.

The product decodes with ``struct`` (construct's interpreter costs tens of microseconds per
message, and the responder needs no second codec), so construct is a test dependency only:
these definitions are an independent reading of RFC 7296 3.1/3.2 that the tests hold the
product's codec to (both produce and accept exactly the same bytes).
"""

from __future__ import annotations

from typing import Any

import construct as c

from resume.errors import DecodeError
from resume.wire import (
    FLAG_RESPONSE,
    HEADER_LEN,
    MAC_LEN,
    MAX_MESSAGE_LEN,
    MAX_PAYLOADS,
    PT_KE,
    PT_NONCE,
    PT_RESUME_AUTH,
    PT_RESUME_SA,
    Header,
    Message,
    Payload,
    ResumeSA,
    encode_ke,
    encode_message,
)

HEADER = c.Struct(
    "spi_i" / c.Bytes(8),
    "spi_r" / c.Bytes(8),
    "next_payload" / c.Int8ub,
    "version" / c.Int8ub,
    "exchange_type" / c.Int8ub,
    "flags" / c.Int8ub,
    "message_id" / c.Int32ub,
    "length" / c.Int32ub,
)

GENERIC_PAYLOAD = c.Struct(
    "next_payload" / c.Int8ub,
    "flags" / c.Int8ub,
    "length" / c.Int16ub,
    "body" / c.Bytes(c.this.length - 4),
)

RESUME_SA = c.Struct(
    "spi" / c.Int32ub,
    "encr" / c.Int16ub,
    "key_bits" / c.Int16ub,
    "integ" / c.Int16ub,
    "mode" / c.Int8ub,
    "reserved" / c.Const(0, c.Int8ub),
)

KE = c.Struct("group" / c.Int16ub, "reserved" / c.Int16ub, "data" / c.GreedyBytes)

IDENTIFICATION = c.Struct("id_type" / c.Int8ub, "reserved" / c.Bytes(3), "data" / c.GreedyBytes)

NOTIFY = c.Struct(
    "protocol_id" / c.Int8ub,
    "spi_size" / c.Int8ub,
    "notify_type" / c.Int16ub,
    "spi" / c.Bytes(c.this.spi_size),
    "data" / c.GreedyBytes,
)

MESSAGE = c.Struct("header" / HEADER, "payloads" / c.GreedyRange(GENERIC_PAYLOAD))


def decode_message_construct_untrusted(data: bytes) -> Message:
    """Same contract as :func:`resume.wire.decode_message_untrusted`, via construct."""
    if len(data) < HEADER_LEN or len(data) > MAX_MESSAGE_LEN:
        raise DecodeError("bad datagram length")
    try:
        parsed: Any = MESSAGE.parse(data)
    except c.ConstructError as exc:
        raise DecodeError(str(exc)) from None
    h = parsed.header
    if h.version >> 4 != 2 or h.length != len(data):
        raise DecodeError("bad version or length")
    ptype = h.next_payload
    payloads: list[Payload] = []
    consumed = HEADER_LEN
    for p in parsed.payloads:
        if ptype == 0:
            break
        if p.length < 4 or len(payloads) >= MAX_PAYLOADS:
            raise DecodeError("bad payload")
        payloads.append(Payload(ptype, bool(p.flags & 0x80), bytes(p.body)))
        consumed += p.length
        ptype = p.next_payload
    if ptype != 0 or consumed != len(data):
        raise DecodeError("payload chain does not end at the end of the datagram")
    header = Header(
        bytes(h.spi_i),
        bytes(h.spi_r),
        h.next_payload,
        h.version,
        h.exchange_type,
        h.flags,
        h.message_id,
        h.length,
    )
    return Message(header, tuple(payloads))


def encode_message_construct(message: Message) -> bytes:
    """Build a message from its fields (C bits as given) with construct."""
    plist = []
    types = [p.type for p in message.payloads]
    for i, p in enumerate(message.payloads):
        nxt = types[i + 1] if i + 1 < len(types) else 0
        plist.append(
            {
                "next_payload": nxt,
                "flags": 0x80 if p.critical else 0,
                "length": 4 + len(p.body),
                "body": p.body,
            }
        )
    h = message.header
    total = HEADER_LEN + sum(4 + len(p.body) for p in message.payloads)
    out: bytes = MESSAGE.build(
        {
            "header": {
                "spi_i": h.spi_i,
                "spi_r": h.spi_r,
                "next_payload": types[0] if types else 0,
                "version": h.version,
                "exchange_type": h.exchange_type,
                "flags": h.flags,
                "message_id": h.message_id,
                "length": total,
            },
            "payloads": plist,
        }
    )
    return out


def build_hardened_resp_prefix_generic(
    spi_i: bytes, spi_r: bytes, sa: ResumeSA, nonce: bytes, ke: bytes | None
) -> bytes:
    """Message 2 up to its MAC through the generic framer: the reference for
    :func:`resume.wire.build_hardened_resp_prefix` (one struct)."""
    payloads = [(PT_RESUME_SA, sa.encode()), (PT_NONCE, nonce)]
    if ke is not None:
        payloads.append((PT_KE, encode_ke(ke)))
    payloads.append((PT_RESUME_AUTH, b""))
    return encode_message(spi_i, spi_r, FLAG_RESPONSE, 0, payloads, trailer=MAC_LEN)
