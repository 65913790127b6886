"""The wire format of the resumption exchange: framing, payload bodies, the seven messages.

One module owns every byte layout (``specs/protocol.md`` section 3 is its specification):

* **framing** -- the IKEv2 header (RFC 7296 3.1) and generic payload chain (3.2), and the
  NAT-T non-ESP marker (RFC 3948 2.2) for UDP 4500;
* **payload bodies** -- RESUME_SA, ID, KE, nonce, RESUME_AUTH;
* **messages** -- one reference parser per direction (:func:`parse_request_untrusted` at the
  responder, :func:`parse_response_untrusted` at the initiator) built on the framing, a
  ``struct`` fast path for the two hardened requests every responder sees (proven equal to
  the reference by a hypothesis test, ``tests/resume/test_fastpath.py``), and one builder per
  message.

Why IKEv2 framing for a private exchange: tshark/Wireshark and every IKE-aware middlebox
already dissect the 28-byte header and the generic payload chain, the NAT-T non-ESP marker
works unchanged on port 4500, and an IKE daemon can demultiplex our packets by exchange
type.  The exchange type and the payload/notify numbers we add come from the private-use
ranges of the IANA "IKEv2 Parameters" registry.

Payload order is fixed and unknown payloads are rejected: a canonical encoding means the
transcript MACs cover exactly one byte string per message, and a parser with no options has
fewer corners for an attacker.  Extensions must use a new exchange type.

=================  ======  =====  ===========================================
message            flags   MID    payloads (in this order)
=================  ======  =====  ===========================================
hardened 1 (I->R)  I       0      RESUME_HANDLE, RESUME_SA, Ni, [KE(31)], [KE(36)]
hardened 2 (R->I)  R       0      RESUME_SA, Nr, [KE(31)], [KE(36)], RESUME_AUTH
hardened 3 (I->R)  I       1      RESUME_ECHO(compact(message 1)), RESUME_AUTH
paper 1            I       0      IDi, Ni
paper 2            R       0      IDr, Nr, RESUME_AUTH
paper 3            I       1      IDi, RESUME_AUTH
NACK               R       0/1    N(RESUMPTION_REFUSED)
=================  ======  =====  ===========================================

KE payloads carry any key exchange method (``u16 method | u16 0 | data``): 31 is X25519,
36 ML-KEM-768 (the initiator's encapsulation key in message 1, the responder's ciphertext in
message 2).  At most one per method, X25519 first.  ML-KEM data is large, so the transcript
uses the *compact form* of a message (:func:`compact_message`): every KE(36) data replaced
by its SHA-256.  Message 3 echoes compact(message 1), and the MACs cover compact forms; a
message without ML-KEM is its own compact form, so nothing changes for the other modes.

Every function that reads network bytes ends in ``_untrusted`` and raises only
:class:`~resume.errors.DecodeError`, whatever the input.  A construct description of the
same layouts serves as a test oracle (``tests/resume/wire_oracle.py``).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import NamedTuple

from resume.errors import DecodeError

# --- framing (RFC 7296 3.1, 3.2; RFC 3948 2.2) -----------------------------------------------
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
    """The 28-byte header's fields, for demultiplexing and admission before any other work.

    Checks only that a header is there: the caller judges version, exchange type, flags and
    message ID (admission gives each its own drop reason); :func:`decode_chain_untrusted`
    checks all of them and the lengths.
    """
    try:
        if len(data) < HEADER_LEN:
            raise DecodeError(f"datagram of {len(data)} bytes is shorter than an IKE header")
        h: Header = _new_tuple(Header, _HEADER.unpack_from(data, 0))
        return h
    except (struct.error, TypeError, ValueError) as exc:
        raise DecodeError(f"bad header: {exc}") from None


def peek_handle_untrusted(data: bytes) -> bytes:
    """The body of the first payload -- a message 1's RESUME_HANDLE -- cut at the datagram's
    end, from the generic payload header alone (admission's key for recent store misses)."""
    if len(data) < HEADER_LEN + PAYLOAD_HEADER_LEN:
        raise DecodeError("no first payload")
    plen = data[HEADER_LEN + 2] << 8 | data[HEADER_LEN + 3]
    return bytes(data[HEADER_LEN + PAYLOAD_HEADER_LEN : HEADER_LEN + plen])


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


# --- payload bodies and messages -----------------------------------------------------

MAC_LEN = 32
#: Length of the nonces we send (the parser accepts NONCE_MIN..NONCE_MAX from a peer).
NONCE_LEN = 32
NONCE_MIN, NONCE_MAX = 16, 256  # RFC 7296 3.9
#: Length of the handles the key schedule derives (a peer's may be HANDLE_MIN..HANDLE_MAX).
HANDLE_LEN = 16
HANDLE_MIN, HANDLE_MAX = 8, 64
ID_MAX = 255
GROUP_CURVE25519 = 31  # IKEv2 Transform Type 4 ID (RFC 8031)
X25519_LEN = 32
#: ML-KEM-768 as a key exchange method: the IKEv2 Transform Type 4 ID strongSwan 6 and
#: libreswan 5.4 use (draft-ietf-ipsecme-ikev2-mlkem).
KE_MLKEM768 = 36
MLKEM768_EK_LEN = 1184  # FIPS 203 encapsulation key
MLKEM768_CT_LEN = 1088  # FIPS 203 ciphertext
#: A KE(36) payload's data in the compact form (and in RESUME_ECHO): SHA-256(ek or ct).
KE_DIGEST_LEN = 32
ZERO_SPI = b"\x00" * 8
MIN_ESP_SPI = 256  # SPIs 1-255 are reserved by IANA (RFC 4303 2.1)

_SA = struct.Struct(">IHHHBB")
_KE_HEAD = struct.Struct(">HH")
_NACK_BODY = struct.pack(">BBH", 0, 0, NOTIFY_RESUMPTION_REFUSED)


class ResumeSA(NamedTuple):
    """RESUME_SA payload body (12 bytes): the sender's inbound ESP SPI and the algorithms.

    ``spi`` is chosen by the sender for the SA it will *receive* on; the algorithms repeat
    the cached parameters so a mismatch is caught before keys are derived.
    """

    spi: int
    encr: int
    key_bits: int
    integ: int
    mode: int  # 1 = transport, 2 = tunnel

    def encode(self) -> bytes:
        return _SA.pack(self.spi, self.encr, self.key_bits, self.integ, self.mode, 0)


def decode_sa_untrusted(body: bytes) -> ResumeSA:
    if len(body) != _SA.size:
        raise DecodeError("RESUME_SA body is not 12 bytes")
    fields = _SA.unpack(body)
    if fields[5] != 0 or fields[4] not in (1, 2) or fields[0] < MIN_ESP_SPI:
        raise DecodeError("RESUME_SA has a reserved SPI, mode or non-zero reserved byte")
    return _new_tuple(ResumeSA, fields[:5])


def encode_id(ident: bytes) -> bytes:
    """Credential form (type byte + data) to ID payload body (type, 3 reserved, data)."""
    if not 2 <= len(ident) <= ID_MAX + 1:
        raise ValueError("identity must be a type byte plus 1..255 bytes of data")
    return ident[:1] + b"\x00\x00\x00" + ident[1:]


def decode_id_untrusted(body: bytes) -> bytes:
    if not 5 <= len(body) <= ID_MAX + 4 or body[1:4] != b"\x00\x00\x00":
        raise DecodeError("bad ID payload")
    return body[:1] + body[4:]


def encode_ke(public: bytes, method: int = GROUP_CURVE25519) -> bytes:
    return _KE_HEAD.pack(method, 0) + public


#: Data lengths a KE payload of each method may carry anywhere (the message parsers then
#: require the one their position allows).
KE_LENGTHS = {
    GROUP_CURVE25519: (X25519_LEN,),
    KE_MLKEM768: (KE_DIGEST_LEN, MLKEM768_CT_LEN, MLKEM768_EK_LEN),
}


class KePayload(NamedTuple):
    method: int
    data: bytes


def decode_ke_untrusted(body: bytes) -> KePayload:
    """A KE payload body: a known method, reserved 0, data of a length that method has."""
    if len(body) < _KE_HEAD.size:
        raise DecodeError("KE payload shorter than its method field")
    method, reserved = _KE_HEAD.unpack_from(body)
    if reserved != 0:
        raise DecodeError("KE payload reserved field is not zero")
    lengths = KE_LENGTHS.get(method)
    if lengths is None:
        raise DecodeError(f"KE payload method {method} is not supported")
    data = body[_KE_HEAD.size :]
    if len(data) not in lengths:
        raise DecodeError(f"KE payload of method {method} has {len(data)} bytes of data")
    return _new_tuple(KePayload, (method, data))


#: Where a KE payload sits: the data length each method must have there.
_KE_IN_M1 = {GROUP_CURVE25519: X25519_LEN, KE_MLKEM768: MLKEM768_EK_LEN}
_KE_IN_ECHO = {GROUP_CURVE25519: X25519_LEN, KE_MLKEM768: KE_DIGEST_LEN}
_KE_IN_M2 = {GROUP_CURVE25519: X25519_LEN, KE_MLKEM768: MLKEM768_CT_LEN}


def _kes_untrusted(
    bodies: Sequence[bytes], where: dict[int, int]
) -> tuple[bytes | None, bytes | None, int]:
    """(X25519 data, ML-KEM data, index of the ML-KEM payload among ``bodies`` or -1) of a
    run of KE payload bodies: known methods in ascending order (X25519 first, each at most
    once), with the length ``where`` gives for the position."""
    x25519: bytes | None = None
    mlkem: bytes | None = None
    at = -1
    last = -1
    for i, body in enumerate(bodies):
        method, data = decode_ke_untrusted(body)
        if method <= last:
            raise DecodeError("KE payloads duplicated or out of order")
        last = method
        if len(data) != where[method]:
            raise DecodeError(f"KE payload of method {method} has the wrong length here")
        if method == GROUP_CURVE25519:
            x25519 = data
        else:
            mlkem, at = data, i
    return x25519, mlkem, at


def _payload_offset(bodies: Sequence[bytes], index: int) -> int:
    """Offset of payload ``index``'s generic header in a message with these bodies."""
    return HEADER_LEN + sum(PAYLOAD_HEADER_LEN + len(b) for b in bodies[:index])


def _compact_at(raw: bytes, off: int) -> bytes:
    """``raw`` with the KE(36) payload at ``off`` holding SHA-256 of its data (payload and
    header lengths adjusted; every other byte, C bits included, as received)."""
    plen = int.from_bytes(raw[off + 2 : off + 4], "big")
    data = raw[off + PAYLOAD_HEADER_LEN + _KE_HEAD.size : off + plen]
    new_plen = PAYLOAD_HEADER_LEN + _KE_HEAD.size + KE_DIGEST_LEN
    total = len(raw) - plen + new_plen
    return b"".join(
        (
            raw[:24],
            total.to_bytes(4, "big"),
            raw[28 : off + 2],
            new_plen.to_bytes(2, "big"),
            raw[off + 4 : off + 8],
            hashlib.sha256(data).digest(),
            raw[off + plen :],
        )
    )


def compact_message(raw: bytes) -> bytes:
    """compact(m) of a hardened message 1 or 2 (spec 4.4): every KE(36) data replaced by its
    SHA-256.  A message without ML-KEM is returned as is.  Raises DecodeError for bytes
    that are not a well-formed message (callers pass messages they built or parsed)."""
    _h, types, bodies = decode_chain_untrusted(raw)
    for i, (t, body) in enumerate(zip(types, bodies, strict=True)):
        long_data = len(body) > _KE_HEAD.size + KE_DIGEST_LEN
        if t == PT_KE and long_data and _KE_HEAD.unpack_from(body)[0] == KE_MLKEM768:
            return _compact_at(bytes(raw), _payload_offset(bodies, i))
    return bytes(raw)


def _nonce_untrusted(body: bytes) -> bytes:
    if not NONCE_MIN <= len(body) <= NONCE_MAX:
        raise DecodeError("nonce length out of range")
    return body


def _mac_untrusted(body: bytes) -> bytes:
    if len(body) != MAC_LEN:
        raise DecodeError("RESUME_AUTH body is not 32 bytes")
    return body


class HardenedInit(NamedTuple):
    """Message 1.  ``ke``: the X25519 share; ``mlkem``: the ML-KEM-768 encapsulation key
    (inside RESUME_ECHO: its SHA-256); ``compact``: compact(raw), what the transcript, the
    responder values and message 3 use (``raw`` itself when there is no ML-KEM key)."""

    raw: bytes
    header: Header
    handle: bytes
    sa: ResumeSA
    nonce: bytes
    ke: bytes | None
    mlkem: bytes | None
    compact: bytes


class HardenedResp(NamedTuple):
    """Message 2.  ``mlkem``: the ML-KEM-768 ciphertext; ``compact``: compact(raw)."""

    raw: bytes
    header: Header
    sa: ResumeSA
    nonce: bytes
    ke: bytes | None
    mlkem: bytes | None
    mac: bytes
    compact: bytes


class HardenedAuth(NamedTuple):
    raw: bytes
    header: Header
    init: HardenedInit
    mac: bytes


class PaperInit(NamedTuple):
    raw: bytes
    header: Header
    id_i: bytes
    nonce: bytes


class PaperResp(NamedTuple):
    raw: bytes
    header: Header
    id_r: bytes
    nonce: bytes
    mac: bytes


class PaperAuth(NamedTuple):
    raw: bytes
    header: Header
    id_i: bytes
    mac: bytes


class Nack(NamedTuple):
    raw: bytes
    header: Header


Request = HardenedInit | HardenedAuth | PaperInit | PaperAuth
Response = HardenedResp | PaperResp | Nack

_H1 = (PT_RESUME_HANDLE, PT_RESUME_SA, PT_NONCE)
#: message 1 with 0, 1 or 2 KE payloads (which methods, their order: _kes_untrusted)
_H1_ANY = (_H1, (*_H1, PT_KE), (*_H1, PT_KE, PT_KE))
_H2_ANY = (
    (PT_RESUME_SA, PT_NONCE, PT_RESUME_AUTH),
    (PT_RESUME_SA, PT_NONCE, PT_KE, PT_RESUME_AUTH),
    (PT_RESUME_SA, PT_NONCE, PT_KE, PT_KE, PT_RESUME_AUTH),
)
_H3 = (PT_RESUME_ECHO, PT_RESUME_AUTH)
_P1 = (PT_IDI, PT_NONCE)
_P2 = (PT_IDR, PT_NONCE, PT_RESUME_AUTH)
_P3 = (PT_IDI, PT_RESUME_AUTH)


def _hardened_init(raw: bytes, header: Header, bodies: list[bytes], nested: bool) -> HardenedInit:
    handle = bodies[0]
    if not HANDLE_MIN <= len(handle) <= HANDLE_MAX:
        raise DecodeError("handle length out of range")
    sa = decode_sa_untrusted(bodies[1])
    nonce = _nonce_untrusted(bodies[2])
    ke, mlkem, at = _kes_untrusted(bodies[3:], _KE_IN_ECHO if nested else _KE_IN_M1)
    compact = raw if at < 0 or nested else _compact_at(raw, _payload_offset(bodies, 3 + at))
    return HardenedInit(raw, header, handle, sa, nonce, ke, mlkem, compact)


def _request_untrusted(data: bytes, nested: bool) -> Request:
    """The reference parser of messages 1 and 3 (``nested``: inside RESUME_ECHO)."""
    h, types, bodies = decode_chain_untrusted(data)
    if h.exchange_type != EXCHANGE_IKE_RESUME:
        raise DecodeError(f"exchange type {h.exchange_type} is not IKE_RESUME")
    if h.flags & (FLAG_INITIATOR | FLAG_RESPONSE) != FLAG_INITIATOR:
        raise DecodeError("not a request from an initiator")
    if h.spi_i == ZERO_SPI:
        raise DecodeError("zero initiator SPI")
    raw = bytes(data)
    if h.message_id == 0:
        if h.spi_r != ZERO_SPI:
            raise DecodeError("message 1 with a responder SPI")
        if types in _H1_ANY:
            return _hardened_init(raw, h, bodies, nested)
        if types == _P1 and not nested:
            return PaperInit(raw, h, decode_id_untrusted(bodies[0]), _nonce_untrusted(bodies[1]))
    elif h.message_id == 1 and not nested:
        if h.spi_r == ZERO_SPI:
            raise DecodeError("message 3 without a responder SPI")
        if types == _H3:
            inner = _request_untrusted(bodies[0], nested=True)
            if not isinstance(inner, HardenedInit) or inner.header.spi_i != h.spi_i:
                raise DecodeError("RESUME_ECHO does not hold this initiator's message 1")
            return HardenedAuth(raw, h, inner, _mac_untrusted(bodies[1]))
        if types == _P3:
            return PaperAuth(raw, h, decode_id_untrusted(bodies[0]), _mac_untrusted(bodies[1]))
    raise DecodeError(f"unexpected payloads {types} for message id {h.message_id}")


# --- fast path for the two hardened requests ------------------------------------------------
#
# Every message 1 and 3 a responder receives goes through here.  ``_fast_init_untrusted``
# and ``_fast_auth_untrusted`` read the fixed payload order directly (no payload lists) and
# raise DecodeError for anything that is not a well-formed hardened message 1 / 3;
# ``_request_untrusted`` (the reference) then decides, so error messages and every other
# message kind come from one place.  A value from the fast path equals the reference's
# (tests/resume/test_fastpath.py compares them on arbitrary inputs).

_PH = _PAYLOAD_HEADER
_SA_P = struct.Struct(">BBH" + "IHHHBB")  # RESUME_SA payload header and body
_KE_P = struct.Struct(">BBHHH")  # KE payload header, group, reserved
_KE_P_LEN = 4 + _KE_HEAD.size + X25519_LEN
_AUTH_P_LEN = 4 + MAC_LEN


def _miss() -> DecodeError:
    return DecodeError("not a canonical hardened message (the reference parser decides)")


def _fast_header_untrusted(data: bytes, min_len: int, first: int, message_id: int) -> Header:
    """The header of a hardened request: ``first`` payload, ``message_id``, an initiator
    SPI, and a responder SPI exactly when it is message 3."""
    n = len(data)
    if n < min_len or n > MAX_MESSAGE_LEN:
        raise _miss()
    h: Header = _new_tuple(Header, _HEADER.unpack_from(data))
    if (
        h[2] != first
        or h[3] >> 4 != 2
        or h[4] != EXCHANGE_IKE_RESUME
        or h[5] & (FLAG_INITIATOR | FLAG_RESPONSE) != FLAG_INITIATOR
        or h[6] != message_id
        or h[7] != n
        or h[0] == ZERO_SPI
        or (h[1] == ZERO_SPI) != (message_id == 0)
    ):
        raise _miss()
    return h


def _fast_init_untrusted(data: bytes) -> HardenedInit:
    h = _fast_header_untrusted(data, 28 + 4 + HANDLE_MIN + 16 + 4 + NONCE_MIN, PT_RESUME_HANDLE, 0)
    n = len(data)
    nxt, _c, plen = _PH.unpack_from(data, 28)
    if nxt != PT_RESUME_SA or not HANDLE_MIN + 4 <= plen <= HANDLE_MAX + 4:
        raise _miss()
    off = 28 + plen
    if off + 16 + 4 > n:
        raise _miss()
    nxt, _c, slen, spi, encr, bits, integ, mode, reserved = _SA_P.unpack_from(data, off)
    if nxt != PT_NONCE or slen != 16 or reserved or mode not in (1, 2) or spi < MIN_ESP_SPI:
        raise _miss()
    nonce_at = off + 16
    nxt, _c, nlen = _PH.unpack_from(data, nonce_at)
    end = nonce_at + nlen
    if not NONCE_MIN + 4 <= nlen <= NONCE_MAX + 4 or end > n:
        raise _miss()
    ke = None
    if nxt == PT_KE:
        if end + _KE_P_LEN != n:
            raise _miss()
        nxt, _c, klen, group, reserved = _KE_P.unpack_from(data, end)
        if nxt or klen != _KE_P_LEN or group != GROUP_CURVE25519 or reserved:
            raise _miss()
        ke = data[end + 8 :]
    elif nxt or end != n:
        raise _miss()
    return _new_tuple(
        HardenedInit,
        (
            data,
            h,
            data[32 : 28 + plen],
            _new_tuple(ResumeSA, (spi, encr, bits, integ, mode)),
            data[nonce_at + 4 : end],
            ke,
            None,
            data,
        ),
    )


def _fast_auth_untrusted(data: bytes) -> HardenedAuth:
    h = _fast_header_untrusted(data, 28 + 4 + 28 + _AUTH_P_LEN, PT_RESUME_ECHO, 1)
    n = len(data)
    nxt, _c, elen = _PH.unpack_from(data, 28)
    end = 28 + elen
    if nxt != PT_RESUME_AUTH or end + _AUTH_P_LEN != n:
        raise _miss()
    nxt, _c, alen = _PH.unpack_from(data, end)
    if nxt or alen != _AUTH_P_LEN:
        raise _miss()
    inner = _fast_init_untrusted(data[32:end])
    if inner[1][0] != h[0]:
        raise _miss()
    return _new_tuple(HardenedAuth, (data, h, inner, data[end + 4 :]))


def parse_request_untrusted(data: bytes) -> Request:
    """Message 1 or 3 (either mode) as the responder receives it."""
    if type(data) is bytes and len(data) > HEADER_LEN:
        first = data[16]  # the header's Next Payload
        try:
            if first == PT_RESUME_HANDLE:
                return _fast_init_untrusted(data)
            if first == PT_RESUME_ECHO:
                return _fast_auth_untrusted(data)
        except DecodeError:
            pass  # the reference decides, and words the error
    return _request_untrusted(data, nested=False)


def parse_response_untrusted(data: bytes) -> Response:
    """Message 2 (either mode) or a NACK as the initiator receives it."""
    h, types, bodies = decode_chain_untrusted(data)
    if h.exchange_type != EXCHANGE_IKE_RESUME:
        raise DecodeError(f"exchange type {h.exchange_type} is not IKE_RESUME")
    if h.flags & (FLAG_INITIATOR | FLAG_RESPONSE) != FLAG_RESPONSE:
        raise DecodeError("not a response from a responder")
    raw = bytes(data)
    if types == (PT_NOTIFY,) and h.message_id in (0, 1):
        if bodies[0] != _NACK_BODY:
            raise DecodeError("notify is not RESUMPTION_REFUSED")
        return Nack(raw, h)
    if h.message_id == 0 and h.spi_r != ZERO_SPI:
        if types in _H2_ANY:
            sa = decode_sa_untrusted(bodies[0])
            nonce = _nonce_untrusted(bodies[1])
            ke, mlkem, at = _kes_untrusted(bodies[2:-1], _KE_IN_M2)
            mac = _mac_untrusted(bodies[-1])
            compact = raw if at < 0 else _compact_at(raw, _payload_offset(bodies, 2 + at))
            return HardenedResp(raw, h, sa, nonce, ke, mlkem, mac, compact)
        if types == _P2:
            return PaperResp(
                raw,
                h,
                decode_id_untrusted(bodies[0]),
                _nonce_untrusted(bodies[1]),
                _mac_untrusted(bodies[2]),
            )
    raise DecodeError(f"unexpected payloads {types} for message id {h.message_id}")


# --- builders (trusted inputs; the *_prefix ones stop before the 32-byte MAC value) ---------


def build_hardened_init(
    spi_i: bytes,
    handle: bytes,
    sa: ResumeSA,
    nonce: bytes,
    ke: bytes | None,
    mlkem: bytes | None = None,
) -> bytes:
    """Message 1; ``mlkem`` is the ML-KEM-768 encapsulation key (or, for the compact form,
    its SHA-256)."""
    payloads = [(PT_RESUME_HANDLE, handle), (PT_RESUME_SA, sa.encode()), (PT_NONCE, nonce)]
    if ke is not None:
        payloads.append((PT_KE, encode_ke(ke)))
    if mlkem is not None:
        payloads.append((PT_KE, encode_ke(mlkem, KE_MLKEM768)))
    return encode_message(spi_i, ZERO_SPI, FLAG_INITIATOR, 0, payloads)


# Message 2 is built for every message 1 (and rebuilt for a message 3 whose message 2 left
# the response cache): its fixed-layout head is one struct, the same bytes as
# ``encode_message`` with the payloads RESUME_SA, Nr, [KEr], RESUME_AUTH
# (tests/resume/test_fastpath.py compares it with tests/resume/wire_oracle.py).
_M2_HEAD = struct.Struct(">8s8sBBBBII" + "BBH" + "IHHHBB" + "BBH")
_M2_KE = struct.Struct(">BBHHH")
_M2_AUTH_HEAD = struct.pack(">BBH", 0, 0, 4 + MAC_LEN)
_M2_FIXED = 28 + 4 + _SA.size + 4 + 4 + MAC_LEN  # all but the nonce and KE bodies
_M2_KE_LEN = 4 + _KE_HEAD.size + X25519_LEN


def build_hardened_resp_prefix(
    spi_i: bytes,
    spi_r: bytes,
    sa: ResumeSA,
    nonce: bytes,
    ke: bytes | None,
    mlkem: bytes | None = None,
) -> bytes:
    """Message 2 up to the MAC value; ``mlkem`` is the ML-KEM-768 ciphertext (or, for the
    compact form, its SHA-256)."""
    if len(spi_i) != 8 or len(spi_r) != 8:
        raise ValueError("IKE SPIs are 8 bytes")
    if mlkem is not None:
        payloads = [(PT_RESUME_SA, sa.encode()), (PT_NONCE, nonce)]
        if ke is not None:
            payloads.append((PT_KE, encode_ke(ke)))
        payloads += [(PT_KE, encode_ke(mlkem, KE_MLKEM768)), (PT_RESUME_AUTH, b"")]
        return encode_message(spi_i, spi_r, FLAG_RESPONSE, 0, payloads, trailer=MAC_LEN)
    after_nonce = PT_RESUME_AUTH if ke is None else PT_KE
    length = _M2_FIXED + len(nonce) + (0 if ke is None else _M2_KE_LEN)
    head = _M2_HEAD.pack(
        spi_i,
        spi_r,
        PT_RESUME_SA,
        IKE_VERSION,
        EXCHANGE_IKE_RESUME,
        FLAG_RESPONSE,
        0,
        length,
        PT_NONCE,
        0,
        4 + _SA.size,
        *sa,
        0,
        after_nonce,
        0,
        4 + len(nonce),
    )
    if ke is None:
        return head + nonce + _M2_AUTH_HEAD
    if len(ke) != X25519_LEN:
        raise ValueError("X25519 share is 32 bytes")
    return (
        head
        + nonce
        + _M2_KE.pack(PT_RESUME_AUTH, 0, _M2_KE_LEN, GROUP_CURVE25519, 0)
        + ke
        + _M2_AUTH_HEAD
    )


def build_hardened_auth_prefix(spi_i: bytes, spi_r: bytes, msg1: bytes) -> bytes:
    """Message 3 up to the MAC value; ``msg1`` is compact(message 1)."""
    payloads = [(PT_RESUME_ECHO, msg1), (PT_RESUME_AUTH, b"")]
    return encode_message(spi_i, spi_r, FLAG_INITIATOR, 1, payloads, trailer=MAC_LEN)


def build_paper_init(spi_i: bytes, id_i: bytes, nonce: bytes) -> bytes:
    payloads = [(PT_IDI, encode_id(id_i)), (PT_NONCE, nonce)]
    return encode_message(spi_i, ZERO_SPI, FLAG_INITIATOR, 0, payloads)


def build_paper_resp_prefix(spi_i: bytes, spi_r: bytes, id_r: bytes, nonce: bytes) -> bytes:
    payloads = [(PT_IDR, encode_id(id_r)), (PT_NONCE, nonce), (PT_RESUME_AUTH, b"")]
    return encode_message(spi_i, spi_r, FLAG_RESPONSE, 0, payloads, trailer=MAC_LEN)


def build_paper_auth_prefix(spi_i: bytes, spi_r: bytes, id_i: bytes) -> bytes:
    payloads = [(PT_IDI, encode_id(id_i)), (PT_RESUME_AUTH, b"")]
    return encode_message(spi_i, spi_r, FLAG_INITIATOR, 1, payloads, trailer=MAC_LEN)


def message_sizes(x25519: bool, mlkem: bool) -> tuple[int, int, int]:
    """UDP payload bytes of messages 1, 2 and 3 of a hardened run with this version's
    handle and nonce lengths (spec 4.5; without the 4-byte NAT-T marker)."""
    ke = PAYLOAD_HEADER_LEN + _KE_HEAD.size
    m1 = HEADER_LEN + PAYLOAD_HEADER_LEN + HANDLE_LEN + PAYLOAD_HEADER_LEN + _SA.size
    m1 += PAYLOAD_HEADER_LEN + NONCE_LEN + (ke + X25519_LEN if x25519 else 0)
    echo = m1 + (ke + KE_DIGEST_LEN if mlkem else 0)  # compact(message 1)
    m1 += ke + MLKEM768_EK_LEN if mlkem else 0
    m2 = HEADER_LEN + PAYLOAD_HEADER_LEN + _SA.size + PAYLOAD_HEADER_LEN + NONCE_LEN
    m2 += (ke + X25519_LEN if x25519 else 0) + (ke + MLKEM768_CT_LEN if mlkem else 0)
    m2 += PAYLOAD_HEADER_LEN + MAC_LEN
    m3 = HEADER_LEN + PAYLOAD_HEADER_LEN + echo + PAYLOAD_HEADER_LEN + MAC_LEN
    return m1, m2, m3


def build_nack(spi_i: bytes, spi_r: bytes, message_id: int) -> bytes:
    """The one NACK: a function of the request's header only, never of the failure reason."""
    return encode_message(spi_i, spi_r, FLAG_RESPONSE, message_id, [(PT_NOTIFY, _NACK_BODY)])
