"""The responder's fast paths give exactly what the reference constructions give.

HMAC/HKDF on hashlib against ``cryptography``; the per-tick responder PRF against one
HMAC-SHA-512; the struct parsers of messages 1 and 3 against the generic parser on arbitrary
(mutated) inputs; the struct builder of message 2 against the generic framer; ``finish_run``
against ``complete_run``; message 3 with and without message 2 in the response cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import struct
from collections.abc import Callable
from typing import Any, cast

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as c_hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from hypothesis import given
from hypothesis import strategies as st

from resume import keyschedule as ks
from resume.credential import Credential
from resume.errors import DecodeError
from resume.events import ResumptionComplete
from resume.initiator import Initiator, InitiatorConfig
from resume.responder import Responder, ResponderConfig
from resume.sa import Lifetimes, SAPair
from resume.testing import (
    CLIENT_ADDR,
    SERVER_ADDR,
    MemoryTable,
    answer_events,
    example_params,
    simulated_full_ike,
)
from resume.wire import (
    ResumeSA,
    _fast_auth_untrusted,
    _fast_init_untrusted,
    _request_untrusted,
    build_hardened_auth_prefix,
    build_hardened_init,
    build_hardened_resp_prefix,
    parse_request_untrusted,
)
from tests.resume.wire_oracle import build_hardened_resp_prefix_generic


def c_mac(algorithm: hashes.HashAlgorithm, key: bytes, data: bytes) -> bytes:
    h = c_hmac.HMAC(key, algorithm)
    h.update(data)
    return h.finalize()


@given(st.binary(max_size=200), st.binary(max_size=300), st.binary(max_size=80))
def test_hmac_is_cryptography_hmac(key: bytes, data: bytes, prefix: bytes) -> None:
    want = c_mac(hashes.SHA256(), key, data)
    assert ks.hmac_sha256(key, data) == want
    assert ks.HmacKey(key).mac(data) == want
    assert ks.HmacKey(key).with_prefix(prefix).mac(data) == c_mac(
        hashes.SHA256(), key, prefix + data
    )
    k512 = ks.HmacKey(key, 128)
    assert k512.mac(data) == c_mac(hashes.SHA512(), key, data)
    assert k512.with_prefix(prefix).mac(data) == hmac.digest(key, prefix + data, "sha512")


@given(st.binary(min_size=1, max_size=100), st.binary(max_size=100), st.integers(1, 300))
def test_hkdf_expand_is_cryptography_hkdf(prk: bytes, info: bytes, n: int) -> None:
    want = HKDFExpand(hashes.SHA256(), n, info).derive(prk)
    assert ks.hkdf_expand(prk, info, n) == want
    key = ks.HmacKey(prk)
    assert key.expand(info, n) == want
    assert key.expand(info, n) == want  # the key's state is not consumed


def test_hkdf_expand_length_bounds() -> None:
    assert len(ks.hkdf_expand(b"k" * 32, b"", 255 * 32)) == 255 * 32
    for n in (0, 255 * 32 + 1):
        with pytest.raises(ValueError):
            ks.hkdf_expand(b"k" * 32, b"", n)


@given(st.binary(min_size=32, max_size=32), st.booleans(), st.binary(max_size=32))
def test_run_secrets_same_keys_eager_or_lazy(prk: bytes, many: bool, dh: bytes) -> None:
    cred = simulated_full_ike()
    ctx = ks.context(cred)
    a, b = ks.RunSecrets(prk, ctx, many), ks.RunSecrets(prk, ctx, not many)

    def exp(label: bytes) -> bytes:
        return HKDFExpand(hashes.SHA256(), 32, label + ctx).derive(prk)

    assert a.mac_r() == b.mac_r() == exp(ks.L_MAC_R)
    assert a.mac_i() == b.mac_i() == exp(ks.L_MAC_I)
    assert a.keymat(300, 400, 72) == b.keymat(300, 400, 72)
    assert a.successor_secret() == b.successor_secret() == exp(ks.L_SUCCESSOR)


@given(
    st.binary(min_size=32, max_size=64),
    st.lists(st.integers(0, 2**40), min_size=1, max_size=8),
    st.sampled_from([("198.51.100.7", 500), ("2001:db8::1", 4500), ("10.0.0.1", 65535)]),
    st.binary(min_size=28, max_size=300),
)
def test_responder_prf_per_tick_state_is_the_plain_prf(
    secret: bytes, ticks: list[int], addr: tuple[str, int], msg1: bytes
) -> None:
    prf = ks.ResponderPrf(secret)
    for tick in ticks:  # any order: states are created, reused and evicted
        v = prf.values(tick, addr, msg1)
        assert v == ks.responder_values(secret, tick, addr, msg1)
        raw = hmac.digest(
            secret,
            ks.L_RESPONDER_VALUES + struct.pack(">Q", tick) + ks.addr_bytes(addr) + ks.lp(msg1),
            "sha512",
        )
        assert raw == ks.responder_prf(secret, tick, addr, msg1)
        assert v.nonce_r == raw[:32]


def _message1(handle: bytes, nonce: bytes, ke: bytes | None, spi_i: bytes) -> bytes:
    return build_hardened_init(spi_i, handle, ResumeSA(0x1234, 20, 256, 0, 2), nonce, ke)


messages = st.builds(
    _message1,
    st.binary(min_size=6, max_size=66),
    st.binary(min_size=14, max_size=258),
    st.one_of(st.none(), st.binary(min_size=32, max_size=32)),
    st.binary(min_size=8, max_size=8),
)


def _mutate(data: bytes, how: int, where: int, value: int) -> bytes:
    if not data:
        return data
    i = where % len(data)
    if how == 0:
        return data
    if how == 1:
        return data[:i] + bytes([value]) + data[i + 1 :]
    if how == 2:
        return data[:i]
    return data + bytes([value])


def _reference(data: bytes) -> object:
    try:
        return _request_untrusted(data, nested=False)
    except DecodeError:
        return DecodeError


def _fast(data: bytes) -> object:
    try:
        return parse_request_untrusted(data)
    except DecodeError:
        return DecodeError


@given(
    messages,
    st.binary(min_size=8, max_size=8),
    st.booleans(),
    st.integers(0, 3),
    st.integers(0, 2000),
    st.integers(0, 255),
)
def test_fast_parsers_agree_with_the_reference(
    m1: bytes, spi_r: bytes, as_msg3: bool, how: int, where: int, value: int
) -> None:
    data = m1
    if as_msg3:
        prefix = build_hardened_auth_prefix(m1[:8], spi_r, m1)
        data = prefix + hashlib.sha256(m1).digest()
    data = _mutate(data, how, where, value)
    assert _fast(data) == _reference(data)
    # and the fast path really answers the common case (it raises where it does not)
    if how == 0 and _reference(data) is not DecodeError:
        fast = _fast_auth_untrusted if as_msg3 else _fast_init_untrusted
        assert fast(data) == _reference(data)


def test_fast_parsers_take_memoryview_and_bytearray_via_the_reference() -> None:
    m1 = _message1(b"h" * 16, b"n" * 32, None, b"i" * 8)
    for view in (bytearray(m1), memoryview(m1)):
        assert parse_request_untrusted(cast(bytes, view)) == parse_request_untrusted(m1)


@given(
    st.binary(min_size=8, max_size=8),
    st.binary(min_size=8, max_size=8),
    st.integers(256, 2**32 - 1),
    st.binary(min_size=16, max_size=256),
    st.one_of(st.none(), st.binary(min_size=32, max_size=32)),
)
def test_message2_builder_is_the_generic_framer(
    spi_i: bytes, spi_r: bytes, spi: int, nonce: bytes, ke: bytes | None
) -> None:
    sa = ResumeSA(spi, 12, 128, 12, 1)
    got = build_hardened_resp_prefix(spi_i, spi_r, sa, nonce, ke)
    assert got == build_hardened_resp_prefix_generic(spi_i, spi_r, sa, nonce, ke)


def test_finish_run_is_complete_run() -> None:
    cred = simulated_full_ike()
    lt = Lifetimes(soft_seconds=10)
    rs = ks.run_secrets(cred, b"i" * 32, b"r" * 32, b"")
    fresh = ks.run_secrets(cred, b"i" * 32, b"r" * 32, b"", many=True)
    sa, succ = ks.finish_run("responder", cred, fresh, 1000, 2000, lt)
    keys = ks.complete_run(cred, rs, 1000, 2000)
    assert sa == ks.sa_pair("responder", cred, keys, 1000, 2000, lt)
    assert succ == ks.successor_credential(cred, keys)
    # every field of the shared types is set (a new field would need finish_run updated)
    assert {f.name for f in dataclasses.fields(SAPair)} <= set(vars(sa))
    assert {f.name for f in dataclasses.fields(Credential)} <= set(vars(succ))


def _det_rng(label: bytes) -> Callable[[int], bytes]:
    counter = iter(range(1 << 30))

    def rng(n: int) -> bytes:
        return hashlib.sha512(label + next(counter).to_bytes(4, "big")).digest()[:n]

    return rng


def _message1_of(cred: Credential) -> bytes:
    init = Initiator(cred, InitiatorConfig(use_x25519=False))
    init.initiate(0.0)
    return init.datagrams_to_send(0.0)[0][0]


@pytest.mark.parametrize("x25519", [True, False])
def test_message3_same_result_with_message2_cached_or_rebuilt(x25519: bool) -> None:
    now = 1_000_000.0
    cred = simulated_full_ike(_det_rng(b"cred"))
    others = [simulated_full_ike() for _ in range(2)]
    results = []
    for evict in (False, True):
        resp = Responder(ResponderConfig(response_cache_size=1), b"K" * 32, _det_rng(b"r"))
        table = MemoryTable()
        for c in (cred, *others):
            table.add(c)
        init = Initiator(cred, InitiatorConfig(use_x25519=x25519), _det_rng(b"i"))
        init.initiate(now)
        [(m1, _)] = init.datagrams_to_send(now)
        resp.receive_datagram(m1, CLIENT_ADDR, now)
        answer_events(resp, table, now)
        [(m2, _)] = resp.datagrams_to_send(now)
        if evict:  # other peers' messages 2 push ours out of the one-entry cache
            for other in others:
                resp.receive_datagram(_message1_of(other), ("203.0.113.1", 500), now)
                answer_events(resp, table, now)
                assert len(resp.datagrams_to_send(now)) == 1
        init.receive_datagram(m2, SERVER_ADDR, now)
        init.successor_saved(now)
        [(m3, _)] = init.datagrams_to_send(now)
        resp.receive_datagram(m3, CLIENT_ADDR, now)
        done = [e for e in answer_events(resp, table, now) if isinstance(e, ResumptionComplete)]
        assert len(done) == 1
        assert resp.stats["msg3_cached_msg2"] == (0 if evict else 1)
        results.append(done[0])
    cached, rebuilt = results
    assert cached.sa == rebuilt.sa and cached.successor == rebuilt.successor


def test_cached_message2_does_not_bypass_the_cookie() -> None:
    """A message 3 whose responder SPI is wrong is refused although message 2 is cached."""
    now = 1_000_000.0
    cred = simulated_full_ike()
    resp = Responder(ResponderConfig(), b"K" * 32)
    table = MemoryTable()
    table.add(cred)
    init = Initiator(cred, InitiatorConfig(use_x25519=False))
    init.initiate(now)
    [(m1, _)] = init.datagrams_to_send(now)
    resp.receive_datagram(m1, CLIENT_ADDR, now)
    answer_events(resp, table, now)
    [(m2, _)] = resp.datagrams_to_send(now)
    init.receive_datagram(m2, SERVER_ADDR, now)
    init.successor_saved(now)
    [(m3, _)] = init.datagrams_to_send(now)
    forged = m3[:8] + bytes(b ^ 0xFF for b in m3[8:16]) + m3[16:]
    resp.receive_datagram(forged, CLIENT_ADDR, now)
    assert not [e for e in answer_events(resp, table, now) if isinstance(e, ResumptionComplete)]
    assert resp.stats["nack_stale_or_forged_cookie"] == 1
    # two ticks later the cached message 2 is of no use either
    late = now + 2 * ResponderConfig().cookie_tick_seconds
    resp.receive_datagram(m3, CLIENT_ADDR, late)
    assert not [e for e in answer_events(resp, table, late) if isinstance(e, ResumptionComplete)]
    assert resp.stats["nack_stale_or_forged_cookie"] == 2


def test_params_memo_by_value_never_mixes_parameter_sets() -> None:
    from resume.sa import Encr, Integ, TrafficSelector

    def variants() -> list[Any]:
        base = example_params()
        return [
            base,
            example_params(Encr.AES_CBC, Integ.HMAC_SHA2_256_128),
            dataclasses.replace(base, tsr=(TrafficSelector.from_network("10.1.0.0/16"),)),
            dataclasses.replace(base, tsi=(TrafficSelector.host("10.8.0.7", protocol=6),)),
            dataclasses.replace(base, encr_key_bits=128),
            dataclasses.replace(base, initiator_addr="203.0.113.5"),  # not in the digest
        ]

    for _ in range(2):  # fresh objects each time: identity misses, value hits
        for p in variants():
            info = ks.params_info(p)
            assert info.digest == hashlib.sha256(ks.L_PARAMS + ks.params_bytes(p)).digest()
            assert info.wire == (int(p.encr), p.encr_key_bits, int(p.integ), ks.mode_code(p.mode))
            assert (info.encr_len, info.keymat_len) == (p.encr_key_len, p.key_material_len)
