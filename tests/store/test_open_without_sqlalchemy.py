"""A plain SQLite store opens and serves resumptions on the sqlite3 driver alone.

``ikeresume resume`` opens the initiator's cache before every reconnection; SQLAlchemy's
import (0.2-0.4 s, seconds under UML) was most of that command's start-up.  These tests
run fresh interpreters, since this one has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resume.testing import simulated_full_ike
from store.engine import normalize_url, sqlite_path
from store.keys import Keyring, MasterKey
from store.repository import Store

_PROBE = """
import json, sys, time
from resume.credential import Credential
from store.keys import Keyring
from store.repository import Store
from tests.store.helpers import successor
kr = Keyring.from_file(sys.argv[1])
s = Store.open(sys.argv[2], kr)
now = time.time()
ini = s.lookup_peer(bytes.fromhex(sys.argv[3]), now)
res = s.lookup(bytes.fromhex(sys.argv[4]), now)
assert ini is not None and ini.allowed and res is not None and res.allowed
nxt = successor(res.credential)
won = s.commit_ratchet(res.credential.handle, res.credential.generation, nxt, now)
advanced = s.advance_initiator(ini.credential.handle, ini.credential.generation, nxt, now)
shown = s.url_display
s.close()
print(json.dumps({"won": won, "advanced": advanced, "url": shown,
                  "loaded": sorted(m for m in ("sqlalchemy", "alembic") if m in sys.modules)}))
"""


def test_resume_path_never_imports_sqlalchemy(tmp_path: Path) -> None:
    mk = MasterKey.generate()
    key_file = tmp_path / "master.key"
    key_file.write_text(mk.to_line() + "\n")
    db = tmp_path / "cache.db"
    c = simulated_full_ike()
    with Store.open(str(db), Keyring([mk])) as s:  # creates and migrates: SQLAlchemy here
        s.upsert_full_ike("initiator", c, time.time())
        s.upsert_full_ike("responder", c, time.time())
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(key_file), f"sqlite:///{db}", c.id_r.hex(),
         c.handle.hex()],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
        check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["loaded"] == []  # neither SQLAlchemy nor alembic was needed
    assert got["url"] == f"sqlite+pysqlite:///{db}"
    assert got["won"] and got["advanced"]
    # the writes made without SQLAlchemy are what SQLAlchemy's side reads back
    with Store.open(f"sqlite:///{db}?timeout=5", Keyring([mk])) as s:
        assert s._engine is not None  # a query string takes SQLAlchemy's path
        ini = s.lookup_peer(c.id_r, time.time())
        assert ini is not None and ini.credential is not None
        assert ini.credential.generation == 1 and ini.previous is not None
        assert s.url_display == f"sqlite+pysqlite:///{db}?timeout=5"


@pytest.mark.parametrize(
    "url",
    [
        "/var/lib/ikeresume/cache.db",
        "relative/cache.db",
        "~/cache.db",
        "sqlite:///relative.db",
        "sqlite:////abs/dir/cache.db",
        "sqlite+pysqlite:////abs/dir/cache.db",
        "sqlite:///with space/cache.db",
    ],
)
def test_sqlite_path_agrees_with_sqlalchemy(url: str) -> None:
    assert sqlite_path(url) == normalize_url(url).database


@pytest.mark.parametrize(
    "url",
    [
        "",
        ":memory:",
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///x.db?mode=ro",
        "sqlite:///a%20b.db",
        "postgresql://u@h/db",
        "mysql:///x",
    ],
)
def test_anything_else_takes_sqlalchemys_path(url: str) -> None:
    assert sqlite_path(url) is None


def test_wrong_master_key_still_refused_without_sqlalchemy(tmp_path: Path) -> None:
    db = tmp_path / "cache.db"
    with Store.open(str(db), Keyring([MasterKey.generate()])) as s:
        s.upsert_full_ike("initiator", simulated_full_ike(), time.time())
    other = tmp_path / "other.key"
    other.write_text(MasterKey.generate().to_line() + "\n")
    probe = (
        "import sys\nfrom store.keys import Keyring\nfrom store.repository import Store\n"
        "from store.errors import MasterKeyError\n"
        "try:\n    Store.open(sys.argv[2], Keyring.from_file(sys.argv[1]))\n"
        "except MasterKeyError as e:\n    print('refused', 'sqlalchemy' in sys.modules, e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(other), str(db)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
        check=True,
    ).stdout
    assert out.startswith("refused False"), out
