"""Differential tests of the native codec and key schedule against the Python core.

For arbitrary inputs (hypothesis), every decoder accepts and refuses the same bytes and
returns the same fields; refusals raise ``DecodeError`` and nothing else; every builder and
every key-schedule function produces the same bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import example, given
from hypothesis import strategies as st

from resume import keyschedule as ks
from resume import native, wire
from resume.credential import Credential, ProtocolMode
from resume.errors import DecodeError
from resume.sa import DirectionKeys, Encr, Integ, Mode, SAParams, TrafficSelector
from tests.native.convert import assert_same
from tests.resume.test_wire import _encode, messages, protocol_messages


def N() -> Any:
    return native._require()


def _mutate(data: bytes, pos: int, xor: int, cut: int) -> bytes:
    b = bytearray(data)
    if b:
        b[pos % len(b)] ^= xor
    return bytes(b[: len(b) - cut % 4]) if cut % 3 == 0 else bytes(b)


datagrams = (
    st.binary(max_size=300)
    | messages().map(_encode)
    | protocol_messages()
    | st.builds(
        _mutate, protocol_messages(), st.integers(0, 400), st.integers(1, 255), st.integers(0, 11)
    )
)


@given(datagrams)
@example(b"")
@example(b"\x00" * 28)
def test_decoders_accept_and_refuse_the_same_bytes(data: bytes) -> None:
    n = N()
    for body in (data, data[:12], data[:36], data[-36:]):
        assert_same(n, body)


@given(st.binary(max_size=200))
def test_non_esp_marker_round_trip(data: bytes) -> None:
    assert N().add_non_esp_marker(data) == wire.add_non_esp_marker(data)


spis = st.binary(min_size=8, max_size=8)
sas = st.tuples(
    st.integers(256, 2**32 - 1),
    st.sampled_from([12, 20, 28]),
    st.sampled_from([128, 192, 256]),
    st.sampled_from([0, 12, 13, 14]),
    st.sampled_from([1, 2]),
)


@given(
    spis,
    spis,
    st.binary(min_size=8, max_size=64),
    sas,
    st.binary(min_size=16, max_size=256),
    st.none() | st.binary(min_size=32, max_size=32),
    st.integers(0, 1),
)
def test_builders_produce_the_same_bytes(
    spi_i: bytes,
    spi_r: bytes,
    handle: bytes,
    sa: tuple[int, int, int, int, int],
    nonce: bytes,
    ke: bytes | None,
    mid: int,
) -> None:
    n = N()
    rsa = wire.ResumeSA(*sa)
    m1 = wire.build_hardened_init(spi_i, handle, rsa, nonce, ke)
    assert n.build_hardened_init(spi_i, handle, sa, nonce, ke) == m1
    assert n.build_hardened_resp_prefix(spi_i, spi_r, sa, nonce, ke) == (
        wire.build_hardened_resp_prefix(spi_i, spi_r, rsa, nonce, ke)
    )
    assert n.build_hardened_auth_prefix(spi_i, spi_r, m1) == (
        wire.build_hardened_auth_prefix(spi_i, spi_r, m1)
    )
    assert n.build_nack(spi_i, spi_r, mid) == wire.build_nack(spi_i, spi_r, mid)


@given(
    st.binary(max_size=200), st.binary(max_size=300), st.binary(max_size=100), st.integers(1, 400)
)
def test_hmac_and_hkdf_equal(key: bytes, data: bytes, info: bytes, length: int) -> None:
    n = N()
    assert n.hmac_sha256(key, data) == hmac.new(key, data, hashlib.sha256).digest()
    assert n.hkdf_extract(key, data) == ks.hkdf_extract(key, data)
    prk = ks.hkdf_extract(key, data)
    assert n.hkdf_expand(prk, info, length) == ks.hkdf_expand(prk, info, length)


hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
)


@given(
    st.binary(min_size=32, max_size=80),
    st.integers(0, 2**40),
    hosts,
    st.integers(0, 65535),
    st.binary(max_size=300),
)
def test_responder_prf_equal(secret: bytes, tick: int, host: str, port: int, m1: bytes) -> None:
    assert N().responder_prf(secret, tick, (host, port), m1) == ks.responder_prf(
        secret, tick, (host, port), m1
    )


@st.composite
def traffic_selectors(draw: st.DrawFn) -> TrafficSelector:
    v = draw(st.sampled_from([4, 6]))
    a, b = sorted(int(draw(st.ip_addresses(v=v))) for _ in range(2))
    p1, p2 = sorted(draw(st.integers(0, 65535)) for _ in range(2))
    mk = ipaddress.IPv4Address if v == 4 else ipaddress.IPv6Address
    return TrafficSelector(str(mk(a)), str(mk(b)), draw(st.integers(0, 255)), p1, p2)


@st.composite
def sa_params(draw: st.DrawFn) -> SAParams:
    encr = draw(st.sampled_from(list(Encr)))
    bits = 256 if encr is Encr.CHACHA20_POLY1305 else draw(st.sampled_from([128, 192, 256]))
    integ = Integ.NONE if encr.is_aead else draw(st.sampled_from(list(Integ)[1:]))
    natt = draw(st.booleans())
    return SAParams(
        mode=draw(st.sampled_from(list(Mode))),
        encr=encr,
        encr_key_bits=bits,
        integ=integ,
        initiator_addr=str(draw(st.ip_addresses())),
        responder_addr=str(draw(st.ip_addresses())),
        tsi=tuple(draw(st.lists(traffic_selectors(), max_size=3))),
        tsr=tuple(draw(st.lists(traffic_selectors(), max_size=3))),
        natt_initiator_port=4500 if natt else None,
        natt_responder_port=4500 if natt else None,
        replay_window=draw(st.integers(0, 1024)),
    )


ids = st.binary(min_size=2, max_size=60)


@st.composite
def credentials(draw: st.DrawFn) -> Credential:
    return Credential(
        mode=ProtocolMode.HARDENED,
        handle=draw(st.binary(min_size=8, max_size=64)),
        generation=draw(st.integers(0, 2**32 - 1)),
        secret=draw(st.binary(min_size=32, max_size=32)),
        id_i=draw(ids),
        id_r=draw(ids),
        params=draw(sa_params()),
    )


@given(
    credentials(),
    st.binary(min_size=16, max_size=64),
    st.binary(min_size=16, max_size=64),
    st.sampled_from([b"", b"\x07" * 32]),
    st.integers(256, 2**32 - 1),
    st.integers(256, 2**32 - 1),
)
def test_run_keys_params_and_context_equal(
    cred: Credential, n_i: bytes, n_r: bytes, dh: bytes, spi_i2r: int, spi_r2i: int
) -> None:
    n = N()
    p = native.native_params(cred.params)
    assert p.params_bytes() == ks.params_bytes(cred.params)
    assert p.digest() == ks.params_digest(cred.params)
    assert native.python_params(p) == cred.params
    nc = native.native_credential(cred)
    assert native.python_credential(nc) == cred
    rk = ks.derive_run(cred, n_i, n_r, dh, spi_i2r, spi_r2i)
    got = n.run_keys(nc, n_i, n_r, dh, spi_i2r, spi_r2i)
    assert got == (
        rk.prk,
        ks.context(cred),
        rk.mac_i,
        rk.mac_r,
        rk.keymat,
        rk.successor_secret,
        rk.successor_handle,
    )
    m1, m2, pre = n_i * 3, n_r * 4, n_i + n_r
    assert n.mac_msg2(rk.mac_r, m1, pre) == ks.mac_msg2(rk.mac_r, m1, pre)
    assert n.mac_msg3(rk.mac_i, m1, m2, pre) == ks.mac_msg3(rk.mac_i, m1, m2, pre)


@given(sa_params(), st.data(), ids, ids)
def test_bootstrap_equal(params: SAParams, data: st.DataObject, id_i: bytes, id_r: bytes) -> None:
    def dk() -> DirectionKeys:
        return DirectionKeys(
            data.draw(st.integers(256, 2**32 - 1)),
            data.draw(st.binary(min_size=params.encr_key_len, max_size=params.encr_key_len)),
            data.draw(st.binary(min_size=params.integ.key_len, max_size=params.integ.key_len)),
        )

    a, b = dk(), dk()
    ref = ks.bootstrap_credential(params, a, b, id_i, id_r)
    got = N().bootstrap(
        native.native_params(params),
        (a.spi, a.encr_key, a.integ_key),
        (b.spi, b.encr_key, b.integ_key),
        id_i,
        id_r,
    )
    assert got == (ref.secret, ref.handle)


# low-order points (RFC 7748 / cr.yp.to/ecdh.html): the shared secret is all zeros
LOW_ORDER = [
    bytes(32),
    b"\x01" + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


@given(
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=32, max_size=32) | st.sampled_from(LOW_ORDER),
)
def test_x25519_equal_and_low_order_shares_refused(private: bytes, peer: bytes) -> None:
    n = N()
    key = X25519PrivateKey.from_private_bytes(private)
    assert n.x25519_public(private) == key.public_key().public_bytes_raw()
    try:
        expected: bytes | type = ks.x25519_shared_untrusted(key, peer)
    except DecodeError:
        expected = DecodeError
    try:
        got: bytes | type = n.x25519_shared(private, peer)
    except DecodeError:
        got = DecodeError
    assert got == expected
