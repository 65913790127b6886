"""Bad input fails closed: clear typed error, no credential handed out, nothing deleted."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from store.committer import GroupCommitter
from store.errors import CorruptRecord, MasterKeyError, StoreError, StoreUnavailable
from store.keys import Keyring, MasterKey
from store.policy import Policy
from store.repository import Store
from tests.conftest import require
from tests.facilities import PostgresCluster, pg_available
from tests.store.helpers import make_credential, successor

NOW = 1_800_000_000.0


def _count(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM credentials").scalar_one())


def _tamper(store: Store, sql: str, *args: object) -> None:
    with store.engine.begin() as conn:
        conn.exec_driver_sql(sql.replace("?", "%s") if store.dialect == "postgresql" else sql,
                             args)  # fmt: skip


def test_flipped_ciphertext_bit_is_refused(store: Store) -> None:
    c = make_credential()
    store.upsert_full_ike("responder", c, NOW)
    with store.engine.connect() as conn:
        blob = bytes(conn.exec_driver_sql("SELECT secret_wrapped FROM credentials").scalar_one())
    bad = blob[:-1] + bytes([blob[-1] ^ 1])
    _tamper(store, "UPDATE credentials SET secret_wrapped = ?", bad)
    with pytest.raises(CorruptRecord, match="does not authenticate"):
        store.lookup(c.handle, NOW)
    assert _count(store) == 1
    with store.engine.connect() as conn:
        uid = conn.exec_driver_sql("SELECT uid FROM credentials").scalar_one()
    with pytest.raises(CorruptRecord):
        store.verify_record(uid)
    # a new full IKE of the same peers replaces the broken chain: the peer is back
    fresh = make_credential()
    store.upsert_full_ike("responder", fresh, NOW)
    r = store.lookup(fresh.handle, NOW)
    assert r is not None and r.credential == fresh


def test_swapped_ciphertexts_between_rows_are_refused(store: Store) -> None:
    a, b = make_credential(peer="a.example"), make_credential(peer="b.example")
    store.upsert_full_ike("responder", a, NOW)
    store.upsert_full_ike("responder", b, NOW)
    with store.engine.connect() as conn:
        rows = dict(
            (bytes(h), bytes(s))
            for h, s in conn.exec_driver_sql("SELECT handle, secret_wrapped FROM credentials")
        )
    _tamper(
        store,
        "UPDATE credentials SET secret_wrapped = ? WHERE handle = ?",
        rows[b.handle],
        a.handle,
    )
    with pytest.raises(CorruptRecord):
        store.lookup(a.handle, NOW)
    r = store.lookup(b.handle, NOW)
    assert r is not None and r.credential == b
    assert _count(store) == 2


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("id_i", b"\x02\x00\x00\x00mallory.example"),
        ("generation", 7),
        ("mode", "paper"),
    ],
)
def test_edited_trusted_fields_are_refused(store: Store, column: str, value: object) -> None:
    c = make_credential()
    store.upsert_full_ike("responder", c, NOW)
    _tamper(store, f"UPDATE credentials SET {column} = ?", value)
    with pytest.raises(CorruptRecord):
        store.lookup(c.handle, NOW)
    assert _count(store) == 1


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("generation", "7"),
        ("generation", -1),
        ("generation", 2.5),
        ("id_i", "mallory"),
        ("id_r", 42),
        ("secret_wrapped", "not a blob"),
        ("secret_wrapped", b"short"),
        ("params", 17),
        ("mode", 5),
        ("full_ike_at", "yesterday"),
        ("full_ike_at", "inf"),
        ("last_used_at", "nan"),
        ("resumptions", b"\x01"),
        ("key_id", 3),
    ],
)
def test_wrongly_typed_sqlite_values_are_typed_errors(
    tmp_path: Path, keyring: Keyring, column: str, value: object
) -> None:
    """SQLite stores any type in any column: a hand-edited row must still fail closed
    with a StoreError (never a TypeError from deep inside decoding, never a credential).
    (SQLite only: PostgreSQL's typed columns refuse these edits.)"""
    store = Store.open(str(tmp_path / "cache.db"), keyring, Policy())
    c = make_credential()
    store.upsert_full_ike("responder", c, NOW)
    _tamper(store, f"UPDATE credentials SET {column} = ?", value)
    with pytest.raises((CorruptRecord, MasterKeyError)):
        store.lookup(c.handle, NOW)
    assert _count(store) == 1
    store.close()


def test_edited_traffic_selectors_are_refused(store: Store) -> None:
    c = make_credential()
    store.upsert_full_ike("responder", c, NOW)
    with store.engine.connect() as conn:
        text = conn.exec_driver_sql("SELECT params FROM credentials").scalar_one()
    _tamper(store, "UPDATE credentials SET params = ?", text.replace("10.8.0.0", "10.0.0.0"))
    with pytest.raises(CorruptRecord, match="does not authenticate"):
        store.lookup(c.handle, NOW)
    _tamper(store, "UPDATE credentials SET params = ?", "{not json")
    with pytest.raises(CorruptRecord, match="undecodable"):
        store.lookup(c.handle, NOW)
    assert _count(store) == 1


def test_wrong_master_key_fails_at_open_and_at_lookup(
    open_store: Callable[..., Store], keyring: Keyring
) -> None:
    good = open_store()
    c = make_credential()
    good.upsert_full_ike("responder", c, NOW)
    wrong = Keyring([MasterKey.generate()])
    with pytest.raises(MasterKeyError, match="wrong master key"):
        open_store(kr=wrong)
    # a server that skips the check still refuses every lookup, with the reason
    unchecked = open_store(kr=wrong, verify_keys=False)
    with pytest.raises(MasterKeyError, match="not configured"):
        unchecked.lookup(c.handle, NOW)
    # same key id, different key bytes: caught by the stored key check
    impostor = Keyring([MasterKey(keyring.current_id, bytes(32))])
    with pytest.raises(MasterKeyError, match="not the key this database was written with"):
        open_store(kr=impostor)
    with pytest.raises(CorruptRecord):
        open_store(kr=impostor, verify_keys=False).lookup(c.handle, NOW)
    assert _count(good) == 1
    r = good.lookup(c.handle, NOW)
    assert r is not None and r.credential == c


def test_operations_needing_the_key_say_so(open_store: Callable[..., Store]) -> None:
    keyless = open_store(kr=None)
    with pytest.raises(MasterKeyError, match="needs the master key"):
        keyless.upsert_full_ike("responder", make_credential(), NOW)


def test_unreachable_postgresql_at_open() -> None:
    with pytest.raises(StoreUnavailable, match="unreachable"):
        Store.open(
            "postgresql://nobody@/x?host=/nonexistent-socket-dir",
            Keyring([MasterKey.generate()]),
            connect_timeout_s=1,
        )


def test_unreachable_sqlite_at_open(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="unable to open"):
        Store.open(str(tmp_path / "missing-dir" / "c.db"), Keyring([MasterKey.generate()]))


def test_postgresql_going_away_then_back_loses_nothing() -> None:
    ok, what = pg_available()
    require(ok, what)
    with PostgresCluster() as pg:
        store = Store.open(pg.create_database("gone"), Keyring([MasterKey.generate()]),
                           Policy(), connect_timeout_s=1)  # fmt: skip
        c = make_credential()
        store.upsert_full_ike("responder", c, NOW)
        assert store.lookup(c.handle, NOW) is not None  # opens the thread's hot connection
        pg.stop()
        with pytest.raises(StoreUnavailable):
            store.lookup(c.handle, NOW)
        with GroupCommitter(store) as gc, pytest.raises(StoreError):
            gc.commit_ratchet_blocking(c.handle, 0, successor(c), NOW)
        pg.start_again()
        r = store.lookup(c.handle, NOW)
        assert r is not None and r.credential == c  # nothing lost, still generation 0
        # a hot connection that died idle (server restart) is replaced transparently
        assert store.lookup(c.handle, NOW) is not None
        pg.stop()
        pg.start_again()
        r = store.lookup(c.handle, NOW)
        assert r is not None and r.credential == c
        assert store.commit_ratchet(c.handle, 0, successor(c), NOW)
        store.close()


def test_sqlite_locked_beyond_busy_timeout_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    store = Store.open(str(path), Keyring([MasterKey.generate()]), busy_timeout_s=0.2)
    c = make_credential()
    store.upsert_full_ike("responder", c, NOW)
    hog = sqlite3.connect(path, isolation_level=None)
    hog.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            store.commit_ratchet(c.handle, 0, successor(c), NOW)
        r = store.lookup(c.handle, NOW)  # WAL: readers are not blocked by the writer
        assert r is not None and r.credential == c
    finally:
        hog.execute("ROLLBACK")
        hog.close()
    assert store.commit_ratchet(c.handle, 0, successor(c), NOW)
    store.close()
