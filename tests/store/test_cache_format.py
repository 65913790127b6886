"""``specs/cache-format.md`` is enough to write an export and to read one.

The writer here follows the spec's text only: the key file line, the key id, the canonical
parameters text, the binding, the AAD and the AES-256-GCM wrapping are built with
``cryptography`` and the standard library, never with the store's own functions; the
result must import and resume-look-up as the spec says.  The reader does the reverse on
an export the store wrote, as a migration tool would.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import io
import json
import os
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from resume.cli import EXIT_OK, main
from store.keys import Keyring
from store.repository import Store
from store.transfer import export_jsonl

ID_I = b"\x02road.example.org"  # credential form: ID_FQDN, then the name
ID_R = b"\x01\xc6\x33\x64\x01"  # ID_IPV4_ADDR 198.51.100.1
PARAMS = {
    "mode": "tunnel", "encr": 20, "encr_key_bits": 256, "integ": 0,
    "initiator_addr": "192.0.2.10", "responder_addr": "198.51.100.1",
    "tsi": [{"start_addr": "192.0.2.10", "end_addr": "192.0.2.10", "protocol": 0,
             "start_port": 0, "end_port": 65535}],
    "tsr": [{"start_addr": "10.8.0.0", "end_addr": "10.8.255.255", "protocol": 0,
             "start_port": 0, "end_port": 65535}],
    "natt_initiator_port": 4500, "natt_responder_port": 4500, "replay_window": 128,
}  # fmt: skip


def _key_id(key: bytes) -> str:
    """Section 3: "k" | first 12 hex digits of SHA-256("ikeresume master key id" | 0x00 | key)."""
    return "k" + hashlib.sha256(b"ikeresume master key id\x00" + key).hexdigest()[:12]


def _canonical(obj: Any) -> str:
    """Section 4: keys sorted at every level, no whitespace."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _aad(purpose: bytes, role: str, mode: str, handle: bytes, generation: int,
         params: str) -> bytes:  # fmt: skip
    binding = hashlib.sha256(
        b"ikeresume-store binding v1\x00"
        + struct.pack(">I", len(ID_I)) + ID_I + struct.pack(">I", len(ID_R)) + ID_R
        + params.encode()
    ).digest()  # fmt: skip
    return (
        b"ikeresume-store/v1\x00" + purpose + b"\x00" + role.encode() + b"\x00"
        + mode.encode() + b"\x00" + struct.pack(">H", len(handle)) + handle
        + struct.pack(">Q", generation) + binding
    )  # fmt: skip


def _wrap(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _b64(b: bytes | None) -> str | None:
    return None if b is None else base64.b64encode(b).decode()


def _handle(secret: bytes) -> bytes:
    return hmac.digest(secret, b"ikeresume v1 handle", "sha256")[:16]


def _record(key: bytes, role: str, generation: int, secret: bytes, now: float,
            prev: tuple[int, bytes] | None = None) -> dict[str, Any]:  # fmt: skip
    params = _canonical(PARAMS)
    handle = _handle(secret)
    rec: dict[str, Any] = {
        "uid": os.urandom(16).hex(), "role": role, "mode": "hardened",
        "handle": _b64(handle), "generation": generation, "key_id": _key_id(key),
        "secret_wrapped": _b64(_wrap(key, secret, _aad(b"secret", role, "hardened", handle,
                                                        generation, params))),
        "paper_wrapped": None, "prev_handle": None, "prev_generation": None,
        "prev_key_id": None, "prev_secret_wrapped": None, "prev_paper_wrapped": None,
        "id_i": _b64(ID_I), "id_r": _b64(ID_R), "params": params,
        "full_ike_at": now, "last_used_at": now, "established_s": 0, "bytes_total": 0,
        "resumptions": 0, "created_at": now,
    }  # fmt: skip
    if prev is not None:
        pg, ps = prev
        ph = _handle(ps)
        aad = _aad(b"secret", role, "hardened", ph, pg, params)
        rec.update(prev_handle=_b64(ph), prev_generation=pg, prev_key_id=_key_id(key),
                   prev_secret_wrapped=_b64(_wrap(key, ps, aad)))  # fmt: skip
    return rec


def test_a_record_written_from_the_spec_imports_and_resolves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = os.urandom(32)
    key_file = tmp_path / "master.key"
    key_file.write_text(key.hex() + "\n")  # section 3: no id given, the id is derived
    monkeypatch.setenv("IKERESUME_MASTER_KEY_FILE", str(key_file))
    now = time.time()
    s_resp, s_ini, s_prev = os.urandom(32), os.urandom(32), os.urandom(32)
    lines = [
        {"format": "ikeresume-cache-export/1", "dialect": "hand-written"},
        _record(key, "responder", 7, s_resp, now),
        _record(key, "initiator", 8, s_ini, now, prev=(7, s_prev)),
    ]
    export = tmp_path / "hand.jsonl"
    export.write_text("".join(json.dumps(x) + "\r\n" for x in lines))  # CRLF is allowed
    db = tmp_path / "cache.db"
    assert main(["cache", "import", str(export), "--db", str(db)]) == EXIT_OK
    with Store.open(str(db), Keyring.from_file(key_file)) as s:
        r = s.lookup(_handle(s_resp), now + 1)
        assert r is not None and r.credential is not None
        assert r.credential.secret == s_resp and r.credential.generation == 7
        assert (r.credential.id_i, r.credential.id_r) == (ID_I, ID_R)
        assert r.credential.params.tsr[0].end_addr == "10.8.255.255"
        i = s.lookup_peer(ID_R, now + 1)
        assert i is not None and i.credential is not None and i.previous is not None
        assert i.credential.secret == s_ini and i.previous.secret == s_prev
        assert i.previous.generation == 7


def test_an_export_is_readable_from_the_spec(tmp_path: Path) -> None:
    """A migration tool's view: decrypt what the store exported, from the spec alone."""
    key = os.urandom(32)
    kf = tmp_path / "k"
    kf.write_text(f"site-a:{base64.b64encode(key).decode()}\n")  # explicit id, base64 key
    now = time.time()
    secret = os.urandom(32)
    imported = tmp_path / "in.jsonl"
    header = {"format": "ikeresume-cache-export/1"}
    rec = _record(key, "responder", 0, secret, now)
    # the key id is not in the AAD: naming the key by its explicit id is all it takes
    rec["key_id"] = "site-a"
    with Store.open(str(tmp_path / "a.db"), Keyring.from_file(kf)) as s:
        imported.write_text(json.dumps(header) + "\n" + json.dumps(rec) + "\n")
        assert main(["cache", "import", str(imported), "--db", str(tmp_path / "a.db"),
                     "--key-file", str(kf)]) == EXIT_OK  # fmt: skip
        buf = io.StringIO()
        assert export_jsonl(s, buf) == 1
    head, line = buf.getvalue().splitlines()
    assert json.loads(head)["format"] == "ikeresume-cache-export/2"
    got = json.loads(line)
    assert set(got) == set(rec) | {"lineage", "prev_lineage"}  # format 2 (section 5)
    assert (got["lineage"], got["prev_lineage"]) == ("unknown", None)  # a format 1 record
    handle = base64.b64decode(got["handle"])
    blob = base64.b64decode(got["secret_wrapped"])
    aad = _aad(b"secret", got["role"], got["mode"], handle, got["generation"], got["params"])
    assert AESGCM(key).decrypt(blob[:12], blob[12:], aad) == secret
    assert got["params"] == _canonical(json.loads(got["params"]))


def test_format_2_carries_the_lineage_both_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Section 1's ``lineage``/``prev_lineage``: imported as written, exported again, and a
    value that is not a lineage is refused naming the line and field."""
    key = os.urandom(32)
    key_file = tmp_path / "master.key"
    key_file.write_text(key.hex() + "\n")
    monkeypatch.setenv("IKERESUME_MASTER_KEY_FILE", str(key_file))
    now = time.time()
    s_resp, s_ini, s_prev = os.urandom(32), os.urandom(32), os.urandom(32)
    resp = _record(key, "responder", 3, s_resp, now) | {
        "lineage": "hybrid-pq", "prev_lineage": None,
    }  # fmt: skip
    ini = _record(key, "initiator", 4, s_ini, now, prev=(3, s_prev)) | {
        "lineage": "pq-resumed", "prev_lineage": "classical",
    }  # fmt: skip
    header = {"format": "ikeresume-cache-export/2"}
    export = tmp_path / "v2.jsonl"
    export.write_text("".join(json.dumps(x) + "\n" for x in (header, resp, ini)))
    db = tmp_path / "cache.db"
    assert main(["cache", "import", str(export), "--db", str(db)]) == EXIT_OK
    with Store.open(str(db), Keyring.from_file(key_file)) as s:
        r = s.lookup(_handle(s_resp), now + 1)
        assert r is not None and r.credential is not None
        assert r.credential.lineage.value == "hybrid-pq"
        i = s.lookup_peer(ID_R, now + 1)
        assert i is not None and i.credential is not None and i.previous is not None
        assert (i.credential.lineage.value, i.previous.lineage.value) == (
            "pq-resumed",
            "classical",
        )
        buf = io.StringIO()
        assert export_jsonl(s, buf) == 2
    out = {json.loads(x).get("role"): json.loads(x) for x in buf.getvalue().splitlines()[1:]}
    assert (out["responder"]["lineage"], out["initiator"]["prev_lineage"]) == (
        "hybrid-pq",
        "classical",
    )
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(header) + "\n" + json.dumps(resp | {"lineage": "quantum"}) + "\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["cache", "import", str(bad), "--db", str(tmp_path / "other.db")])
    assert rc != EXIT_OK and "line 2" in err.getvalue() and "lineage" in err.getvalue()
