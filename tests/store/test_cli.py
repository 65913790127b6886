"""``ikeresume cache ...`` end to end through the real dispatcher, JSON output asserted."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from resume.cli import EXIT_CONFIG, EXIT_ERROR, main
from resume.credential import Lineage
from store.keys import Keyring
from store.repository import Store
from tests.store.helpers import make_credential, successor

NOW = 1_800_000_000.0


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, object]:
    rc = main(list(argv))
    out = capsys.readouterr().out
    return rc, (json.loads(out) if "--json" in argv and out.strip() else out)


@pytest.fixture
def setup(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Path, Store]]:
    monkeypatch.delenv("IKERESUME_MASTER_KEY", raising=False)
    monkeypatch.delenv("IKERESUME_MASTER_KEY_FILE", raising=False)
    keyf = tmp_path / "master.key"
    rc, out = run(capsys, "cache", "keygen", "-o", str(keyf), "--json")
    assert rc == 0 and isinstance(out, dict) and out["output"] == str(keyf)
    assert oct(os.stat(keyf).st_mode & 0o777) == "0o600"
    store = Store.open(db_url, Keyring.from_file(keyf))
    yield db_url, keyf, store
    store.close()


def test_list_show_stats_revoke(
    setup: tuple[str, Path, Store], capsys: pytest.CaptureFixture[str]
) -> None:
    url, keyf, store = setup
    a, b = make_credential(peer="a.example"), make_credential(peer="b.example")
    a = dataclasses.replace(a, lineage=Lineage.HYBRID_PQ)
    uid_a = store.upsert_full_ike("responder", a, NOW)
    store.upsert_full_ike("initiator", b, NOW - 8 * 86400)  # beyond the default 7-day cap
    rc, recs = run(capsys, "cache", "list", "--db", url, "--json", "--now", str(NOW))
    assert rc == 0 and isinstance(recs, list) and len(recs) == 2
    by_peer = {r["id_i"]: r for r in recs}
    assert by_peer["fqdn:a.example"]["usable"] is True
    assert by_peer["fqdn:b.example"]["refusal"] == "chain_age"
    assert (by_peer["fqdn:a.example"]["lineage"], by_peer["fqdn:a.example"]["pq"]) == (
        "hybrid-pq",
        True,
    )
    assert (by_peer["fqdn:b.example"]["lineage"], by_peer["fqdn:b.example"]["pq"]) == (
        "unknown",
        False,
    )
    assert all("secret" not in k for r in recs for k in r)
    rc, recs = run(capsys, "cache", "list", "--db", url, "--role", "initiator", "--json")
    assert [r["id_i"] for r in recs] == ["fqdn:b.example"]  # type: ignore[union-attr]
    rc, rec = run(capsys, "cache", "show", uid_a, "--db", url, "--key-file", str(keyf),
                  "--verify", "--json")  # fmt: skip
    assert rc == 0 and rec["uid"] == uid_a and rec["secret_verified"] is True  # type: ignore[index]
    assert rec["params"]["tsr"][0]["start_addr"] == "10.8.0.0"  # type: ignore[index]
    assert rec["lineage"] == "hybrid-pq"  # type: ignore[index]
    rc, s = run(capsys, "cache", "stats", "--db", url, "--json", "--now", str(NOW))
    assert rc == 0 and s["entries"] == 2 and s["purgeable_now"] == 1  # type: ignore[index]
    assert s["by_lineage"] == {"hybrid-pq": 1, "unknown": 1}  # type: ignore[index]
    rc, human = run(capsys, "cache", "list", "--db", url, "--now", str(NOW))
    assert "lineage: 1 hybrid-pq, 1 unknown" in str(human)  # the table may wrap its cells
    rc, out = run(capsys, "cache", "purge", "--db", url, "--json", "--now", str(NOW), "--dry-run")
    assert out == {"purged": 1, "dry_run": True}
    rc, out = run(capsys, "cache", "purge", "--db", url, "--json", "--now", str(NOW))
    assert out == {"purged": 1, "dry_run": False}
    rc, out = run(capsys, "cache", "revoke", a.handle.hex(), "--db", url, "--json")
    assert rc == 0 and out == {"revoked": 1, "uid": uid_a}
    rc, out = run(capsys, "cache", "revoke", a.handle.hex(), "--db", url, "--json")
    assert rc == EXIT_ERROR and out["revoked"] == 0  # type: ignore[index]
    rc, out = run(capsys, "cache", "show", "nope", "--db", url, "--json")
    assert rc == EXIT_ERROR and out["type"] == "NotFound"  # type: ignore[index]
    rc, _ = run(capsys, "cache", "list", "--db", url)  # human output renders
    assert rc == 0


def test_rotate_export_import(
    setup: tuple[str, Path, Store], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url, keyf, store = setup
    c = make_credential()
    store.upsert_full_ike("responder", c, NOW)
    newf = tmp_path / "new.key"
    run(capsys, "cache", "keygen", "-o", str(newf))
    both = tmp_path / "both.key"
    both.write_text(newf.read_text() + keyf.read_text())
    rc, out = run(capsys, "cache", "rotate-key", "--db", url, "--key-file", str(both), "--json")
    assert rc == 0 and out["rewrapped"] == 1 and out["failed"] == {}  # type: ignore[index]
    assert out["current_key_id"] == Keyring.from_file(newf).current_id  # type: ignore[index]
    exp = tmp_path / "export.jsonl"
    rc, out = run(capsys, "cache", "export", "--db", url, "-o", str(exp), "--json")
    assert rc == 0 and out["exported"] == 1  # type: ignore[index]
    assert c.secret.hex() not in exp.read_text()
    dst = tmp_path / "dst.db"
    rc, out = run(capsys, "cache", "import", str(exp), "--db", str(dst), "--key-file", str(keyf),
                  "--source-key-file", str(newf), "--json")  # fmt: skip
    assert rc == 0 and out["imported"] == 1  # type: ignore[index]
    with Store.open(str(dst), Keyring.from_file(keyf)) as d:
        assert d.lookup(successor(c).handle, NOW) is None
        r = d.lookup(c.handle, NOW)
        assert r is not None and r.credential == c


def test_errors_are_clear_and_typed(
    setup: tuple[str, Path, Store], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url, _keyf, store = setup
    store.upsert_full_ike("responder", make_credential(), NOW)
    rc, out = run(capsys, "cache", "list", "--json")
    assert rc == EXIT_CONFIG and "no database" in out["error"]  # type: ignore[index]
    wrong = tmp_path / "wrong.key"
    run(capsys, "cache", "keygen", "-o", str(wrong))
    rc, out = run(capsys, "cache", "rotate-key", "--db", url, "--key-file", str(wrong), "--json")
    assert rc == EXIT_CONFIG and out["type"] == "MasterKeyError"  # type: ignore[index]
    assert "wrong master key" in out["error"]  # type: ignore[index]
    rc, out = run(capsys, "cache", "stats", "--db", str(tmp_path / "no" / "x.db"), "--json")
    assert rc == EXIT_ERROR and out["type"] == "StoreUnavailable"  # type: ignore[index]
    rc, out = run(capsys, "cache", "keygen", "-o", str(wrong), "--json")
    assert rc == EXIT_CONFIG and "cannot create" in out["error"]  # type: ignore[index]
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[store]\nurl = "{url}"\n[policy]\nclocked = "1h"\nbogus = 1\n')
    rc, out = run(capsys, "cache", "stats", "--config", str(cfg), "--json")
    assert rc == EXIT_CONFIG and "bogus" in out["error"]  # type: ignore[index]
    cfg.write_text(f'[store]\nurl = "{url}"\n[policy]\nclocked = "1h"\n')
    rc, out = run(
        capsys, "cache", "stats", "--config", str(cfg), "--json", "--now", str(NOW + 7200)
    )
    assert rc == 0 and out["purgeable_now"] == 1 and out["policy"]["clocked"] == "1h"  # type: ignore[index]
