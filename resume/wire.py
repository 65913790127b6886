"""IKEv2 framing of the resumption exchange (RFC 7296 section 3.1 header, 3.2 payload headers).

Why IKEv2 framing for a private exchange: tshark/Wireshark and every IKE-aware middlebox
already dissect the 28-byte header and the generic payload chain, the NAT-T non-ESP marker
(RFC 3948) works unchanged on port 4500, and an IKE daemon can demultiplex our packets by
exchange type.  The exchange type and the payload/notify numbers we add come from the
private-use ranges of the IANA "IKEv2 Parameters" registry.

This module is the ``struct`` fast path the responder runs for every datagram.  The same
layouts are written with construct in :mod:`resume.wire_construct` (readable, used by the
docs and the tests, which prove both agree).  Every function that reads network bytes ends in
``_untrusted`` and raises only :class:`~resume.errors.DecodeError`, whatever the input.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from resume.errors import DecodeError

#: Private-use exchange type (RFC 7296 3.1: 240-255 are private use).
EXCHANGE_IKE_RESUME = 240
#: IKE major version 2, minor 0.
IKE_VERSION = 0x20

#: Header flags (RFC 7296 3.1): Initiator (bit 3), Version (bit 4), Response (bit 5).
FLAG_INITIATOR = 0x08
FLAG_VERSION = 0x10
FLAG_RESPONSE = 0x20

#: Payload types.  Standard ones are reused so dissectors show them; the rest are private use
#: (RFC 7296 3.2: 128-255).
PT_NONE = 0
PT_KE = 34
PT_IDI = 35
PT_IDR = 36
PT_NONCE = 40
PT_NOTIFY = 41
PT_RESUME_HANDLE = 240
PT_RESUME_SA = 241
PT_RESUME_AUTH = 242
PT_RESUME_ECHO = 243

#: Private-use error notify type (RFC 7296 3.10.1: 8192-16383): "resumption refused, run a full
#: IKE".  Sent, identical, for every failure reason.
NOTIFY_RESUMPTION_REFUSED = 8240

HEADER_LEN = 28
PAYLOAD_HEADER_LEN = 4
#: No resumption message has more than five payloads; a bound keeps hostile chains cheap.
MAX_PAYLOADS = 8
#: Largest datagram we parse (a message 3 is about 210 bytes; this leaves room for long IDs).
MAX_MESSAGE_LEN = 2048

#: NAT-T framing on UDP 4500 (RFC 3948 section 2.2): IKE messages start with four zero bytes.
NON_ESP_MARKER = b"\x00\x00\x00\x00"

_HEADER = struct.Struct(">8s8sBBBBII")
_new_tuple = tuple.__new__
_PAYLOAD_HEADER = struct.Struct(">BBH")


class Header(NamedTuple):
    """The fixed IKEv2 header (RFC 7296 3.1).  (NamedTuples: built per datagram, and a
    frozen dataclass costs several times more to construct.)"""

    spi_i: bytes
    spi_r: bytes
    next_payload: int
    version: int
    exchange_type: int
    flags: int
    message_id: int
    length: int

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_RESPONSE)

    @property
    def from_initiator(self) -> bool:
        return bool(self.flags & FLAG_INITIATOR)


class Payload(NamedTuple):
    """One payload: its type (carried in the previous header's Next Payload), C bit, body."""

    type: int
    critical: bool
    body: bytes


class Message(NamedTuple):
    header: Header
    payloads: tuple[Payload, ...]


def _header_untrusted(data: bytes) -> Header:
    n = len(data)
    if n < HEADER_LEN:
        raise DecodeError(f"datagram of {n} bytes is shorter than an IKE header")
    if n > MAX_MESSAGE_LEN:
        raise DecodeError(f"datagram of {n} bytes exceeds {MAX_MESSAGE_LEN}")
    # tuple.__new__ builds the NamedTuple straight from the unpacked fields (no Python frame)
    h = _new_tuple(Header, _HEADER.unpack_from(data, 0))
    if h[3] >> 4 != 2:
        raise DecodeError(f"IKE major version {h[3] >> 4} is not 2")
    if h[7] != n:
        raise DecodeError(f"header length {h[7]} != datagram length {n}")
    return h


def peek_header_untrusted(data: bytes) -> Header:
    """Parse only the 28-byte header (for demultiplexing before any other work)."""
    try:
        return _header_untrusted(bytes(data))
    except DecodeError:
        raise
    except (struct.error, TypeError, ValueError) as exc:
        raise DecodeError(f"bad header: {exc}") from None


def decode_chain_untrusted(data: bytes) -> tuple[Header, tuple[int, ...], list[bytes]]:
    """Header, payload types in order and payload bodies: the responder's hot path (no
    per-payload objects).  Same checks as :func:`decode_message_untrusted`."""
    try:
        data = bytes(data)
        header = _header_untrusted(data)
        n = header[7]
        off = HEADER_LEN
        np_ = header[2]
        types: list[int] = []
        bodies: list[bytes] = []
        unpack = _PAYLOAD_HEADER.unpack_from
        while np_:  # PT_NONE ends the chain
            if len(types) >= MAX_PAYLOADS:
                raise DecodeError("too many payloads")
            if off + PAYLOAD_HEADER_LEN > n:
                raise DecodeError(f"payload {len(types)} header runs past the end")
            nxt, _cflags, plen = unpack(data, off)
            end = off + plen
            if plen < PAYLOAD_HEADER_LEN or end > n:
                raise DecodeError(f"payload {len(types)} length {plen} out of bounds")
            types.append(np_)
            bodies.append(data[off + PAYLOAD_HEADER_LEN : end])
            np_ = nxt
            off = end
        if off != n:
            raise DecodeError(f"{n - off} bytes after the last payload")
        return header, tuple(types), bodies
    except DecodeError:
        raise
    except (struct.error, TypeError, ValueError) as exc:
        raise DecodeError(f"malformed message: {exc}") from None


def decode_message_untrusted(data: bytes) -> Message:
    """Header plus the generic payload chain; bodies are left uninterpreted.

    Strict where RFC 7296 is strict (lengths, chain ends exactly at the end of the datagram)
    and bounded (at most ``MAX_PAYLOADS`` payloads).
    """
    header, types, bodies = decode_chain_untrusted(data)
    data = bytes(data)
    payloads = []
    off = HEADER_LEN
    for t, body in zip(types, bodies, strict=True):
        payloads.append(Payload(t, bool(data[off + 1] & 0x80), body))
        off += PAYLOAD_HEADER_LEN + len(body)
    return Message(header, tuple(payloads))


def encode_message(
    spi_i: bytes,
    spi_r: bytes,
    flags: int,
    message_id: int,
    payloads: Sequence[tuple[int, bytes]],
    exchange_type: int = EXCHANGE_IKE_RESUME,
    trailer: int = 0,
) -> bytes:
    """Frame ``payloads`` (type, body) into a message; the C bit is never set.

    ``trailer`` bytes are counted in the header's and the last payload's length but not
    written: the caller appends them (a MAC computed over the returned prefix).
    """
    if len(spi_i) != 8 or len(spi_r) != 8:
        raise ValueError("IKE SPIs are 8 bytes")
    if not payloads and trailer:
        raise ValueError("a trailer belongs to the last payload")
    parts: list[bytes] = []
    total = HEADER_LEN + trailer
    for i, (_ptype, body) in enumerate(payloads):
        nxt = payloads[i + 1][0] if i + 1 < len(payloads) else PT_NONE
        plen = PAYLOAD_HEADER_LEN + len(body) + (trailer if nxt == PT_NONE else 0)
        if plen > 0xFFFF:
            raise ValueError("payload too long")
        parts.append(_PAYLOAD_HEADER.pack(nxt, 0, plen))
        parts.append(body)
        total += PAYLOAD_HEADER_LEN + len(body)
    first = payloads[0][0] if payloads else PT_NONE
    head = _HEADER.pack(spi_i, spi_r, first, IKE_VERSION, exchange_type, flags, message_id, total)
    return head + b"".join(parts)


def add_non_esp_marker(data: bytes) -> bytes:
    """Frame an IKE message for UDP 4500 (RFC 3948)."""
    return NON_ESP_MARKER + data


def strip_non_esp_marker_untrusted(data: bytes) -> bytes:
    """Return the IKE message inside a UDP 4500 datagram; ESP (non-zero SPI) is a DecodeError."""
    if len(data) < len(NON_ESP_MARKER) or data[:4] != NON_ESP_MARKER:
        raise DecodeError("not an IKE message on the NAT-T port (no non-ESP marker)")
    return bytes(data[4:])
