"""Master keys: parsing, loading, wrapping with AAD binding."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store.errors import CorruptRecord, MasterKeyError
from store.keys import ENV_KEY, ENV_KEY_FILE, Keyring, MasterKey, derive_key_id, record_aad


def test_parse_hex_base64_and_explicit_id() -> None:
    raw = bytes(range(32))
    assert MasterKey.parse(raw.hex()) == MasterKey(derive_key_id(raw), raw)
    assert MasterKey.parse(base64.b64encode(raw).decode()).key == raw
    k = MasterKey.parse("site-a:" + raw.hex())
    assert k.key_id == "site-a" and k.key == raw
    assert MasterKey.parse(k.to_line()) == k


@pytest.mark.parametrize("text", ["", "abcd", "00" * 31, "id with space:" + "00" * 32, "x:!!"])
def test_bad_keys_are_rejected_with_a_message(text: str) -> None:
    with pytest.raises(MasterKeyError):
        Keyring.from_text(text)


def test_load_order_file_then_env(tmp_path: Path) -> None:
    a, b = MasterKey.generate("a"), MasterKey.generate("b")
    f = tmp_path / "k"
    f.write_text(f"# current first\n{a.to_line()}\n{b.to_line()}\n")
    kr = Keyring.load(f, env={})
    assert kr.current_id == "a" and kr.key_ids == ("a", "b")
    assert Keyring.load(env={ENV_KEY_FILE: str(f)}).current_id == "a"
    assert Keyring.load(env={ENV_KEY: f"{b.to_line()},{a.to_line()}"}).current_id == "b"
    with pytest.raises(MasterKeyError, match="no master key"):
        Keyring.load(env={})
    with pytest.raises(MasterKeyError, match="cannot read"):
        Keyring.load(tmp_path / "missing", env={})
    with pytest.raises(MasterKeyError, match="twice"):
        Keyring([a, a])


def test_unwrap_needs_same_key_and_aad() -> None:
    a, b = MasterKey.generate(), MasterKey.generate()
    kr = Keyring([a])
    aad = record_aad(b"secret", "responder", "hardened", b"h" * 16, 3, b"\x00" * 32)
    kid, blob = kr.wrap(b"s" * 32, aad)
    assert kr.unwrap(kid, blob, aad) == b"s" * 32
    with pytest.raises(MasterKeyError, match="not configured"):
        Keyring([b]).unwrap(kid, blob, aad)
    with pytest.raises(CorruptRecord):
        kr.unwrap(
            kid, blob, record_aad(b"secret", "responder", "hardened", b"h" * 16, 4, b"\x00" * 32)
        )
    with pytest.raises(CorruptRecord, match="truncated"):
        kr.unwrap(kid, blob[:10], aad)
    rotated = Keyring([b, a])  # new current key, old one still unwraps
    assert rotated.unwrap(kid, blob, aad) == b"s" * 32
    assert rotated.wrap(b"x", aad)[0] == b.key_id


@given(st.binary(min_size=1, max_size=64), st.integers(0, 2**40), st.binary(max_size=40))
def test_any_change_of_aad_fields_breaks_unwrap(handle: bytes, gen: int, secret: bytes) -> None:
    kr = Keyring([MasterKey(derive_key_id(b"\x01" * 32), b"\x01" * 32)])
    bind = b"\x07" * 32
    aad = record_aad(b"secret", "initiator", "hardened", handle, gen, bind)
    kid, blob = kr.wrap(secret, aad)
    assert kr.unwrap(kid, blob, aad) == secret
    for other in (
        record_aad(b"paper", "initiator", "hardened", handle, gen, bind),
        record_aad(b"secret", "responder", "hardened", handle, gen, bind),
        record_aad(b"secret", "initiator", "paper", handle, gen, bind),
        record_aad(b"secret", "initiator", "hardened", handle + b"\x00", gen, bind),
        record_aad(b"secret", "initiator", "hardened", handle, gen + 1, bind),
        record_aad(b"secret", "initiator", "hardened", handle, gen, b"\x08" * 32),
    ):
        with pytest.raises(CorruptRecord):
            kr.unwrap(kid, blob, other)
