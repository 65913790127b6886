"""The seven messages of the resumption exchange, on top of :mod:`resume.wire` framing.

Payload order is fixed and unknown payloads are rejected: a canonical encoding means the
transcript MACs cover exactly one byte string per message, and a parser with no options has
fewer corners for an attacker.  Extensions must use a new exchange type.

=================  ======  =====  ===========================================
message            flags   MID    payloads (in this order)
=================  ======  =====  ===========================================
hardened 1 (I->R)  I       0      RESUME_HANDLE, RESUME_SA, Ni, [KEi]
hardened 2 (R->I)  R       0      RESUME_SA, Nr, [KEr], RESUME_AUTH
hardened 3 (I->R)  I       1      RESUME_ECHO(message 1), RESUME_AUTH
paper 1            I       0      IDi, Ni
paper 2            R       0      IDr, Nr, RESUME_AUTH
paper 3            I       1      IDi, RESUME_AUTH
NACK               R       0/1    N(RESUMPTION_REFUSED)
=================  ======  =====  ===========================================

``parse_request_untrusted`` (responder side) and ``parse_response_untrusted`` (initiator side)
raise only :class:`~resume.errors.DecodeError`.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from resume.errors import DecodeError
from resume.wire import (
    EXCHANGE_IKE_RESUME,
    FLAG_INITIATOR,
    FLAG_RESPONSE,
    IKE_VERSION,
    NOTIFY_RESUMPTION_REFUSED,
    PT_IDI,
    PT_IDR,
    PT_KE,
    PT_NONCE,
    PT_NOTIFY,
    PT_RESUME_AUTH,
    PT_RESUME_ECHO,
    PT_RESUME_HANDLE,
    PT_RESUME_SA,
    Header,
    decode_chain_untrusted,
    encode_message,
)

MAC_LEN = 32
NONCE_LEN = 32
NONCE_MIN, NONCE_MAX = 16, 256  # RFC 7296 3.9
HANDLE_LEN = 16
HANDLE_MIN, HANDLE_MAX = 8, 64
ID_MAX = 255
GROUP_CURVE25519 = 31  # IKEv2 Transform Type 4 ID (RFC 8031)
X25519_LEN = 32
ZERO_SPI = b"\x00" * 8
MIN_ESP_SPI = 256  # SPIs 1-255 are reserved by IANA (RFC 4303 2.1)

_SA = struct.Struct(">IHHHBB")
_KE_HEAD = struct.Struct(">HH")
_NACK_BODY = struct.pack(">BBH", 0, 0, NOTIFY_RESUMPTION_REFUSED)
_new_tuple = tuple.__new__


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


def encode_ke(public: bytes) -> bytes:
    return _KE_HEAD.pack(GROUP_CURVE25519, 0) + public


def decode_ke_untrusted(body: bytes) -> bytes:
    if len(body) != _KE_HEAD.size + X25519_LEN:
        raise DecodeError("KE payload is not an X25519 share")
    group, reserved = _KE_HEAD.unpack_from(body)
    if group != GROUP_CURVE25519 or reserved != 0:
        raise DecodeError("KE payload group is not Curve25519")
    return body[_KE_HEAD.size :]


def _nonce_untrusted(body: bytes) -> bytes:
    if not NONCE_MIN <= len(body) <= NONCE_MAX:
        raise DecodeError("nonce length out of range")
    return body


def _mac_untrusted(body: bytes) -> bytes:
    if len(body) != MAC_LEN:
        raise DecodeError("RESUME_AUTH body is not 32 bytes")
    return body


class HardenedInit(NamedTuple):
    raw: bytes
    header: Header
    handle: bytes
    sa: ResumeSA
    nonce: bytes
    ke: bytes | None


class HardenedResp(NamedTuple):
    raw: bytes
    header: Header
    sa: ResumeSA
    nonce: bytes
    ke: bytes | None
    mac: bytes


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
_H1_KE = (*_H1, PT_KE)
_H2 = (PT_RESUME_SA, PT_NONCE, PT_RESUME_AUTH)
_H2_KE = (PT_RESUME_SA, PT_NONCE, PT_KE, PT_RESUME_AUTH)
_H3 = (PT_RESUME_ECHO, PT_RESUME_AUTH)
_P1 = (PT_IDI, PT_NONCE)
_P2 = (PT_IDR, PT_NONCE, PT_RESUME_AUTH)
_P3 = (PT_IDI, PT_RESUME_AUTH)


def _hardened_init(raw: bytes, header: Header, bodies: list[bytes], has_ke: bool) -> HardenedInit:
    handle = bodies[0]
    if not HANDLE_MIN <= len(handle) <= HANDLE_MAX:
        raise DecodeError("handle length out of range")
    ke = decode_ke_untrusted(bodies[3]) if has_ke else None
    return HardenedInit(
        raw, header, handle, decode_sa_untrusted(bodies[1]), _nonce_untrusted(bodies[2]), ke
    )


def _parse_request(data: bytes, nested: bool) -> Request:
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
        if types in (_H1, _H1_KE):
            return _hardened_init(raw, h, bodies, types == _H1_KE)
        if types == _P1 and not nested:
            return PaperInit(raw, h, decode_id_untrusted(bodies[0]), _nonce_untrusted(bodies[1]))
    elif h.message_id == 1 and not nested:
        if h.spi_r == ZERO_SPI:
            raise DecodeError("message 3 without a responder SPI")
        if types == _H3:
            inner = _parse_request(bodies[0], nested=True)
            if not isinstance(inner, HardenedInit) or inner.header.spi_i != h.spi_i:
                raise DecodeError("RESUME_ECHO does not hold this initiator's message 1")
            return HardenedAuth(raw, h, inner, _mac_untrusted(bodies[1]))
        if types == _P3:
            return PaperAuth(raw, h, decode_id_untrusted(bodies[0]), _mac_untrusted(bodies[1]))
    raise DecodeError(f"unexpected payloads {types} for message id {h.message_id}")


# --- fast path for the two hardened requests ------------------------------------------------
#
# Every message 1 and 3 a responder receives goes through here.  ``_fast_init`` and
# ``_fast_auth`` read the fixed payload order directly (no payload lists) and return None
# for anything that is not a well-formed hardened message 1 / 3; ``_parse_request`` (the
# reference) then decides, so errors and every other message kind come from one place.  A
# value from the fast path equals the reference's (tests compare them on arbitrary inputs).

_HEADER = struct.Struct(">8s8sBBBBII")
_PH = struct.Struct(">BBH")
_SA_P = struct.Struct(">BBH" + "IHHHBB")  # RESUME_SA payload header and body
_KE_P = struct.Struct(">BBHHH")  # KE payload header, group, reserved
_MAX_LEN = 2048  # resume.wire.MAX_MESSAGE_LEN
_KE_P_LEN = 4 + _KE_HEAD.size + X25519_LEN
_AUTH_P_LEN = 4 + MAC_LEN


def _fast_init(data: bytes) -> HardenedInit | None:
    n = len(data)
    if n < 28 + 4 + HANDLE_MIN + 16 + 4 + NONCE_MIN or n > _MAX_LEN:
        return None
    h = _new_tuple(Header, _HEADER.unpack_from(data))
    if (
        h[2] != PT_RESUME_HANDLE
        or h[3] >> 4 != 2
        or h[4] != EXCHANGE_IKE_RESUME
        or h[5] & (FLAG_INITIATOR | FLAG_RESPONSE) != FLAG_INITIATOR
        or h[6] != 0
        or h[7] != n
        or h[0] == ZERO_SPI
        or h[1] != ZERO_SPI
    ):
        return None
    nxt, _c, plen = _PH.unpack_from(data, 28)
    if nxt != PT_RESUME_SA or not HANDLE_MIN + 4 <= plen <= HANDLE_MAX + 4:
        return None
    off = 28 + plen
    if off + 16 + 4 > n:
        return None
    nxt, _c, slen, spi, encr, bits, integ, mode, reserved = _SA_P.unpack_from(data, off)
    if nxt != PT_NONCE or slen != 16 or reserved or mode not in (1, 2) or spi < MIN_ESP_SPI:
        return None
    nonce_at = off + 16
    nxt, _c, nlen = _PH.unpack_from(data, nonce_at)
    end = nonce_at + nlen
    if not NONCE_MIN + 4 <= nlen <= NONCE_MAX + 4 or end > n:
        return None
    ke = None
    if nxt == PT_KE:
        if end + _KE_P_LEN != n:
            return None
        nxt, _c, klen, group, reserved = _KE_P.unpack_from(data, end)
        if nxt or klen != _KE_P_LEN or group != GROUP_CURVE25519 or reserved:
            return None
        ke = data[end + 8 :]
    elif nxt or end != n:
        return None
    return _new_tuple(
        HardenedInit,
        (
            data,
            h,
            data[32 : 28 + plen],
            _new_tuple(ResumeSA, (spi, encr, bits, integ, mode)),
            data[nonce_at + 4 : end],
            ke,
        ),
    )


def _fast_auth(data: bytes) -> HardenedAuth | None:
    n = len(data)
    if n < 28 + 4 + 28 + _AUTH_P_LEN or n > _MAX_LEN:
        return None
    h = _new_tuple(Header, _HEADER.unpack_from(data))
    if (
        h[2] != PT_RESUME_ECHO
        or h[3] >> 4 != 2
        or h[4] != EXCHANGE_IKE_RESUME
        or h[5] & (FLAG_INITIATOR | FLAG_RESPONSE) != FLAG_INITIATOR
        or h[6] != 1
        or h[7] != n
        or h[0] == ZERO_SPI
        or h[1] == ZERO_SPI
    ):
        return None
    nxt, _c, elen = _PH.unpack_from(data, 28)
    end = 28 + elen
    if nxt != PT_RESUME_AUTH or end + _AUTH_P_LEN != n:
        return None
    nxt, _c, alen = _PH.unpack_from(data, end)
    if nxt or alen != _AUTH_P_LEN:
        return None
    inner = _fast_init(data[32:end])
    if inner is None or inner[1][0] != h[0]:
        return None
    return _new_tuple(HardenedAuth, (data, h, inner, data[end + 4 :]))


def parse_request_untrusted(data: bytes) -> Request:
    """Message 1 or 3 (either mode) as the responder receives it."""
    if type(data) is bytes and len(data) > 28:
        first = data[16]  # the header's Next Payload
        fast: Request | None = None
        if first == PT_RESUME_HANDLE:
            fast = _fast_init(data)
        elif first == PT_RESUME_ECHO:
            fast = _fast_auth(data)
        if fast is not None:
            return fast
    return _parse_request(data, nested=False)


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
        if types in (_H2, _H2_KE):
            ke = decode_ke_untrusted(bodies[2]) if types == _H2_KE else None
            return HardenedResp(
                raw,
                h,
                decode_sa_untrusted(bodies[0]),
                _nonce_untrusted(bodies[1]),
                ke,
                _mac_untrusted(bodies[-1]),
            )
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
    spi_i: bytes, handle: bytes, sa: ResumeSA, nonce: bytes, ke: bytes | None
) -> bytes:
    payloads = [(PT_RESUME_HANDLE, handle), (PT_RESUME_SA, sa.encode()), (PT_NONCE, nonce)]
    if ke is not None:
        payloads.append((PT_KE, encode_ke(ke)))
    return encode_message(spi_i, ZERO_SPI, FLAG_INITIATOR, 0, payloads)


# Message 2 is built for every message 1 (and rebuilt for a message 3 whose message 2 left
# the response cache): its fixed-layout head is one struct, the same bytes as
# ``encode_message`` with the payloads RESUME_SA, Nr, [KEr], RESUME_AUTH (tests compare).
_M2_HEAD = struct.Struct(">8s8sBBBBII" + "BBH" + "IHHHBB" + "BBH")
_M2_KE = struct.Struct(">BBHHH")
_M2_AUTH_HEAD = struct.pack(">BBH", 0, 0, 4 + MAC_LEN)
_M2_FIXED = 28 + 4 + _SA.size + 4 + 4 + MAC_LEN  # all but the nonce and KE bodies
_M2_KE_LEN = 4 + _KE_HEAD.size + X25519_LEN


def build_hardened_resp_prefix(
    spi_i: bytes, spi_r: bytes, sa: ResumeSA, nonce: bytes, ke: bytes | None
) -> bytes:
    if len(spi_i) != 8 or len(spi_r) != 8:
        raise ValueError("IKE SPIs are 8 bytes")
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


def build_hardened_resp_prefix_generic(
    spi_i: bytes, spi_r: bytes, sa: ResumeSA, nonce: bytes, ke: bytes | None
) -> bytes:
    """Reference for ``build_hardened_resp_prefix`` through the generic framer (tests)."""
    payloads = [(PT_RESUME_SA, sa.encode()), (PT_NONCE, nonce)]
    if ke is not None:
        payloads.append((PT_KE, encode_ke(ke)))
    payloads.append((PT_RESUME_AUTH, b""))
    return encode_message(spi_i, spi_r, FLAG_RESPONSE, 0, payloads, trailer=MAC_LEN)


def build_hardened_auth_prefix(spi_i: bytes, spi_r: bytes, msg1: bytes) -> bytes:
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


def build_nack(spi_i: bytes, spi_r: bytes, message_id: int) -> bytes:
    """The one NACK: a function of the request's header only, never of the failure reason."""
    return encode_message(spi_i, spi_r, FLAG_RESPONSE, message_id, [(PT_NOTIFY, _NACK_BODY)])
