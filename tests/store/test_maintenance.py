"""Purge, stats, key rotation, export/import -- on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from store.errors import MasterKeyError, StoreConfigError
from store.keys import Keyring, MasterKey
from store.maintenance import find_record, list_records, purge, rotate_key, stats
from store.policy import Policy, Refusal
from store.repository import Store
from store.transfer import export_jsonl, import_jsonl
from tests.store.helpers import make_credential, successor

NOW = 1_800_000_000.0
H = 3600.0


def test_purge_deletes_exactly_what_the_policy_never_allows(
    open_store: Callable[..., Store],
) -> None:
    pol = Policy(clocked=10 * H, idle=2 * H, data=1000, max_resumptions=2, max_chain_age=None)
    store = open_store(pol)
    fresh = make_credential(peer="fresh.example")
    old = make_credential(peer="old.example")
    idle = make_credential(peer="idle.example")
    fat = make_credential(peer="fat.example")
    used = make_credential(peer="used.example")
    store.upsert_full_ike("responder", fresh, NOW)
    store.upsert_full_ike("responder", old, NOW - 10 * H)
    store.upsert_full_ike("responder", idle, NOW - 3 * H)
    store.upsert_full_ike("responder", fat, NOW)
    store.record_session("responder", fat.handle, duration_s=1, nbytes=1000, ended_at=NOW)
    store.upsert_full_ike("responder", used, NOW)
    u1 = successor(used)
    store.commit_ratchet(used.handle, 0, u1, NOW)
    u2 = successor(u1)
    store.commit_ratchet(u1.handle, 1, u2, NOW)
    recs = {r.id_i: r for r in list_records(store, NOW)}
    assert recs["fqdn:old.example"].refusal is Refusal.CLOCKED
    assert recs["fqdn:idle.example"].refusal is Refusal.IDLE
    assert recs["fqdn:fat.example"].refusal is Refusal.DATA
    assert recs["fqdn:used.example"].refusal is Refusal.RESUMPTIONS
    assert recs["fqdn:fresh.example"].refusal is None
    assert purge(store, NOW, dry_run=True) == 4
    assert len(list_records(store, NOW)) == 5
    assert purge(store, NOW) == 4
    left = list_records(store, NOW)
    assert [r.id_i for r in left] == ["fqdn:fresh.example"]
    assert purge(store, NOW) == 0


def test_stats(store: Store) -> None:
    assert stats(store, NOW)["entries"] == 0
    store.upsert_full_ike("responder", make_credential(peer="a.example"), NOW - 100)
    store.upsert_full_ike("initiator", make_credential(peer="b.example", paper=True), NOW)
    s = stats(store, NOW)
    assert s["entries"] == 2
    assert s["by_role"] == {"initiator": 1, "responder": 1}
    assert s["by_mode"] == {"hardened": 1, "paper": 1}
    assert s["oldest_full_ike_age_s"] == pytest.approx(100)
    assert 300 < s["bytes_per_record_avg"] < 2000
    assert s["by_key_id"] == {store.keyring.current_id: 2}  # type: ignore[union-attr]


def test_rotate_key_rewraps_online(open_store: Callable[..., Store], keyring: Keyring) -> None:
    store = open_store()
    creds = [make_credential(peer=f"p{i}.example", paper=i == 0) for i in range(5)]
    for c in creds:
        store.upsert_full_ike("responder", c, NOW)
    ini = make_credential(peer="ini.example")
    store.upsert_full_ike("initiator", ini, NOW)
    store.advance_initiator(ini.handle, 0, ini1 := successor(ini), NOW)
    new = MasterKey.generate()
    rotated_kr = Keyring([new, _key_of(keyring)])
    rotated = open_store(kr=rotated_kr)
    # a commit under the new keyring already wraps under the new key
    c1 = successor(creds[1])
    assert rotated.commit_ratchet(creds[1].handle, 0, c1, NOW)
    res = rotate_key(rotated, batch=2)
    assert res.rewrapped == 5 and res.already_current == 1 and not res.failed
    assert stats(rotated, NOW)["by_key_id"] == {new.key_id: 6}
    # the old key can be dropped now
    only_new = open_store(kr=Keyring([new]))
    for c in (creds[0], c1, *creds[2:]):
        r = only_new.lookup(c.handle, NOW)
        assert r is not None and r.credential == c
    r = only_new.lookup_peer(ini.id_r, NOW)
    assert r is not None and r.credential == ini1 and r.previous == ini
    assert rotate_key(only_new).rewrapped == 0
    with pytest.raises(MasterKeyError):
        open_store(kr=keyring)  # the old key alone no longer matches any record


def _key_of(kr: Keyring) -> MasterKey:
    return kr._keys[0]


def test_export_import_between_backends_and_keys(
    open_store: Callable[..., Store], keyring: Keyring, tmp_path: Path
) -> None:
    src = open_store()
    creds = [make_credential(peer=f"p{i}.example", paper=i == 1) for i in range(3)]
    for c in creds:
        src.upsert_full_ike("responder", c, NOW)
    src.record_session("responder", creds[0].handle, duration_s=5, nbytes=77, ended_at=NOW + 5)
    buf = io.StringIO()
    assert export_jsonl(src, buf) == 3
    text = buf.getvalue()
    for c in creds:
        assert c.secret.hex() not in text and c.secret not in text.encode()
    # same key, other backend (a SQLite file), then import again: skipped
    dst = Store.open(str(tmp_path / "dst.db"), keyring)
    assert import_jsonl(dst, io.StringIO(text)).imported == 3
    again = import_jsonl(dst, io.StringIO(text))
    assert again.imported == 0 and again.skipped_existing == 3
    assert import_jsonl(dst, io.StringIO(text), replace=True).replaced == 3
    for c in creds:
        r = dst.lookup(c.handle, NOW + 10)
        assert r is not None and r.credential == c
    r0 = dst.lookup(creds[0].handle, NOW + 10)
    assert r0 is not None and r0.counters.bytes_total == 77
    # a site with another master key: rejected unless told the source key ...
    other = Keyring([MasterKey.generate()])
    dst2 = Store.open(str(tmp_path / "dst2.db"), other)
    with pytest.raises(MasterKeyError, match="line 2"):
        import_jsonl(dst2, io.StringIO(text))
    assert stats(dst2, NOW)["entries"] == 0  # all-or-nothing
    res = import_jsonl(dst2, io.StringIO(text), source=keyring)
    assert res.imported == 3
    assert stats(dst2, NOW)["by_key_id"] == {other.current_id: 3}
    # ... or exported re-wrapped for it
    buf2 = io.StringIO()
    export_jsonl(src, buf2, rewrap_to=other)
    dst3 = Store.open(str(tmp_path / "dst3.db"), other)
    assert import_jsonl(dst3, io.StringIO(buf2.getvalue())).imported == 3
    r = dst3.lookup(creds[1].handle, NOW)
    assert r is not None and r.credential == creds[1]
    with pytest.raises(StoreConfigError, match="line 1"):
        import_jsonl(dst3, io.StringIO("garbage\n"))
    with pytest.raises(StoreConfigError, match="line 2"):
        import_jsonl(dst3, io.StringIO(text.splitlines()[0] + "\n{}\n"))
    for s in (dst, dst2, dst3):
        s.close()


def test_find_record_by_uid_or_handle(store: Store) -> None:
    c = make_credential()
    uid = store.upsert_full_ike("responder", c, NOW)
    a = find_record(store, uid, NOW)
    b = find_record(store, c.handle.hex(), NOW)
    assert a is not None and a == b and a.handle == c.handle.hex()
    assert "secret" not in str(a.to_json())
    assert find_record(store, "nope", NOW) is None


def test_schema_head_constant_is_alembics_head() -> None:
    """Opening a store skips alembic when the database is at SCHEMA_HEAD: keep them equal."""
    from store.engine import SCHEMA_HEAD, head_revision

    assert head_revision() == SCHEMA_HEAD
