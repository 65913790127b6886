"""Engines for the two supported databases, configured for durability, plus migrations.

SQLite (embedded default): WAL journal so lookups never wait for the committer, and
``synchronous=FULL`` by default: every commit fsyncs the WAL, so an acknowledged ratchet
survives power loss.  ``NORMAL`` is accepted for operators who trade that away: in WAL
mode it still survives an application crash (SIGKILL) and keeps the database consistent,
but the last commits before an OS crash or power loss may be lost -- which for a ratchet
means a peer may find its newest generation gone and fall back to a full IKE (never that
an old generation becomes acceptable *after* a newer one was used, unless the rolled-back
generation was also the one the initiator kept).  ``busy_timeout`` makes concurrent
writers (two processes) wait instead of failing.

The pysqlite driver's implicit transactions are disabled and every SQLAlchemy transaction
starts with ``BEGIN IMMEDIATE``: the write lock is taken up front, so two writers never
deadlock on a lock upgrade (which SQLite reports as SQLITE_BUSY without waiting).

PostgreSQL (shared store for a cluster of responders) goes through psycopg 3 with the
server's durable defaults (``synchronous_commit=on``).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resume.extras import MissingExtraError, require
from store.errors import StoreConfigError

#: The environment variable naming the credential cache (a URL or a SQLite path).
ENV_DB = "IKERESUME_DB"

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy import Engine
    from sqlalchemy.engine import URL

# SQLAlchemy is imported inside the functions that need it: a SQLite store's per-message
# paths and ``ikeresume resume`` use the sqlite3 driver directly (see sqlite_path), and
# SQLAlchemy's import alone costs 0.2-0.4 s per process.

#: The newest migration's revision id.  Opening a store compares the database against it
#: with one plain SELECT, so alembic (a quarter of a second of imports, seconds under UML)
#: is loaded only when a migration is really due.  A test keeps it equal to alembic's head.
SCHEMA_HEAD = "0003"

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SYNC_LEVELS = ("FULL", "NORMAL", "EXTRA")


def sqlite_path(url: str) -> str | None:
    """The file of a plain SQLite URL or bare path, parsed without SQLAlchemy; else None.

    Covers what operators write (``/var/lib/x.db``, ``sqlite:///rel.db``,
    ``sqlite:////abs.db``, ``sqlite+pysqlite:///...``) and gives exactly the
    ``database`` :func:`normalize_url` would.  Anything else (query strings, escapes,
    other databases, in-memory) returns None: the caller takes SQLAlchemy's path, which
    also produces the errors.
    """
    if "://" not in url:
        path = str(Path(url).expanduser()) if url not in ("", ":memory:") else ""
    else:
        scheme, _, rest = url.partition("://")
        if scheme not in ("sqlite", "sqlite+pysqlite") or not rest.startswith("/"):
            return None
        path = rest[1:]
    if path in ("", ":memory:") or any(c in path for c in "?%#@"):
        return None
    return path


def normalize_url(url: str | URL) -> URL:
    """Accept SQLAlchemy URLs, ``postgresql://`` (mapped to psycopg 3) and bare file paths."""
    # lazy: a SQLite cache opens on the sqlite3 driver alone (tests/test_startup.py)
    from sqlalchemy.engine import make_url

    if isinstance(url, str) and "://" not in url:
        if url in ("", ":memory:"):
            raise StoreConfigError("an in-memory SQLite store cannot be shared or durable")
        url = "sqlite:///" + str(Path(url).expanduser())
    try:
        u = make_url(url)
    except Exception as e:
        raise StoreConfigError(f"bad database URL: {e}") from None
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        u = u.set(drivername="postgresql+psycopg")
    if u.drivername == "sqlite":
        u = u.set(drivername="sqlite+pysqlite")
    if u.drivername not in ("sqlite+pysqlite", "postgresql+psycopg"):
        raise StoreConfigError(
            f"unsupported database {u.drivername!r} (use sqlite:///path or postgresql://...)"
        )
    if u.drivername.startswith("sqlite") and (u.database in (None, "", ":memory:")):
        raise StoreConfigError("an in-memory SQLite store cannot be shared or durable")
    return u


def check_sync(level: str) -> str:
    sync = level.upper()
    if sync not in SYNC_LEVELS:
        raise StoreConfigError(f"sqlite synchronous must be one of {', '.join(SYNC_LEVELS)}")
    return sync


def sqlite_connect(path: str, sync: str, busy_timeout_s: float) -> sqlite3.Connection:
    """A driver connection with the store's durability settings (pool and hot paths)."""
    conn = sqlite3.connect(
        path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )
    cur = conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA synchronous={check_sync(sync)}")
    cur.close()
    return conn


def make_engine(
    url: str | URL,
    *,
    sqlite_synchronous: str = "FULL",
    busy_timeout_s: float = 5.0,
    connect_timeout_s: float = 5.0,
    pool_size: int = 8,
) -> Engine:
    # lazy: a SQLite cache opens on the sqlite3 driver alone (tests/test_startup.py)
    from sqlalchemy import create_engine, event

    u = normalize_url(url)
    if u.drivername.startswith("sqlite"):
        path, sync = str(u.database), check_sync(sqlite_synchronous)
        engine = create_engine(
            u,
            creator=lambda: sqlite_connect(path, sync, busy_timeout_s),
            pool_size=pool_size,
            max_overflow=32,
        )

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    try:
        require("postgres", "a PostgreSQL store")
    except MissingExtraError as e:
        raise StoreConfigError(str(e)) from None
    return create_engine(
        u,
        connect_args={"connect_timeout": max(1, int(connect_timeout_s))},
        pool_size=pool_size,
        max_overflow=32,
        pool_pre_ping=True,
    )


def _alembic_config() -> Config:
    # lazy: a SQLite cache opens on the sqlite3 driver alone (tests/test_startup.py)
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    """The head according to alembic's scripts (slow: imports alembic)."""
    # lazy: a SQLite cache opens on the sqlite3 driver alone (tests/test_startup.py)
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise StoreConfigError(f"no alembic revisions found in {MIGRATIONS_DIR}")
    return head


def current_revision(engine: Engine) -> str | None:
    # lazy: a SQLite cache opens on the sqlite3 driver alone (tests/test_startup.py)
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def _at_head(engine: Engine) -> bool:
    """True when the database says it is at SCHEMA_HEAD (any error: let alembic decide)."""
    # lazy: a SQLite cache opens on the sqlite3 driver alone (tests/test_startup.py)
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    except SQLAlchemyError:  # no table yet, or unreachable: the slow path decides and reports
        return False
    return [r[0] for r in rows] == [SCHEMA_HEAD]


def sqlite_at_head(conn: sqlite3.Connection) -> bool:
    """:func:`_at_head` on a sqlite3 connection (no SQLAlchemy): one plain SELECT."""
    try:
        rows = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:  # no table yet: the slow path decides and reports
        return False
    return [r[0] for r in rows] == [SCHEMA_HEAD]


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest alembic revision (no-op when already there)."""
    if _at_head(engine):
        return
    # lazy: a SQLite cache opens on the sqlite3 driver alone (tests/test_startup.py)
    from alembic import command

    if current_revision(engine) == head_revision():
        return
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
