"""``cache import`` is a reader of local input: one error type, and nothing written on error.

Every input of issue 21 (a non-UTF-8 file; fields of the wrong JSON type; generations and
counters out of range or not finite; deep nesting) and a few more (a tampered secret,
non-canonical parameters, a duplicated record) end in ``ExportFormatError`` naming the line
and field, with the destination exactly as it was, and ``cache list``/``cache stats`` still
working afterwards.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from resume.cli import EXIT_CONFIG, EXIT_OK, main
from store.codec import parse_params
from store.errors import ExportFormatError
from store.keys import Keyring, MasterKey
from store.maintenance import list_records, stats
from store.repository import Store
from store.transfer import export_jsonl, import_jsonl
from tests.store.helpers import make_credential

NOW = 1_700_000_000.0


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Keyring, list[str]]:
    """An export with a header and three records (one a paper record)."""
    kr = Keyring([MasterKey.generate()])
    with Store.open(str(tmp_path / "src.db"), kr) as s:
        for i in range(3):
            s.upsert_full_ike("responder", make_credential(peer=f"p{i}.example", paper=i == 2), NOW)
        buf = io.StringIO()
        export_jsonl(s, buf)
    return kr, buf.getvalue().splitlines()


def _with(lines: list[str], lineno: int, change: Callable[[dict[str, Any]], None]) -> list[str]:
    out = list(lines)
    rec = json.loads(out[lineno - 1])
    change(rec)
    out[lineno - 1] = json.dumps(rec)
    return out


def _set(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(rec: dict[str, Any]) -> None:
        rec[field] = value

    return change


# (field, value) written into line 3's record; the error must name that field
WRONG = [
    ("params", 5), ("params", ["tunnel"]), ("params", {"mode": "tunnel"}), ("role", 5),
    ("role", []), ("role", "gateway"), ("mode", 5), ("mode", "PAPER"), ("key_id", 5),
    ("key_id", ["k1"]), ("key_id", "bad id!"), ("id_i", None), ("id_i", "not base64!"),
    ("generation", "x"), ("generation", -1), ("generation", 2**64), ("generation", 2**32),
    ("generation", 1.5), ("generation", True), ("bytes_total", 2**63), ("bytes_total", -5),
    ("bytes_total", 1e300), ("resumptions", 2**31), ("established_s", -1.0),
    ("full_ike_at", "yesterday"), ("uid", ""), ("uid", "x" * 33), ("handle", None),
    ("handle", ""), ("secret_wrapped", "AAAA"), ("prev_generation", 3),
    ("paper_wrapped", "A" * 40), ("params", '{"mode": "tunnel"}'),
]  # fmt: skip
# raw JSON text for values json.dumps will not write; the field must be named too
RAW = [
    ("generation", "Infinity", "generation"), ("bytes_total", "Infinity", "bytes_total"),
    ("full_ike_at", "NaN", "full_ike_at"), ("last_used_at", "-Infinity", "last_used_at"),
    ("established_s", "Infinity", "established_s"), ("params", "[" * 50_000, None),
]  # fmt: skip


def _import_fails(kr: Keyring, db: Path, data: bytes, line: int, field: str | None) -> str:
    with Store.open(str(db), kr) as dst:
        before = [r.to_json() for r in list_records(dst, NOW)]
        with pytest.raises(ExportFormatError) as info:
            import_jsonl(dst, data.splitlines(), name="x.jsonl")
        assert info.value.line == line and info.value.source == "x.jsonl", info.value
        if field is not None:  # the field, or a member of it ("params.encr")
            assert (info.value.field or "").split(".")[0] == field, info.value
        assert [r.to_json() for r in list_records(dst, NOW)] == before  # nothing written
        assert stats(dst, NOW)["entries"] == len(before)
    return str(info.value)


@pytest.mark.parametrize(("field", "value"), WRONG, ids=[f"{f}={v!r}"[:40] for f, v in WRONG])
def test_wrong_types_and_ranges(
    tmp_path: Path, exported: tuple[Keyring, list[str]], field: str, value: Any
) -> None:
    kr, lines = exported
    # the destination already holds a record: an error must leave it alone too
    with Store.open(str(tmp_path / "dst.db"), kr) as dst:
        dst.upsert_full_ike("initiator", make_credential(peer="kept.example"), NOW)
    bad = _with(lines, 3, _set(field, value))
    expect = field
    if field == "prev_generation":
        expect = "prev_handle"  # the first missing member of the prev_* group
    _import_fails(kr, tmp_path / "dst.db", "\n".join(bad).encode(), 3, expect)


@pytest.mark.parametrize(("field", "text", "named"), RAW)
def test_non_finite_numbers_and_deep_nesting(
    tmp_path: Path, exported: tuple[Keyring, list[str]], field: str, text: str, named: str | None
) -> None:
    kr, lines = exported
    rec = json.loads(lines[1])
    rec[field] = "@@"
    line = json.dumps(rec).replace('"@@"', text)
    data = "\n".join([lines[0], line, *lines[2:]]).encode()
    msg = _import_fails(kr, tmp_path / "dst.db", data, 2, named)
    assert "x.jsonl line 2" in msg


def test_not_utf8_not_json_no_header(tmp_path: Path, exported: tuple[Keyring, list[str]]) -> None:
    kr, lines = exported
    db = tmp_path / "dst.db"
    assert "not UTF-8" in _import_fails(kr, db, b"\xe7", 1, None)
    latin = f"{lines[0]}\n\xff\xfe\n".encode("latin-1")
    assert "not UTF-8" in _import_fails(kr, db, latin, 2, None)
    assert "header" in _import_fails(kr, db, b"", 1, None)
    assert "header" in _import_fails(kr, db, b'{"format": "something-else/1"}\n', 1, "format")
    assert "not JSON" in _import_fails(kr, db, f"{lines[0]}\n{{oops\n".encode(), 2, None)
    big = f'{lines[0]}\n"{"a" * (1 << 20)}"\n'.encode()
    assert "longer than" in _import_fails(kr, db, big, 2, None)


def test_tampering_duplicates_and_non_canonical_params(
    tmp_path: Path, exported: tuple[Keyring, list[str]]
) -> None:
    kr, lines = exported
    db = tmp_path / "dst.db"

    def flip(rec: dict[str, Any]) -> None:
        raw = bytearray(base64.b64decode(rec["secret_wrapped"]))
        raw[-1] ^= 1
        rec["secret_wrapped"] = base64.b64encode(bytes(raw)).decode()

    msg = _import_fails(kr, db, "\n".join(_with(lines, 2, flip)).encode(), 2, "secret_wrapped")
    assert "does not authenticate" in msg
    dup = [*lines, lines[1]]
    assert "same uid as line 2" in _import_fails(kr, db, "\n".join(dup).encode(), 5, "uid")

    def spaced(rec: dict[str, Any]) -> None:
        rec["params"] = json.dumps(json.loads(rec["params"]), sort_keys=True)

    msg = _import_fails(kr, db, "\n".join(_with(lines, 4, spaced)).encode(), 4, "params")
    assert "canonical" in msg

    def moved(rec: dict[str, Any]) -> None:  # another record's identity: the AAD fails
        rec["id_i"] = json.loads(lines[1])["id_i"]

    _import_fails(kr, db, "\n".join(_with(lines, 3, moved)).encode(), 3, "secret_wrapped")


def test_the_command_reports_file_line_field_without_a_traceback(
    tmp_path: Path,
    exported: tuple[Keyring, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kr, lines = exported
    kf = tmp_path / "k"
    kf.write_text(kr._keys[0].to_line() + "\n")
    monkeypatch.setenv("IKERESUME_MASTER_KEY_FILE", str(kf))
    f = tmp_path / "in.jsonl"
    db = tmp_path / "dst.db"
    f.write_bytes(b"\xe7")
    assert main(["cache", "import", str(f), "--db", str(db)]) == EXIT_CONFIG
    assert f"{f} line 1: not UTF-8" in capsys.readouterr().err
    f.write_text("\n".join(_with(lines, 3, _set("bytes_total", 2**63))) + "\n")
    assert main(["cache", "import", str(f), "--db", str(db)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"{f} line 3: bytes_total:" in err and "Traceback" not in err
    f.write_text("\n".join(lines) + "\n")
    assert main(["cache", "import", str(f), "--db", str(db), "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["imported"] == 3
    for cmd in (["list"], ["stats"]):
        assert main(["cache", *cmd, "--db", str(db), "--json"]) == EXIT_OK


@pytest.mark.parametrize(
    "text", ["[" * 100_000, "5", '"x"', '{"mode": 5}', '{"mode": "tunnel", "encr": []}', "{"]
)
def test_stored_parameters_decode_or_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="undecodable SA parameters"):
        parse_params(text)


def test_list_and_stats_report_a_corrupt_counter_instead_of_crashing(
    tmp_path: Path,
    exported: tuple[Keyring, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """What an import used to let in (``"bytes_total": Infinity``), written straight into the
    database: ``cache list`` and ``cache stats`` now name the problem (exit 1)."""
    import sqlite3

    kr, lines = exported
    db = tmp_path / "dst.db"
    with Store.open(str(db), kr) as s:
        import_jsonl(s, lines)
    con = sqlite3.connect(db)
    con.execute("UPDATE credentials SET bytes_total = 9e999 WHERE rowid = 1")  # +Infinity
    con.commit()
    con.close()
    for cmd in ("list", "stats"):
        assert main(["cache", cmd, "--db", str(db)]) == 1
        err = capsys.readouterr().err
        assert "CorruptRecord" in err and "Traceback" not in err, err
