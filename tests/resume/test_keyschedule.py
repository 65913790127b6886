"""Key schedule properties that the vectors alone do not show."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from resume import keyschedule as ks
from resume.sa import DirectionKeys, Encr, Integ
from resume.testing import example_params, simulated_full_ike


@given(
    st.binary(max_size=64),
    st.binary(min_size=1, max_size=64),
    st.binary(max_size=64),
    st.integers(1, 200),
)
def test_extract_expand_is_rfc5869_hkdf(salt: bytes, ikm: bytes, info: bytes, n: int) -> None:
    ours = ks.hkdf_expand(ks.hkdf_extract(salt, ikm), info, n)
    assert ours == HKDF(hashes.SHA256(), n, salt or None, info).derive(ikm)


def test_bootstrap_is_symmetric_and_bound_to_every_input() -> None:
    p = example_params()
    i2r = DirectionKeys(0x1001, os.urandom(36), b"")
    r2i = DirectionKeys(0x2002, os.urandom(36), b"")
    a = ks.bootstrap_credential(p, i2r, r2i, b"\x02a", b"\x02b")
    b = ks.bootstrap_credential(p, i2r, r2i, b"\x02a", b"\x02b")
    assert a == b and a.generation == 0 and a.handle == ks.handle_for(a.secret)
    variants = [
        ks.bootstrap_credential(p, r2i, i2r, b"\x02a", b"\x02b"),  # directions swapped
        ks.bootstrap_credential(p, i2r, r2i, b"\x02b", b"\x02a"),  # identities swapped
        ks.bootstrap_credential(
            example_params(Encr.AES_CBC, Integ.HMAC_SHA2_256_128), i2r, r2i, b"\x02a", b"\x02b"
        ),
        ks.bootstrap_credential(
            p, DirectionKeys(0x1003, i2r.encr_key, b""), r2i, b"\x02a", b"\x02b"
        ),
    ]
    assert len({v.secret for v in variants} | {a.secret}) == 5
    assert a.secret not in (i2r.encr_key[:32], r2i.encr_key[:32])


def test_run_keys_depend_on_nonces_spis_dh_and_generation() -> None:
    cred = simulated_full_ike()
    base = ks.derive_run(cred, b"i" * 32, b"r" * 32, b"", 1000, 2000)
    others = [
        ks.derive_run(cred, b"j" * 32, b"r" * 32, b"", 1000, 2000),
        ks.derive_run(cred, b"i" * 32, b"s" * 32, b"", 1000, 2000),
        ks.derive_run(cred, b"i" * 32, b"r" * 32, b"d" * 32, 1000, 2000),
        ks.derive_run(cred, b"i" * 32, b"r" * 32, b"", 1001, 2000),
        ks.derive_run(cred, b"i" * 32, b"r" * 32, b"", 1000, 2001),
    ]
    for o in others:
        assert o.keymat != base.keymat
    # nonces/dh change the MAC keys and successor too; SPIs only the KEYMAT
    assert others[3].mac_i == base.mac_i and others[3].successor_secret == base.successor_secret
    assert len({base.mac_i, base.mac_r, base.successor_secret}) == 3
    # i->r and r->i halves differ (no key shared between directions)
    half = len(base.keymat) // 2
    assert base.keymat[:half] != base.keymat[half:]
    # successor: new secret and new, unlinkable handle
    succ = ks.successor_credential(cred, base)
    assert succ.generation == cred.generation + 1
    assert succ.secret != cred.secret and succ.handle != cred.handle
    assert succ.handle == ks.handle_for(succ.secret)


def test_fingerprints_do_not_reveal_the_key() -> None:
    k = os.urandom(32)
    fp = ks.fingerprint(k)
    assert len(fp) == 16 and fp not in k.hex()


def test_esp_spi_never_reserved() -> None:
    assert ks.esp_spi_from(b"\x00\x00\x00\x00") == 256
    assert ks.esp_spi_from(b"\x00\x00\x00\xff") == 511
    assert ks.esp_spi_from(b"\x00\x00\x01\x00") == 256
    assert ks.esp_spi_from(b"\xff\xff\xff\xff") == 2**32 - 1
