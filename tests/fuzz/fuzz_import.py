"""Fuzz target: the reader of ``ikeresume cache import`` (``store.transfer.read_export``).

The input is a whole export file.  The reader must end in a list of validated records or
in its documented errors -- ``ExportFormatError`` for the file, ``MasterKeyError`` for a key
id no configured key has -- and never write (it has no store).  A record it accepts must
decode under the keyring into the credential the store would later read.
Seeds: an export of three records (hardened responder, hardened initiator with its
previous generation, paper) wrapped under this target's fixed key, and every import input
of issue 21.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from store.errors import ExportFormatError, MasterKeyError
from store.keys import Keyring, MasterKey
from store.transfer import read_export
from store.wrapping import unwrap_credential

KEYRING = Keyring([MasterKey("fuzz", hashlib.sha256(b"ikeresume fuzz import key").digest())])


def one_input(data: bytes) -> None:
    try:
        records = read_export(data.splitlines(), KEYRING, name="fuzz")
    except (ExportFormatError, MasterKeyError):
        return
    for r in records:
        c = unwrap_credential(
            KEYRING, r["uid"], r["role"], r["mode"], r["handle"], r["generation"], r["key_id"],
            r["secret_wrapped"], r["paper_wrapped"], r["id_i"], r["id_r"], r["params"],
        )  # fmt: skip
        assert c.generation == r["generation"] and c.handle == r["handle"]
        assert 0 <= r["bytes_total"] < 2**63 and 0 <= r["resumptions"] < 2**31


def _export() -> list[str]:
    import tempfile
    from io import StringIO
    from pathlib import Path

    from store.repository import Store
    from store.transfer import export_jsonl
    from tests.store.helpers import make_credential, successor

    with tempfile.TemporaryDirectory() as d, Store.open(str(Path(d) / "c.db"), KEYRING) as s:
        s.upsert_full_ike("responder", make_credential(peer="r.example"), 1e9)
        ini = make_credential(peer="i.example")
        s.upsert_full_ike("initiator", ini, 1e9)
        s.advance_initiator(ini.handle, ini.generation, successor(ini), 1e9 + 5)
        s.upsert_full_ike("responder", make_credential(peer="p.example", paper=True), 1e9)
        s.record_session("responder", ini.handle, duration_s=3, nbytes=7, ended_at=1e9 + 9)
        buf = StringIO()
        export_jsonl(s, buf)
    return buf.getvalue().splitlines()


def seeds() -> dict[str, bytes]:
    lines = _export()
    good = "\n".join(lines).encode() + b"\n"

    def field(value: str, name: str, line: int = 1) -> bytes:
        rec: dict[str, Any] = json.loads(lines[line])
        rec[name] = "@@"
        out = [*lines]
        out[line] = json.dumps(rec).replace('"@@"', value)
        return "\n".join(out).encode()

    out = {"export-3-records": good, "header-only": lines[0].encode()}
    out["issue21-not-utf8"] = b"\xe7"
    for name, value in (
        ("params", "5"), ("params", "[1]"), ("role", "5"), ("role", "[]"), ("mode", "5"),
        ("key_id", "5"), ("key_id", '["k"]'), ("id_i", "null"), ("generation", '"x"'),
        ("generation", "-1"), ("generation", str(2**64)), ("generation", "Infinity"),
        ("bytes_total", str(2**63)), ("bytes_total", "Infinity"), ("resumptions", str(2**31)),
        ("full_ike_at", "NaN"), ("params", json.dumps("[" * 5000)),
    ):  # fmt: skip
        tag = value.strip('"[]')[:12] or "empty"
        out[f"issue21-{name}-{tag}"] = field(value, name)
    out["issue21-deep-nesting"] = (lines[0] + "\n" + "[" * 100_000).encode()
    tampered = json.loads(lines[1])
    raw = bytearray(base64.b64decode(tampered["secret_wrapped"]))
    raw[-1] ^= 1
    tampered["secret_wrapped"] = base64.b64encode(bytes(raw)).decode()
    out["tampered-secret"] = (lines[0] + "\n" + json.dumps(tampered)).encode()
    return out
