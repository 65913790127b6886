"""Wire codec: round trips, struct fast path == construct reference, and fuzzing.

Property for every ``*_untrusted`` decoder: for ANY bytes it returns a value or raises
DecodeError -- nothing else -- and a decoded message re-encodes to the same bytes.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from resume import wire
from resume import wire as wm
from resume.errors import DecodeError, RemoteProtocolError
from tests.resume import wire_oracle as wc

spis = st.binary(min_size=8, max_size=8)
payload_types = st.sampled_from([34, 35, 36, 40, 41, 240, 241, 242, 243, 7, 128, 255])
payload_lists = st.lists(
    st.tuples(payload_types, st.booleans(), st.binary(max_size=64)), max_size=wire.MAX_PAYLOADS
)


@st.composite
def messages(draw: st.DrawFn) -> wire.Message:
    payloads = draw(payload_lists)
    total = wire.HEADER_LEN + sum(4 + len(b) for _, _, b in payloads)
    header = wire.Header(
        draw(spis),
        draw(spis),
        payloads[0][0] if payloads else 0,
        draw(st.sampled_from([0x20, 0x21, 0x2F])),
        draw(st.integers(0, 255)),
        draw(st.integers(0, 255)),
        draw(st.integers(0, 2**32 - 1)),
        total,
    )
    return wire.Message(header, tuple(wire.Payload(t, c, b) for t, c, b in payloads))


@st.composite
def protocol_messages(draw: st.DrawFn) -> bytes:
    """Valid messages of every kind the exchange uses."""
    spi_i = draw(spis.filter(lambda s: s != wm.ZERO_SPI))
    spi_r = draw(spis.filter(lambda s: s != wm.ZERO_SPI))
    sa = wm.ResumeSA(
        draw(st.integers(256, 2**32 - 1)),
        draw(st.sampled_from([12, 20, 28])),
        draw(st.sampled_from([128, 192, 256])),
        draw(st.sampled_from([0, 12, 13, 14])),
        draw(st.sampled_from([1, 2])),
    )
    nonce = draw(st.binary(min_size=16, max_size=64))
    ke = draw(st.none() | st.binary(min_size=32, max_size=32))
    handle = draw(st.binary(min_size=8, max_size=64))
    ident = draw(st.sampled_from([1, 2, 3, 9, 11]).map(lambda t: bytes([t]))) + draw(
        st.binary(min_size=1, max_size=40)
    )
    mac = draw(st.binary(min_size=32, max_size=32))
    m1 = wm.build_hardened_init(spi_i, handle, sa, nonce, ke)
    kind = draw(st.integers(0, 6))
    return [
        m1,
        wm.build_hardened_resp_prefix(spi_i, spi_r, sa, nonce, ke) + mac,
        wm.build_hardened_auth_prefix(spi_i, spi_r, m1) + mac,
        wm.build_paper_init(spi_i, ident, nonce),
        wm.build_paper_resp_prefix(spi_i, spi_r, ident, nonce) + mac,
        wm.build_paper_auth_prefix(spi_i, spi_r, ident) + mac,
        wm.build_nack(
            spi_i, draw(st.sampled_from([wm.ZERO_SPI, spi_r])), draw(st.sampled_from([0, 1]))
        ),
    ][kind]


def _encode(m: wire.Message) -> bytes:
    h = m.header
    raw = wire.encode_message(
        h.spi_i,
        h.spi_r,
        h.flags,
        h.message_id,
        [(p.type, p.body) for p in m.payloads],
        h.exchange_type,
    )
    # encode_message writes version 0x20 and C=0; patch to the drawn values for comparison
    b = bytearray(raw)
    b[17] = h.version
    off = wire.HEADER_LEN
    for p in m.payloads:
        b[off + 1] = 0x80 if p.critical else 0
        off += 4 + len(p.body)
    return bytes(b)


@given(messages())
def test_struct_and_construct_agree_on_valid_messages(m: wire.Message) -> None:
    fast = _encode(m)
    assert wc.encode_message_construct(m) == fast
    assert wire.decode_message_untrusted(fast) == m
    assert wc.decode_message_construct_untrusted(fast) == m


def _outcome(fn: object, data: bytes) -> object:
    try:
        return fn(data)  # type: ignore[operator]
    except DecodeError:
        return DecodeError


@given(st.binary(max_size=300))
@example(b"")
@example(b"\x00" * 28)
def test_struct_and_construct_agree_on_any_bytes(data: bytes) -> None:
    assert _outcome(wire.decode_message_untrusted, data) == _outcome(
        wc.decode_message_construct_untrusted, data
    )


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid message with bytes flipped, inserted, deleted or the length field patched."""
    b = bytearray(draw(protocol_messages()))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 4))
        i = draw(st.integers(0, max(0, len(b) - 1)))
        if op == 0 and b:
            b[i] ^= draw(st.integers(1, 255))
        elif op == 1:
            b.insert(i, draw(st.integers(0, 255)))
        elif op == 2 and b:
            del b[i]
        elif op == 3 and len(b) >= 28:
            struct.pack_into(">I", b, 24, len(b))  # keep the header length consistent
        elif op == 4 and len(b) > 30:
            # rewrite a payload length inside the chain
            j = draw(st.integers(28, len(b) - 2))
            struct.pack_into(">H", b, j, draw(st.integers(0, 0xFFFF)))
    return bytes(b)


@given(mutated())
def test_mutated_messages_decode_or_raise_decode_error(data: bytes) -> None:
    for fn in (wm.parse_request_untrusted, wm.parse_response_untrusted):
        r = _outcome(fn, data)
        if r is not DecodeError:
            assert r.raw == data  # type: ignore[attr-defined]
    fast = _outcome(wire.decode_message_untrusted, data)
    assert fast == _outcome(wc.decode_message_construct_untrusted, data)
    if fast is not DecodeError:
        assert isinstance(fast, wire.Message)
        assert fast.header.length == len(data)


@given(protocol_messages())
def test_every_protocol_message_parses_on_exactly_one_side(data: bytes) -> None:
    req = _outcome(wm.parse_request_untrusted, data)
    resp = _outcome(wm.parse_response_untrusted, data)
    assert (req is DecodeError) != (resp is DecodeError)
    parsed = req if req is not DecodeError else resp
    assert parsed.raw == data  # type: ignore[attr-defined]
    # the generic chain re-encodes to the same bytes
    m = wire.decode_message_untrusted(data)
    assert wc.encode_message_construct(m) == data


def test_decode_error_is_the_remote_error() -> None:
    assert issubclass(DecodeError, RemoteProtocolError)
    with pytest.raises(DecodeError):
        wire.decode_message_untrusted(b"\x00" * 27)


def test_header_fields_and_dissector_compatibility() -> None:
    sa = wm.ResumeSA(0x1234, 20, 256, 0, 2)
    m1 = wm.build_hardened_init(b"A" * 8, b"H" * 16, sa, b"N" * 32, b"K" * 32)
    h = wire.peek_header_untrusted(m1)
    assert (h.exchange_type, h.version, h.flags, h.message_id) == (240, 0x20, 0x08, 0)
    assert h.length == len(m1) and h.spi_r == b"\x00" * 8
    assert h.next_payload == wire.PT_RESUME_HANDLE
    msg = wire.decode_message_untrusted(m1)
    assert [p.type for p in msg.payloads] == [240, 241, 40, 34]
    ke = msg.payloads[3].body
    assert struct.unpack(">HH", ke[:4]) == (31, 0)  # IKEv2 KE payload, group 31 (Curve25519)


def test_nat_t_marker() -> None:
    m = wm.build_nack(b"A" * 8, wm.ZERO_SPI, 0)
    framed = wire.add_non_esp_marker(m)
    assert framed[:4] == b"\x00\x00\x00\x00"
    assert wire.strip_non_esp_marker_untrusted(framed) == m
    with pytest.raises(DecodeError):
        wire.strip_non_esp_marker_untrusted(b"\x00\x00\x10\x01" + m)  # an ESP SPI


def test_message3_must_echo_the_same_initiator() -> None:
    sa = wm.ResumeSA(0x1234, 20, 256, 0, 2)
    m1 = wm.build_hardened_init(b"A" * 8, b"H" * 16, sa, b"N" * 32, None)
    ok = wm.build_hardened_auth_prefix(b"A" * 8, b"R" * 8, m1) + b"M" * 32
    assert isinstance(wm.parse_request_untrusted(ok), wm.HardenedAuth)
    bad = wm.build_hardened_auth_prefix(b"B" * 8, b"R" * 8, m1) + b"M" * 32
    with pytest.raises(DecodeError):
        wm.parse_request_untrusted(bad)
    nested = wm.build_hardened_auth_prefix(b"A" * 8, b"R" * 8, ok) + b"M" * 32
    with pytest.raises(DecodeError):
        wm.parse_request_untrusted(nested)


UNTRUSTED_DECODERS = {
    "peek_header": wire.peek_header_untrusted,
    "decode_message": wire.decode_message_untrusted,
    "decode_message_construct": wc.decode_message_construct_untrusted,
    "parse_request": wm.parse_request_untrusted,
    "parse_response": wm.parse_response_untrusted,
    "strip_non_esp_marker": wire.strip_non_esp_marker_untrusted,
    "decode_sa": wm.decode_sa_untrusted,
    "decode_id": wm.decode_id_untrusted,
    "decode_ke": wm.decode_ke_untrusted,
}


@pytest.mark.parametrize("name", list(UNTRUSTED_DECODERS))
@given(data=st.binary(max_size=300) | mutated())
def test_fuzz_decoder_raises_only_decode_error(name: str, data: bytes) -> None:
    """Fuzz target per decoder: any bytes -> a value or DecodeError, nothing else."""
    _outcome(UNTRUSTED_DECODERS[name], data)  # any other exception fails the test


@given(
    spi=spis.filter(lambda x: x != wm.ZERO_SPI),
    handle=st.binary(min_size=8, max_size=64),
    spi_esp=st.integers(256, 2**32 - 1),
    nonce=st.binary(min_size=16, max_size=256),
    ke=st.none() | st.binary(min_size=32, max_size=32),
)
def test_message1_round_trip(
    spi: bytes, handle: bytes, spi_esp: int, nonce: bytes, ke: bytes | None
) -> None:
    sa = wm.ResumeSA(spi_esp, 20, 256, 0, 2)
    raw = wm.build_hardened_init(spi, handle, sa, nonce, ke)
    m = wm.parse_request_untrusted(raw)
    assert isinstance(m, wm.HardenedInit)
    assert (m.header.spi_i, m.handle, m.sa, m.nonce, m.ke) == (spi, handle, sa, nonce, ke)
    assert wm.decode_sa_untrusted(sa.encode()) == sa
