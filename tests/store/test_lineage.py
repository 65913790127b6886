"""The lineage column (issue 22): written with the full IKE, advanced by the ratchet, kept
with the initiator's previous generation, ``unknown`` for rows older than the column, and
refused (fail closed) when a row holds something that is not a lineage."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from resume.credential import Lineage
from store.errors import CorruptRecord
from store.keys import Keyring, MasterKey
from store.repository import Store
from tests.store.helpers import make_credential

NOW = 1_700_000_000.0


def test_full_ike_and_ratchet_carry_the_lineage(store: Store) -> None:
    c0 = dataclasses.replace(make_credential(0), lineage=Lineage.CLASSICAL)
    store.upsert_full_ike("responder", c0, NOW)
    got = store.lookup(c0.handle, NOW + 1)
    assert got is not None and got.credential is not None
    assert got.credential.lineage is Lineage.CLASSICAL
    c1 = dataclasses.replace(make_credential(1), lineage=Lineage.PQ_RESUMED)
    assert store.commit_ratchet(c0.handle, 0, c1, NOW + 2)
    got = store.lookup(c1.handle, NOW + 3)
    assert got is not None and got.credential is not None
    assert got.credential.lineage is Lineage.PQ_RESUMED


def test_the_initiator_keeps_the_previous_generation_s_lineage(store: Store) -> None:
    c0 = dataclasses.replace(make_credential(0), lineage=Lineage.CLASSICAL)
    store.upsert_full_ike("initiator", c0, NOW)
    c1 = dataclasses.replace(make_credential(1), lineage=Lineage.PQ_RESUMED)
    assert store.advance_initiator(c0.handle, 0, c1, NOW + 1)
    got = store.lookup_peer(c0.id_r, NOW + 2)
    assert got is not None and got.credential is not None and got.previous is not None
    assert got.credential.lineage is Lineage.PQ_RESUMED
    # a retry with the previous generation must not claim the successor's PQ property
    assert got.previous.lineage is Lineage.CLASSICAL
    assert store.confirm_initiator(c1.handle, 1)
    got = store.lookup_peer(c0.id_r, NOW + 3)
    assert got is not None and got.previous is None


def _sqlite_row_update(db: Path, sql: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(sql)


def test_a_row_with_an_unknown_lineage_fails_closed(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    kr = Keyring([MasterKey.generate()])
    c0 = make_credential(0)
    with Store.open(str(db), kr) as s:
        s.upsert_full_ike("responder", c0, NOW)
    _sqlite_row_update(db, "UPDATE credentials SET lineage = 'quantum'")
    with Store.open(str(db), kr) as s, pytest.raises(CorruptRecord, match="lineage"):
        s.lookup(c0.handle, NOW)


def test_migrating_an_old_cache_gives_its_rows_unknown(tmp_path: Path) -> None:
    """A database at revision 0001 (before lineage) is upgraded on open; its rows read as
    ``unknown`` -- never as PQ."""
    from alembic import command
    from sqlalchemy import create_engine, text

    from store.engine import _alembic_config

    db = tmp_path / "old.db"
    kr = Keyring([MasterKey.generate()])
    c0 = make_credential(0)
    with Store.open(str(db), kr) as s:
        s.upsert_full_ike("responder", c0, NOW)
    engine = create_engine(f"sqlite:///{db}")
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
        cols = [r[1] for r in conn.execute(text("PRAGMA table_info(credentials)"))]
        assert "lineage" not in cols
    engine.dispose()
    with Store.open(str(db), kr) as s:
        got = s.lookup(c0.handle, NOW + 1)
        assert got is not None and got.credential is not None
        assert got.credential.lineage is Lineage.UNKNOWN
