"""Opening a cache is read-only: a real second process holding the write lock cannot stall it.

A process holds the database's write lock (SQLite: ``BEGIN IMMEDIATE`` and a row written;
PostgreSQL: ``EXCLUSIVE`` locks on both tables, which block every writer but no reader)
until the test tells it to let go.  Meanwhile ``Store.open`` and a lookup must complete,
and ``ikeresume resume`` must get as far as its exchange.  Were either to take a write
lock, it would wait for the holder, which only lets go after the check: on SQLite with
``busy_timeout`` 0 that is an immediate "database is locked" error, and under PostgreSQL
a wait that the deadline (a hang bound, not a verdict) ends.  Registering a new master key
is the one write an open may still make, and only on that key's first use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from resume.cli import EXIT_FALLBACK, main
from store.errors import MasterKeyError, StoreUnavailable
from store.keys import Keyring, MasterKey
from store.repository import Store
from tests.store.helpers import fqdn, make_credential

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000.0
HANG_BOUND_S = 120.0

_SQLITE_HOLDER = """
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("BEGIN IMMEDIATE")
c.execute("UPDATE credentials SET last_used_at = last_used_at")
print("LOCKED", flush=True)
sys.stdin.readline()
c.execute("ROLLBACK")
"""

_PG_HOLDER = """
import psycopg, sys
c = psycopg.connect(sys.argv[1])
c.execute("LOCK TABLE credentials, master_keys IN EXCLUSIVE MODE")
print("LOCKED", flush=True)
sys.stdin.readline()
c.rollback()
"""


@contextmanager
def write_lock_held(db_url: str) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the write lock until the block ends."""
    if db_url.startswith("postgresql"):
        from sqlalchemy.engine import make_url

        u = make_url(db_url)
        target = f"host={u.query['host']} user={u.username} dbname={u.database}"
        code = _PG_HOLDER
    else:
        target, code = db_url, _SQLITE_HOLDER
    proc = subprocess.Popen(
        [sys.executable, "-c", code, target],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "LOCKED"
        yield proc
        assert proc.poll() is None, "the holder let go before the check"
    finally:
        if proc.stdin is not None:
            proc.stdin.write("go\n")
            proc.stdin.close()
        proc.wait(timeout=HANG_BOUND_S)


def _in_thread(fn: object) -> object:
    """Run ``fn`` in a thread; its result, or fail if it hangs (a hang bound, not a verdict)."""
    box: list[object] = []

    def run() -> None:
        try:
            box.append(fn())  # type: ignore[operator]
        except BaseException as e:
            box.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(HANG_BOUND_S)
    assert box, "blocked behind the other process's write lock"
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def _seed(db_url: str, kr: Keyring) -> bytes:
    """A cache with one initiator credential (its key registered); the responder id."""
    c = make_credential(peer="client.example", gw="gw.example")
    with Store.open(db_url, kr) as s:
        s.upsert_full_ike("initiator", c, NOW)
    return c.id_r


def test_open_and_lookup_beside_a_writer(db_url: str) -> None:
    kr = Keyring([MasterKey.generate()])
    id_r = _seed(db_url, kr)

    def open_and_read() -> bool:
        # busy_timeout 0: a write lock request would fail at once instead of waiting
        with Store.open(db_url, kr, busy_timeout_s=0.0) as s:
            res = s.lookup_peer(id_r, NOW)
            return res is not None and res.credential is not None

    with write_lock_held(db_url):
        assert _in_thread(open_and_read) is True


def test_a_write_does_wait_for_the_lock(tmp_path: Path) -> None:
    """The contrast that makes the test above meaningful: a write, on SQLite with
    busy_timeout 0, fails at once while the other process holds the lock."""
    db = str(tmp_path / "c.db")
    kr = Keyring([MasterKey.generate()])
    _seed(db, kr)
    with write_lock_held(db), Store.open(db, kr, busy_timeout_s=0.0) as s:
        with pytest.raises(StoreUnavailable, match="locked"):
            s.upsert_full_ike("initiator", make_credential(peer="other.example"), NOW)
        # and so does registering a key on its first use (a rotation's new key)
        new = Keyring([MasterKey.generate(), *kr._keys])
        with pytest.raises(StoreUnavailable, match="locked"):
            Store.open(db, new, busy_timeout_s=0.0)


def test_ikeresume_resume_gets_to_its_exchange_beside_a_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ikeresume resume`` with the cache locked by another process: it opens the cache,
    reads the credential and runs its exchange (here against a port that never answers:
    outcome ``timeout``).  Had it waited for the lock, the outcome would be
    ``store_error`` ("database is locked", after its 5 s busy timeout)."""
    db = str(tmp_path / "client.db")
    key = MasterKey.generate()
    _seed(db, Keyring([key]))
    monkeypatch.setenv("IKERESUME_MASTER_KEY", key.to_line())
    argv = [
        "resume", "--server", "127.0.0.1:9", "--peer", "hex:" + fqdn("gw.example").hex(),
        "--db", db, "--timeout", "0.3", "--rto", "0.1", "--json",
    ]  # fmt: skip
    with write_lock_held(db):
        rc = _in_thread(lambda: main(argv))
    out = json.loads(capsys.readouterr().out)
    assert rc == EXIT_FALLBACK and out["outcome"] == "timeout", out


def test_first_use_of_a_key_registers_it_once(db_url: str) -> None:
    a, b = MasterKey.generate(), MasterKey.generate()
    with Store.open(db_url, Keyring([a])) as s:
        assert s.verify_master_keys() is True  # registered by the first open
        assert s.register_master_key() is False  # already there: nothing written
    with Store.open(db_url, Keyring([b, a])) as s:  # rotation: b current, a still known
        assert s.verify_master_keys() is True
    with pytest.raises(MasterKeyError):  # an impostor with a's id is refused at open
        Store.open(db_url, Keyring([MasterKey(a.key_id, os.urandom(32))]))
