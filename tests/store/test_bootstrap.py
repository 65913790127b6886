"""``ikeresume cache bootstrap`` and ``store.bootstrap``: generation 0 from an SA description.

What is checked: the derivation is spec 3.1's (recomputed here from the formulas), both
roles get the same credential from the same description, every bad input is refused with
the field's name and nothing written (not even a database file), key material is never
taken from the command line, and the lineage field is validated.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from resume.cli import EXIT_CONFIG, EXIT_OK, main
from resume.credential import Lineage
from resume.sa import Encr, Integ
from store.bootstrap import bootstrap
from store.errors import SADescriptionError
from store.keys import Keyring, MasterKey
from store.repository import Store
from store.sa_description import LINEAGES, parse_sa_description
from tests.store.sa_descriptions import DELETE, dumps, example_description, with_field

NOW = 1_700_000_000.0


@pytest.fixture
def key_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    key = tmp_path / "master.key"
    key.write_text(MasterKey.generate().to_line() + "\n")
    monkeypatch.setenv("IKERESUME_MASTER_KEY_FILE", str(key))
    monkeypatch.delenv("IKERESUME_MASTER_KEY", raising=False)
    return key


def _lp(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def _spec_generation_0(d: dict[str, Any]) -> tuple[bytes, bytes]:
    """S_0 and handle_0 from spec 3.1 and 5.1, computed here with ``cryptography``."""
    p = d["params"]
    assert p["encr"] == "aes-gcm-16" and p["integ"] == "none" and p["mode"] == "tunnel"

    def ts(addr_lo: bytes, addr_hi: bytes) -> bytes:
        return struct.pack(">BBHH", 7, 0, 0, 65535) + addr_lo + addr_hi

    params_bytes = (
        struct.pack(">BHHH", 2, 20, 256, 0)
        + b"\x01" + ts(bytes([10, 8, 0, 7]), bytes([10, 8, 0, 7]))
        + b"\x01" + ts(bytes([10, 0, 0, 0]), bytes([10, 0, 255, 255]))
    )  # fmt: skip
    digest = hashlib.sha256(b"ikeresume v1 params" + params_bytes).digest()
    k_i2r = bytes.fromhex(d["i_to_r"]["encr_key"].removeprefix("0x"))
    k_r2i = bytes.fromhex(d["r_to_i"]["encr_key"].removeprefix("0x"))
    spi_i2r = int(d["i_to_r"]["spi"], 16)
    spi_r2i = d["r_to_i"]["spi"]
    id_i, id_r = b"\x02road.example.org", b"\x02vpn.example.org"
    prk = hmac.digest(b"ikeresume v1 bootstrap", k_i2r + k_r2i, "sha256")
    info = (
        b"ikeresume v1 bootstrap" + struct.pack(">II", spi_i2r, spi_r2i)
        + _lp(id_i) + _lp(id_r) + digest
    )  # fmt: skip
    s0 = HKDFExpand(hashes.SHA256(), 32, info).derive(prk)
    return s0, hmac.digest(s0, b"ikeresume v1 handle", "sha256")[:16]


def test_generation_0_is_spec_3_1_on_both_roles(tmp_path: Path) -> None:
    d = example_description()
    kr = Keyring([MasterKey.generate()])
    secret, handle = _spec_generation_0(d)
    for role in ("initiator", "responder"):
        with Store.open(str(tmp_path / f"{role}.db"), kr) as s:
            res = bootstrap(s, role, dumps(d), NOW)  # type: ignore[arg-type]
            assert res.handle == handle and res.generation == 0 and res.lineage == "classical"
            got = s.lookup(handle, NOW + 1, role=role)  # type: ignore[arg-type]
            assert got is not None and got.credential is not None
            c = got.credential
            assert c.secret == secret and c.generation == 0
            assert c.lineage is Lineage.CLASSICAL  # stored with the record
            assert (c.id_i, c.id_r) == (b"\x02road.example.org", b"\x02vpn.example.org")
            assert c.params.encr is Encr.AES_GCM_16 and c.params.integ is Integ.NONE


def test_the_command_reads_stdin_or_a_file(tmp_path: Path, key_env: Path) -> None:
    d = example_description()
    _, handle = _spec_generation_0(d)
    f = tmp_path / "sa.json"
    f.write_bytes(dumps(d))
    env = dict(os.environ)
    base = [sys.executable, "-m", "resume.cli", "cache", "bootstrap", "--json"]
    by_stdin = subprocess.run(
        [*base, "--role", "responder", "--db", str(tmp_path / "r.db")],
        input=dumps(d), capture_output=True, env=env, check=False,
    )  # fmt: skip
    assert by_stdin.returncode == EXIT_OK, by_stdin.stderr
    out = json.loads(by_stdin.stdout)
    assert out["handle"] == handle.hex() and out["role"] == "responder"
    assert out["lineage"] == "classical" and "lineage_stored" not in out
    assert d["i_to_r"]["encr_key"] not in by_stdin.stdout.decode()
    rc = main(["cache", "bootstrap", "--role", "initiator", str(f), "--db", str(tmp_path / "i.db")])
    assert rc == EXIT_OK
    with Store.open(str(tmp_path / "i.db"), Keyring.from_file(key_env)) as s:
        got = s.lookup(handle, NOW, role="initiator")
        assert got is not None and got.credential is not None


BAD = [
    # (field to change, new value, field named in the error, words in the reason)
    ("i_to_r.encr_key", DELETE, "i_to_r.encr_key", "missing"),
    ("id_r", DELETE, "id_r", "missing"),
    ("params.tsr", DELETE, "params.tsr", "missing"),
    ("params", DELETE, "params", "missing"),
    ("i_to_r.encr_key", os.urandom(32).hex(), "i_to_r.encr_key", "32 bytes; AES_GCM_16 256"),
    ("r_to_i.encr_key", "abc", "r_to_i.encr_key", "hex digits"),
    ("r_to_i.integ_key", os.urandom(32).hex(), "r_to_i.integ_key", "NONE needs 0"),
    ("params.encr", "aes-ccm-16", "params.encr", "unknown encryption algorithm"),
    ("params.encr", 3, "params.encr", "unknown encryption algorithm"),
    ("params.integ", "hmac-md5", "params.integ", "unknown integrity algorithm"),
    ("params.integ", 12, "params.integ", "AEAD"),
    ("params.encr_key_bits", 512, "params.encr_key_bits", "takes 128 or 192 or 256"),
    ("i_to_r.spi", 255, "i_to_r.spi", "outside [256"),
    ("r_to_i.spi", "0x00000001", "r_to_i.spi", "reserved"),
    ("r_to_i.spi", 2**32, "r_to_i.spi", "outside"),
    ("r_to_i.spi", "c0000001", "r_to_i.spi", "'0x'"),
    ("r_to_i.spi", True, "r_to_i.spi", "boolean"),
    ("r_to_i.spi", float("inf"), "r_to_i.spi", "not Infinity"),
    ("id_i", float("nan"), "id_i", "not NaN"),
    ("params.replay_window", float("-inf"), "params.replay_window", "not -Infinity"),
    ("id_i", "road.example.org", "id_i", "type prefix"),
    ("id_i", "ipv4:2001:db8::1", "id_i", "not an ipv4"),
    ("params.mode", "beet", "params.mode", "neither"),
    ("params.tsi", [], "params.tsi", "needs 1 to 255"),
    ("params.tsi", ["10.0.0.0/33"], "params.tsi[0]", "not an address"),
    ("params.initiator_addr", "vpn.example.org", "params.initiator_addr", "not an IPv4"),
    ("params.natt_initiator_port", 4500, "params.natt_initiator_port", "both ports"),
    ("params.replay_window", -1, "params.replay_window", "outside"),
    ("lineage", "quantum", "lineage", "not one of"),
    ("encr_key", "00", "encr_key", "unknown field"),
    ("format", "ikeresume-sa-description/2", "format", "is not"),
]


@pytest.mark.parametrize(("path", "value", "field", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_the_field_and_writes_nothing(
    tmp_path: Path,
    key_env: Path,
    capsys: pytest.CaptureFixture[str],
    path: str,
    value: Any,
    field: str,
    words: str,
) -> None:
    d = with_field(example_description(), path, value)
    with pytest.raises(SADescriptionError) as info:
        parse_sa_description(dumps(d), source="sa.json")
    assert info.value.field == field and words in info.value.reason, str(info.value)
    f = tmp_path / "sa.json"
    f.write_bytes(dumps(d))
    db = tmp_path / "never.db"
    rc = main(["cache", "bootstrap", "--role", "responder", str(f), "--db", str(db)])
    assert rc == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"{f}: {field}:" in err and words in err
    assert not db.exists()  # nothing written, not even an empty cache


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"\xe7", "not UTF-8"),
        (b"", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"lineage": "ppk", "lineage": "classical"}', "appears twice"),
        (b"[" * 100_000, "nested too deeply"),
    ],
)
def test_documents_that_are_not_descriptions(raw: bytes, words: str) -> None:
    with pytest.raises(SADescriptionError, match=words):
        parse_sa_description(raw)


def test_a_failed_bootstrap_leaves_an_existing_cache_as_it_was(tmp_path: Path) -> None:
    kr = Keyring([MasterKey.generate()])
    d = example_description()
    with Store.open(str(tmp_path / "c.db"), kr) as s:
        first = bootstrap(s, "responder", dumps(d), NOW)
        bad = with_field(d, "i_to_r.spi", 7)
        with pytest.raises(SADescriptionError, match=r"i_to_r\.spi"):
            bootstrap(s, "responder", dumps(bad), NOW)
        got = s.lookup(first.handle, NOW)
        assert got is not None and got.credential is not None


def test_lineage_is_validated_and_defaults_to_unknown() -> None:
    d = example_description()
    for lineage in LINEAGES:
        assert parse_sa_description(dumps({**d, "lineage": lineage})).lineage == lineage
    del d["lineage"]
    assert parse_sa_description(dumps(d)).lineage == "unknown"


def test_no_option_takes_key_material(capsys: pytest.CaptureFixture[str]) -> None:
    """The only way in for keys is the description (a file or stdin): the parser has no
    option that could carry one on the command line."""
    with pytest.raises(SystemExit):
        main(["cache", "bootstrap", "--help"])
    helptext = capsys.readouterr().out
    options = {w.strip("[],") for w in helptext.split() if w.startswith(("-", "[-"))}
    assert not {o for o in options if "key" in o and o != "--key-file"}, options


def test_algorithm_names_and_numbers_are_the_same(tmp_path: Path) -> None:
    d = example_description()
    numbers = with_field(with_field(d, "params.encr", 20), "params.integ", 0)
    assert parse_sa_description(dumps(d)) == parse_sa_description(dumps(numbers))
