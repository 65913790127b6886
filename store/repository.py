"""The repository API the responder service, the initiator side and the harvest shim call.

Hot paths (``lookup``, ``commit_ratchet_many``) talk to the driver connection with
hand-written SQL: they run once per resumption and an ORM round costs more than the
database does.  Everything else goes through SQLAlchemy Core.

Fail closed: any database, decoding or key problem raises a :class:`StoreError` subclass
(never returns a credential it could not verify), and nothing is deleted because it
could not be read.  The ratchet commit is a compare-and-set on (role, handle, generation)
in one ``UPDATE``: under PostgreSQL's row locking the second of two racing responders
re-evaluates the ``WHERE`` on the winner's row version and matches nothing, and SQLite
serializes writers, so two responders can never both accept one generation.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from math import isfinite as _isfinite
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from resume.credential import Credential, Lineage, ProtocolMode
from resume.sa import Lifetimes
from store.codec import params_text
from store.engine import (
    check_sync,
    make_engine,
    migrate,
    sqlite_at_head,
    sqlite_connect,
    sqlite_path,
)
from store.errors import (
    CorruptRecord,
    MasterKeyError,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
)
from store.keys import AEAD_NONCE_LEN, Keyring
from store.outbox import INSERT_SQL as _SQL_OUTBOX_INSERT
from store.outbox import SELECT_SQL as _SQL_OUTBOX_SELECT
from store.outbox import InstallIntent, OutboxReplay, PendingInstall, decode_row, encode_row
from store.policy import Counters, Policy, Refusal
from store.wrapping import unwrap_credential, wrap_credential

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy import Connection, Engine, Table

Role = Literal["initiator", "responder"]
ROLES: tuple[Role, ...] = ("initiator", "responder")

_MODES = {m.value: m for m in ProtocolMode}


def _table() -> Table:
    """The ``credentials`` table for SQLAlchemy Core statements (maintenance paths).

    Imported on first use: resuming from a SQLite cache (``ikeresume resume``, the
    responder's per-message reads and commits) runs on the sqlite3 driver alone, and
    SQLAlchemy's import costs 0.2-0.4 s per process.
    """
    # lazy: a SQLite cache runs on the sqlite3 driver alone (tests/test_startup.py)
    from store.tables import credentials

    return credentials


def _pg_errors() -> tuple[type[Exception], ...]:
    """psycopg's base error, once psycopg is loaded (it cannot raise before).

    psycopg is imported only when a PostgreSQL store is opened: it costs ~0.2 s per
    process, paid on every ``ikeresume resume`` against a SQLite cache otherwise.
    """
    mod = sys.modules.get("psycopg")
    return (mod.Error,) if mod is not None else ()


def _db_errors() -> tuple[type[Exception], ...]:
    """Every database driver/SQLAlchemy error a store operation may raise."""
    sa_exc = sys.modules.get("sqlalchemy.exc")  # not loaded: nothing could raise it
    sa = (sa_exc.SQLAlchemyError,) if sa_exc is not None else ()
    return (*sa, sqlite3.Error, *_pg_errors())


_COLS = (
    "uid, role, mode, handle, generation, key_id, secret_wrapped, paper_wrapped, "
    "prev_handle, prev_generation, prev_key_id, prev_secret_wrapped, prev_paper_wrapped, "
    "id_i, id_r, params, full_ike_at, last_used_at, established_s, bytes_total, resumptions, "
    "lineage, prev_lineage"
)
_SQL_LOOKUP = f"SELECT {_COLS} FROM credentials WHERE role = ? AND handle = ?"  # noqa: S608
# The responder's per-message read: only what a responder row uses (no prev_* columns,
# role and handle are known), one bound parameter.
_SQL_LOOKUP_R = (
    "SELECT uid, mode, generation, key_id, secret_wrapped, paper_wrapped, id_i, id_r, "
    "params, full_ike_at, last_used_at, established_s, bytes_total, resumptions, lineage "
    "FROM credentials WHERE role = 'responder' AND handle = ?"
)
_SQL_BY_UID = f"SELECT {_COLS} FROM credentials WHERE uid = ?"  # noqa: S608
_SQL_PEER = (
    f"SELECT {_COLS} FROM credentials WHERE role = 'initiator' AND id_r = ? "  # noqa: S608
    "ORDER BY last_used_at DESC LIMIT 1"
)
_SQL_PEER_I = (
    f"SELECT {_COLS} FROM credentials WHERE role = 'initiator' AND id_r = ? "  # noqa: S608
    "AND id_i = ? ORDER BY last_used_at DESC LIMIT 1"
)
_SQL_RATCHET = (
    "UPDATE credentials SET handle = ?, generation = ?, secret_wrapped = ?, "
    "paper_wrapped = ?, key_id = ?, lineage = ?, resumptions = resumptions + 1, "
    "last_used_at = CASE WHEN last_used_at < ? THEN ? ELSE last_used_at END "
    "WHERE role = 'responder' AND handle = ? AND generation = ? "
    "AND mode = ? AND id_i = ? AND id_r = ? AND params = ?"
)
_SQL_OUTBOX_DELETE = "DELETE FROM install_outbox WHERE uid = ?"
#: Position of the WHERE clause's handle in a _SQL_RATCHET parameter row.
_RATCHET_HANDLE_PARAM = 8


def ratchet_policy_guard(policy: Policy) -> tuple[str, tuple[tuple[bool, float], ...]]:
    """The ratchet's extra WHERE terms: the record must still satisfy ``policy`` at commit.

    The lookup for message 1 judged the record when the exchange began, possibly from a
    copy kept in memory; between then and message 3 a lifetime may have run out or
    accounting from another process may have crossed a data or established limit.  Putting
    :meth:`Policy.check` into the compare-and-set makes the durable commit, not any earlier
    read, the decision.  Returns the SQL (empty when no limit is set) and, per ``?``
    pair, whether it takes ``now`` before the limit.  The terms are the negation of
    :meth:`Policy.check`'s refusals, with the same arithmetic (IEEE doubles on both sides);
    a NULL or NaN counter (a corrupt row) satisfies none of them, so it is refused.
    """
    terms: list[str] = []
    args: list[tuple[bool, float]] = []
    ages = [lim for lim in (policy.max_chain_age, policy.clocked) if lim is not None]
    if ages:
        terms.append("? - full_ike_at < ?")
        args.append((True, min(ages)))
    for column, lim in (
        ("established_s", policy.established),
        ("bytes_total", policy.data),
        ("resumptions", policy.max_resumptions),
    ):
        if lim is not None:
            terms.append(f"{column} < ?")
            args.append((False, lim))
    if policy.idle is not None:
        terms.append("? - last_used_at < ?")
        args.append((True, policy.idle))
    return "".join(f" AND {t}" for t in terms), tuple(args)


_SQL_ADVANCE = (
    "UPDATE credentials SET "
    "prev_handle = CASE WHEN handle = ? AND generation = ? THEN handle ELSE prev_handle END, "
    "prev_generation = CASE WHEN handle = ? AND generation = ? THEN generation "
    "ELSE prev_generation END, "
    "prev_key_id = CASE WHEN handle = ? AND generation = ? THEN key_id ELSE prev_key_id END, "
    "prev_secret_wrapped = CASE WHEN handle = ? AND generation = ? THEN secret_wrapped "
    "ELSE prev_secret_wrapped END, "
    "prev_paper_wrapped = CASE WHEN handle = ? AND generation = ? THEN paper_wrapped "
    "ELSE prev_paper_wrapped END, "
    "prev_lineage = CASE WHEN handle = ? AND generation = ? THEN lineage "
    "ELSE prev_lineage END, "
    "handle = ?, generation = ?, secret_wrapped = ?, paper_wrapped = ?, key_id = ?, "
    "lineage = ?, "
    "resumptions = resumptions + 1, "
    "last_used_at = CASE WHEN last_used_at < ? THEN ? ELSE last_used_at END "
    "WHERE role = 'initiator' AND mode = ? AND id_i = ? AND id_r = ? AND params = ? "
    "AND ((handle = ? AND generation = ?) OR (prev_handle = ? AND prev_generation = ?))"
)


def _counters(uid: str, full_ike_at: Any, last_used_at: Any, established_s: Any,
              bytes_total: Any, resumptions: Any) -> Counters:  # fmt: skip
    """A row's policy counters; CorruptRecord if any is not a finite number.

    (A NaN or infinite time would make every policy comparison false, i.e. never expire.)
    """
    try:
        c = Counters(
            float(full_ike_at),
            float(last_used_at),
            float(established_s),
            int(bytes_total),
            int(resumptions),
        )
    except (TypeError, ValueError, OverflowError) as e:
        raise CorruptRecord(f"record {uid}: bad counters: {e}") from None
    if not (_isfinite(c.full_ike_at) and _isfinite(c.last_used_at)
            and _isfinite(c.established_s)):  # fmt: skip
        raise CorruptRecord(f"record {uid}: bad counters: not finite")
    return c


class LookupResult(NamedTuple):
    """Answer to a lookup: the credential if the policy allows a resumption now.

    ``credential`` is None when ``refusal`` is set (the secret is not even unwrapped);
    ``lifetimes`` are the kernel SA lifetimes the policy leaves for a resumption now.
    ``previous`` is the initiator's unconfirmed older generation (lost-message-3 rule).
    (A named tuple rather than a frozen dataclass: built once per lookup, and a frozen
    dataclass's ``__init__`` costs three times as much.)
    """

    credential: Credential | None
    counters: Counters
    refusal: Refusal | None
    lifetimes: Lifetimes | None
    uid: str
    role: str
    previous: Credential | None = None

    @property
    def allowed(self) -> bool:
        return self.refusal is None and self.credential is not None


@dataclass(slots=True)
class RatchetRequest:
    """Accept ``successor`` in place of (handle, generation) -- one compare-and-set.

    ``install``: the SA pair to insert into the install outbox in the same transaction, if
    the CAS wins (the responder service passes it when it installs SAs; spec 6.2.1).
    """

    handle: bytes
    generation: int
    successor: Credential
    now: float
    install: InstallIntent | None = None

    def __post_init__(self) -> None:
        if self.successor.generation != self.generation + 1:
            raise ValueError(
                f"successor generation {self.successor.generation} does not follow "
                f"{self.generation}"
            )


class Store:
    """A credential cache on one SQLite file or PostgreSQL database.

    Thread-safe: every call checks a connection out of the engine's pool.  ``keyring`` may
    be None for maintenance that never touches secrets (list, stats, purge, revoke).
    """

    def __init__(
        self,
        engine: Engine | None,
        keyring: Keyring | None,
        policy: Policy | None = None,
        *,
        replace_same_peers: bool = True,
        sqlite_file: tuple[str, str, float] | None = None,
        engine_factory: Callable[[], Engine] | None = None,
    ) -> None:
        """``engine``, or None with ``sqlite_file`` (path, synchronous, busy timeout) and
        an ``engine_factory`` called the first time SQLAlchemy is really needed."""
        if engine is None and (sqlite_file is None or engine_factory is None):
            raise StoreConfigError("a store needs an engine, or a SQLite file and a factory")
        self._engine = engine
        self._engine_factory = engine_factory
        self._engine_lock = threading.Lock()
        self.keyring = keyring
        self.policy = policy if policy is not None else Policy()
        self.replace_same_peers = replace_same_peers
        # "sqlite" | "postgresql" (make_engine accepts no other)
        self.dialect = engine.dialect.name if engine is not None else "sqlite"
        #: An embedded SQLite file: a read is an indexed lookup on a local WAL file (callers
        #: run it inline rather than in a worker thread) and WAL checkpoints are ours to
        #: schedule.  The one place that decides anything from the dialect's name.
        self.embedded = self.dialect == "sqlite"
        self._pg = not self.embedded
        self._sql: dict[str, str] = {}
        # SQLite hot paths use one long-lived driver connection per thread: a pool
        # checkout costs more than the indexed lookup itself.  (PostgreSQL keeps the pool:
        # connections are a server resource there and the round trip dominates.)
        self._local = threading.local()
        self._hot: list[sqlite3.Connection] = []  # closed by close()
        self._sqlite_args: tuple[str, str, float] | None = sqlite_file
        # PostgreSQL lookups: one autocommit driver connection per thread (a pool checkout
        # with its pre-ping round trip cost more than the lookup); commits keep the pool.
        self._pg_hot: list[psycopg.Connection[Any]] = []
        self._connect_timeout_s = 5.0
        #: (policy, guarded ratchet SQL, guard recipe), see :meth:`_ratchet_sql`
        self._ratchet_cache: tuple[Policy, str, tuple[tuple[bool, float], ...]] | None = None

    @classmethod
    def open(
        cls,
        url: str,
        keyring: Keyring | None = None,
        policy: Policy | None = None,
        *,
        sqlite_synchronous: str = "FULL",
        busy_timeout_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        run_migrations: bool = True,
        verify_keys: bool = True,
        replace_same_peers: bool = True,
    ) -> Store:
        """Open (and by default create/migrate) a store; raises StoreError subclasses.

        Opening a cache that exists, at the current schema, with a registered key, is
        read-only: it takes no write lock, so ``ikeresume resume`` never waits for another
        process's write just to start (and never holds one up).  Writes happen only when
        something must be written: creating or migrating the schema, and registering a
        master key on its first use (:meth:`register_master_key`).

        A plain SQLite file is opened on the sqlite3 driver alone: SQLAlchemy (and alembic)
        are loaded only if the schema needs migrating or a maintenance operation runs, so
        ``ikeresume resume`` and the responder's hot paths never pay their import.
        """

        def factory() -> Engine:
            return make_engine(
                url,
                sqlite_synchronous=sqlite_synchronous,
                busy_timeout_s=busy_timeout_s,
                connect_timeout_s=connect_timeout_s,
            )

        path = sqlite_path(url) if isinstance(url, str) else None
        if path is not None:
            sync = check_sync(sqlite_synchronous)
            store = cls(
                None,
                keyring,
                policy,
                replace_same_peers=replace_same_peers,
                sqlite_file=(path, sync, busy_timeout_s),
                engine_factory=factory,
            )
        else:
            engine = factory()
            store = cls(engine, keyring, policy, replace_same_peers=replace_same_peers)
            if store.embedded:
                store._sqlite_args = (
                    str(engine.url.database),
                    check_sync(sqlite_synchronous),
                    busy_timeout_s,
                )
        store._connect_timeout_s = connect_timeout_s
        try:
            if run_migrations and not store._sqlite_at_head():
                with store._errors("open"):
                    migrate(store.engine)
            if keyring is not None and verify_keys and not store.verify_master_keys():
                store.register_master_key()  # first use of this key: its own write
        except BaseException:
            store.close()
            raise
        return store

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (created on first use for a store opened on a file)."""
        e = self._engine
        if e is None:
            with self._engine_lock:
                e = self._engine
                if e is None:
                    if self._engine_factory is None:  # pragma: no cover (init refuses it)
                        raise StoreConfigError("store has no engine")
                    e = self._engine = self._engine_factory()
        return e

    def _sqlite_at_head(self) -> bool:
        """SQLite: the schema is at the newest migration, by one SELECT on the driver."""
        if self._sqlite_args is None:
            return False  # migrate() checks for itself
        with self._raw("open") as raw:
            return sqlite_at_head(raw)

    def close(self) -> None:
        pg_hot, self._pg_hot = self._pg_hot, []
        for pconn in pg_hot:
            with contextlib.suppress(*_pg_errors()):
                pconn.close()
        hot, self._hot = self._hot, []
        for conn in hot:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
        self._local = threading.local()
        if self._engine is not None:
            self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def sqlite_file(self) -> tuple[str, str, float] | None:
        """(path, synchronous, busy timeout in s) of an embedded SQLite store, else None:
        what the native store (``resume._native``) opens its own connections with."""
        return self._sqlite_args

    @property
    def url_display(self) -> str:
        if self._engine is None and self._sqlite_args is not None:
            return f"sqlite+pysqlite:///{self._sqlite_args[0]}"
        return self.engine.url.render_as_string(hide_password=True)

    # -- plumbing --------------------------------------------------------------------
    @contextmanager
    def _errors(self, op: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except _db_errors() as e:
            raise self._unavailable(op, e) from e

    def _unavailable(self, op: str, e: BaseException) -> StoreUnavailable:
        orig = getattr(e, "orig", None) or e
        msg = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        return StoreUnavailable(f"{op}: database {self.url_display} unreachable or failing: {msg}")

    def _hot_conn(self) -> sqlite3.Connection:
        """SQLite: this thread's long-lived driver connection (opened on first use)."""
        hot: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if hot is None:
            args = self._sqlite_args
            if args is None:
                raise StoreConfigError("per-thread driver connections are for SQLite stores")
            hot = sqlite_connect(*args)
            autockpt = getattr(self._local, "autocheckpoint", None)
            if autockpt is not None:
                hot.execute(f"PRAGMA wal_autocheckpoint={int(autockpt)}")
            self._local.conn = hot
            self._local.cursor = hot.cursor()
            self._hot.append(hot)
        return hot

    def _drop_hot(self) -> None:
        """Never reuse a connection in an unknown state: close this thread's one."""
        hot: sqlite3.Connection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        self._local.cursor = None
        if hot is not None:
            with contextlib.suppress(sqlite3.Error, ValueError):
                self._hot.remove(hot)
                hot.close()

    def _pg_fetchone(self, op: str, sql: str, params: tuple[Any, ...]) -> Any:
        """PostgreSQL: one row of a read-only statement on this thread's hot connection.

        An idle connection the server dropped (restart, failover) is replaced once and
        the SELECT redone -- it has no effect to repeat; any other failure, or a failure
        on a fresh connection, is StoreUnavailable (the lookup fails closed).
        """
        # lazy: psycopg only for a PostgreSQL store (tests/test_startup.py)
        import psycopg

        for attempt in (0, 1):
            conn: psycopg.Connection[Any] | None = getattr(self._local, "pgconn", None)
            fresh = conn is None
            try:
                if conn is None:
                    cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
                    conn = psycopg.connect(
                        *cargs,
                        **cparams,
                        autocommit=True,
                        connect_timeout=max(1, int(self._connect_timeout_s)),
                    )
                    self._local.pgconn = conn
                    self._pg_hot.append(conn)
                return conn.execute(sql, params).fetchone()
            except psycopg.Error as e:
                self._local.pgconn = None
                if conn is not None:
                    with contextlib.suppress(psycopg.Error, ValueError):
                        self._pg_hot.remove(conn)
                        conn.close()
                if fresh or attempt:
                    raise self._unavailable(op, e) from e
        raise StoreUnavailable(f"{op}: unreachable")  # not reached

    @contextmanager
    def _raw(self, op: str) -> Iterator[Any]:
        """A driver connection, with driver errors mapped to StoreError."""
        if self._sqlite_args is None:
            with self._errors(op), self.engine.connect() as conn:
                yield conn.connection.driver_connection
            return
        with self._errors(op):
            hot = self._hot_conn()
            try:
                yield hot
            except BaseException:
                self._drop_hot()
                raise

    @contextmanager
    def _transaction(self, op: str) -> Iterator[Any]:
        """One write transaction on a driver connection, committed when the block ends.

        SQLite: this thread's sqlite3 connection, ``BEGIN IMMEDIATE`` like every write
        on a SQLite store (see store.engine), so no SQLAlchemy is needed.  PostgreSQL: a
        pooled connection inside an engine transaction.  Statements go through :meth:`_q`.
        """
        if self._sqlite_args is None:
            with self._errors(op), self.engine.begin() as conn:
                yield conn.connection.driver_connection
            return
        with self._raw(op) as raw:
            raw.execute("BEGIN IMMEDIATE")
            try:
                yield raw
                raw.execute("COMMIT")
            except BaseException:
                if raw.in_transaction:
                    raw.rollback()
                raise

    def set_thread_autocheckpoint(self, pages: int) -> None:
        """SQLite: this thread's hot connection checkpoints after ``pages`` (0 = never)."""
        if self._sqlite_args is None:
            return
        self._local.autocheckpoint = pages
        with self._raw("set autocheckpoint") as raw:
            raw.execute(f"PRAGMA wal_autocheckpoint={int(pages)}")

    def wal_checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int] | None:
        """SQLite: run a WAL checkpoint (busy, wal frames, checkpointed); None elsewhere."""
        if self._sqlite_args is None:
            return None
        if mode not in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
            raise ValueError(f"bad checkpoint mode {mode!r}")
        with self._raw("wal checkpoint") as raw:
            row = raw.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        return (int(row[0]), int(row[1]), int(row[2]))

    def _q(self, sql: str) -> str:
        if not self._pg:
            return sql
        q = self._sql.get(sql)
        if q is None:
            q = self._sql[sql] = sql.replace("?", "%s")
        return q

    def _need_keyring(self) -> Keyring:
        if self.keyring is None:
            raise MasterKeyError("this operation needs the master key (--key-file or env)")
        return self.keyring

    def _result(self, row: Sequence[Any], now: float, *, enforce: bool = True) -> LookupResult:
        (uid, role, mode_s, handle, generation, key_id, wrapped, paper_w, p_handle, p_gen,
         p_kid, p_wrapped, p_paper, id_i, id_r, ptext, full_ike_at, last_used_at,
         established_s, bytes_total, resumptions, lineage, p_lineage) = row  # fmt: skip
        counters = _counters(uid, full_ike_at, last_used_at, established_s, bytes_total,
                             resumptions)  # fmt: skip
        refusal = self.policy.check(counters, now) if enforce else None
        if refusal is not None:
            return LookupResult(None, counters, refusal, None, uid, role)
        try:
            h, ii, ir = bytes(handle), bytes(id_i), bytes(id_r)
            gen = int(generation)
            wrapped_b = bytes(wrapped)
            paper_b = None if paper_w is None else bytes(paper_w)
            if role == "initiator" and p_handle is not None:
                if p_gen is None or p_kid is None or p_wrapped is None:
                    raise CorruptRecord(f"record {uid}: incomplete previous generation")
                p_fields = (bytes(p_handle), int(p_gen), p_kid, bytes(p_wrapped),
                            None if p_paper is None else bytes(p_paper))  # fmt: skip
            else:
                p_fields = None
        except (TypeError, ValueError) as e:  # SQLite: any type in any column
            raise CorruptRecord(f"record {uid}: wrongly typed column: {e}") from None
        kr = self._need_keyring()
        cred = unwrap_credential(
            kr, uid, role, mode_s, h, gen, key_id, wrapped_b, paper_b, ii, ir, ptext, lineage
        )
        prev = None
        if p_fields is not None:
            # a previous generation kept before lineage was stored: unknown, never more
            prev = unwrap_credential(kr, uid, role, mode_s, p_fields[0], p_fields[1],
                                     p_fields[2], p_fields[3], p_fields[4], ii, ir,
                                     ptext, p_lineage or "unknown")  # fmt: skip
        return LookupResult(
            cred, counters, None, self.policy.sa_lifetimes(counters, now), uid, role, prev
        )

    # -- reads -----------------------------------------------------------------------
    def lookup(self, handle: bytes, now: float, *, role: Role = "responder") -> LookupResult | None:
        """The record whose *current* handle is ``handle``; None if unknown.

        Raises StoreError (unreachable DB, corrupt row, wrong key): answer with a refusal.
        """
        if role == "responder" and self._sqlite_args is not None:
            # the per-message path: no pool, no context managers, one reused cursor
            try:
                cur = self._local.cursor
                if cur is None:
                    raise AttributeError
            except AttributeError:
                try:
                    self._hot_conn()
                except sqlite3.Error as e:
                    self._drop_hot()
                    raise self._unavailable("lookup", e) from e
                cur = self._local.cursor
            try:
                cur.execute(_SQL_LOOKUP_R, (handle,))
                # a unique key: fetchone steps to the end, which resets the statement and
                # ends the read transaction (no snapshot held between lookups)
                row = cur.fetchone()
            except sqlite3.Error as e:
                self._drop_hot()
                raise self._unavailable("lookup", e) from e
            return None if row is None else self._responder_result(handle, row, now)
        if self._pg:
            if role == "responder":
                row = self._pg_fetchone("lookup", self._q(_SQL_LOOKUP_R), (handle,))
                return None if row is None else self._responder_result(handle, row, now)
            row = self._pg_fetchone("lookup", self._q(_SQL_LOOKUP), (role, handle))
            return None if row is None else self._result(row, now)
        with self._raw("lookup") as raw:
            cur = raw.cursor()
            try:
                cur.execute(self._q(_SQL_LOOKUP), (role, handle))
                row = cur.fetchone()
            finally:
                cur.close()
        return None if row is None else self._result(row, now)

    def _responder_result(self, handle: bytes, row: Sequence[Any], now: float) -> LookupResult:
        """:meth:`_result` for a responder row of ``_SQL_LOOKUP_R`` (same checks, inlined)."""
        (uid, mode_s, generation, key_id, wrapped, paper_w, id_i, id_r, ptext, full_ike_at,
         last_used_at, established_s, bytes_total, resumptions, lineage) = row  # fmt: skip
        counters = _counters(uid, full_ike_at, last_used_at, established_s, bytes_total,
                             resumptions)  # fmt: skip
        policy = self.policy
        refusal = policy.check(counters, now)
        if refusal is not None:
            return LookupResult(None, counters, refusal, None, uid, "responder")
        cred = unwrap_credential(
            self._need_keyring(), uid, "responder", mode_s, handle, generation, key_id,
            wrapped, paper_w, id_i, id_r, ptext, lineage,
        )  # fmt: skip
        return LookupResult(
            cred, counters, None, policy.sa_lifetimes(counters, now), uid, "responder"
        )

    def lookup_peer(
        self, id_r: bytes, now: float, *, id_i: bytes | None = None
    ) -> LookupResult | None:
        """Initiator side: the most recently used credential for responder identity ``id_r``."""
        with self._raw("lookup_peer") as raw:
            cur = raw.cursor()
            try:
                if id_i is None:
                    cur.execute(self._q(_SQL_PEER), (id_r,))
                else:
                    cur.execute(self._q(_SQL_PEER_I), (id_r, id_i))
                row = cur.fetchone()
            finally:
                cur.close()
        return None if row is None else self._result(row, now)

    def count_by_lineage(self, role: Role = "responder") -> dict[str, int]:
        """Records of ``role`` per lineage, every lineage listed (0 when none): the
        service's ``ikeresume_credentials`` gauge.  One indexed scan; StoreError."""
        out = {lin.value: 0 for lin in Lineage}
        with self._raw("count_by_lineage") as raw:
            cur = raw.cursor()
            try:
                cur.execute(
                    self._q("SELECT lineage, COUNT(*) FROM credentials WHERE role = ? "
                            "GROUP BY lineage"), (role,),
                )  # fmt: skip
                for lineage, n in cur.fetchall():
                    out[str(lineage)] = int(n)
            finally:
                cur.close()
        return out

    def verify_record(self, uid: str) -> bool:
        """Unwrap a record's secrets ignoring the policy: False if no such uid.

        Raises CorruptRecord / MasterKeyError exactly as a lookup would.
        """
        with self._raw("verify") as raw:
            cur = raw.cursor()
            try:
                cur.execute(self._q(_SQL_BY_UID), (uid,))
                row = cur.fetchone()
            finally:
                cur.close()
        if row is None:
            return False
        self._result(row, 0.0, enforce=False)
        return True

    # -- the ratchet -----------------------------------------------------------------
    def commit_ratchet(
        self,
        handle: bytes,
        generation: int,
        successor: Credential,
        now: float,
        install: InstallIntent | None = None,
    ) -> bool:
        """Responder: accept ``successor`` iff the record is still at (handle, generation)
        and the policy still allows a resumption of it at ``now`` (with ``install``, its
        outbox row in the same transaction)."""
        req = RatchetRequest(handle, generation, successor, now, install)
        return self.commit_ratchet_many([req])[0]

    def commit_ratchet_many(
        self, reqs: Sequence[RatchetRequest], *, forget: Sequence[str] = ()
    ) -> list[bool]:
        """Many compare-and-sets in ONE transaction; returns only after it is durable.

        Each result says whether that request won its CAS: the record is still at
        (handle, generation) and :attr:`policy` still allows it at the request's ``now``
        (see :func:`ratchet_policy_guard`).  Requests for the same
        (handle, generation) in one batch: the first wins, later ones see the new row.
        (SQLite applies a batch in order; PostgreSQL in handle order, so that responders
        sharing it cannot deadlock -- there a request for another request's successor in
        the same batch may be refused, which a responder never sends: it acknowledges a
        successor only after its commit.)
        Every winning request with an ``install`` also inserts its install-outbox row in
        the same transaction (a losing one inserts nothing); ``forget`` names outbox rows
        (installed meanwhile) to delete in it too -- deletions ride along with the next
        commit instead of costing a durable transaction of their own.
        Raises StoreError if the transaction could not be committed (then none was).
        """
        if not reqs:
            if forget:
                self.forget_installs(forget)
            return []
        kr = self._need_keyring()
        sql, guard = self._ratchet_sql()
        # one getrandom() for the whole batch's nonces instead of one per successor (and
        # per install-outbox row: the second half)
        n = len(reqs)
        nonces = os.urandom(2 * AEAD_NONCE_LEN * n)
        rows = []
        outbox: list[tuple[Any, ...] | None] = []
        for k, r in enumerate(reqs):
            if r.install is None:
                outbox.append(None)
            else:
                o = (n + k) * AEAD_NONCE_LEN
                nonce = nonces[o : o + AEAD_NONCE_LEN]
                outbox.append(encode_row(kr, r.install, r.handle, r.generation, r.now, nonce))
            s = r.successor
            ptext = params_text(s.params)
            nonce = nonces[k * AEAD_NONCE_LEN : (k + 1) * AEAD_NONCE_LEN]
            kid, wrapped, paper = wrap_credential(kr, "responder", s, ptext, nonce)
            row: tuple[Any, ...] = (
                s.handle, s.generation, wrapped, paper, kid, s.lineage.value, r.now, r.now,
                r.handle, r.generation, s.mode.value, s.id_i, s.id_r, ptext,
            )  # fmt: skip
            if guard:
                now = r.now
                for with_now, lim in guard:
                    row += (now, lim) if with_now else (lim,)
            rows.append(row)
        if self._pg:
            return self._ratchet_pg(sql, rows, outbox, forget)
        return self._ratchet_sqlite(sql, rows, outbox, forget)

    def _ratchet_sql(self) -> tuple[str, tuple[tuple[bool, float], ...]]:
        """``_SQL_RATCHET`` guarded by the current policy (rebuilt if ``policy`` changes)."""
        cached = self._ratchet_cache
        if cached is None or cached[0] is not self.policy:
            terms, guard = ratchet_policy_guard(self.policy)
            cached = self._ratchet_cache = (self.policy, _SQL_RATCHET + terms, guard)
        return cached[1], cached[2]

    def _ratchet_sqlite(
        self,
        sql: str,
        rows: list[tuple[Any, ...]],
        outbox: list[tuple[Any, ...] | None],
        forget: Sequence[str],
    ) -> list[bool]:
        """The batch in one ``BEGIN IMMEDIATE`` transaction on this thread's connection.

        Fast path: one ``executemany``; every statement changes at most one row (the
        (role, handle) key is unique), so a total of ``len(rows)`` changes means every
        CAS won.  Otherwise (a lost CAS, or a successor handle that collides) that
        transaction is rolled back, nothing having been committed, and the batch is redone
        one statement at a time in a new one, each request answered by its own change
        count: the answers are those of sequential CASes.  Nothing is acknowledged
        before ``COMMIT`` returns, which at ``synchronous=FULL`` is after the WAL fsync.
        """
        op = "commit_ratchet"
        try:
            raw = self._hot_conn()
        except sqlite3.Error as e:
            self._drop_hot()
            raise self._unavailable(op, e) from e
        n = len(rows)
        try:
            raw.execute("BEGIN IMMEDIATE")
            try:
                try:
                    changed = raw.executemany(sql, rows).rowcount
                except sqlite3.IntegrityError:
                    changed = -1
                if changed != n:
                    # Redo from scratch.  (Not a SAVEPOINT: one would copy every page the
                    # batch touches into a sub-journal, on the common path too.)
                    raw.rollback()
                    raw.execute("BEGIN IMMEDIATE")
                    out = []
                    cur = raw.cursor()
                    try:
                        for p in rows:
                            try:
                                cur.execute(sql, p)
                                out.append(cur.rowcount == 1)
                            except sqlite3.IntegrityError:  # successor handle collides
                                out.append(False)
                    finally:
                        cur.close()
                else:
                    out = [True] * n
                won = [o for o, ok in zip(outbox, out, strict=True) if ok and o is not None]
                if won:
                    raw.executemany(_SQL_OUTBOX_INSERT, won)
                if forget:
                    raw.executemany(_SQL_OUTBOX_DELETE, [(u,) for u in forget])
                raw.execute("COMMIT")
            except BaseException:
                if raw.in_transaction:
                    raw.rollback()
                raise
        except sqlite3.Error as e:
            self._drop_hot()  # never reuse a connection in an unknown state
            raise self._unavailable(op, e) from e
        except BaseException:
            self._drop_hot()
            raise
        return out

    def _ratchet_pg(
        self,
        sql: str,
        rows: list[tuple[Any, ...]],
        outbox: list[tuple[Any, ...] | None],
        forget: Sequence[str],
    ) -> list[bool]:
        """Batch CAS on PostgreSQL, rows locked in handle order.

        Two responders committing overlapping batches in different orders would wait on
        each other's row locks and one would die of a deadlock; a single global order (the
        handle, as in the WHERE clause) makes the waits acyclic: the later one blocks, then
        finds the generation moved and refuses.
        """
        order = sorted(range(len(rows)), key=lambda i: rows[i][_RATCHET_HANDLE_PARAM])  # stable
        sorted_out = self._ratchet_pg_ordered(
            sql, [rows[i] for i in order], [outbox[i] for i in order], forget
        )
        out = [False] * len(rows)
        for pos, i in enumerate(order):
            out[i] = sorted_out[pos]
        return out

    def _ratchet_pg_ordered(
        self,
        sql: str,
        rows: list[tuple[Any, ...]],
        outbox: list[tuple[Any, ...] | None],
        forget: Sequence[str],
    ) -> list[bool]:
        # lazy: psycopg only for a PostgreSQL store (tests/test_startup.py)
        import psycopg

        sql = self._q(sql) + " RETURNING id"
        insert, delete = self._q(_SQL_OUTBOX_INSERT), self._q(_SQL_OUTBOX_DELETE)
        with self._raw("commit_ratchet") as raw:
            try:
                out: list[bool] = []
                with raw.cursor() as cur:
                    cur.executemany(sql, rows, returning=True)
                    while True:
                        out.append(cur.fetchone() is not None)
                        if not cur.nextset():
                            break
                    won = [o for o, ok in zip(outbox, out, strict=True) if ok and o is not None]
                    if won:
                        cur.executemany(insert, won)
                    if forget:
                        cur.executemany(delete, [(u,) for u in forget])
                raw.commit()
                return out
            except psycopg.IntegrityError:
                raw.rollback()
            # A successor handle collided with another row: redo one by one so that only
            # the offending request is refused.
            out = []
            for p, o in zip(rows, outbox, strict=True):
                try:
                    with raw.cursor() as cur:
                        cur.execute(sql, p)
                        ok = cur.fetchone() is not None
                        if ok and o is not None:
                            cur.execute(insert, o)
                    raw.commit()
                except psycopg.IntegrityError:
                    raw.rollback()
                    ok = False
                out.append(ok)
            if forget:
                with raw.cursor() as cur:
                    cur.executemany(delete, [(u,) for u in forget])
                raw.commit()
            return out

    def advance_initiator(
        self, used_handle: bytes, used_generation: int, successor: Credential, now: float
    ) -> bool:
        """Initiator: a resumption using (used_handle, used_generation) completed.

        The successor becomes current and the generation just used is kept as ``previous``
        until :meth:`confirm_initiator` (the responder may not have received message 3).
        ``used`` may be the current or the kept previous generation.
        """
        RatchetRequest(used_handle, used_generation, successor, now)  # validates generation
        s = successor
        ptext = params_text(s.params)
        kid, wrapped, paper = wrap_credential(self._need_keyring(), "initiator", s, ptext)
        used = (used_handle, used_generation)
        p = (*used * 6, s.handle, s.generation, wrapped, paper, kid, s.lineage.value, now, now,
             s.mode.value, s.id_i, s.id_r, ptext, *used, *used)  # fmt: skip
        with self._transaction("advance_initiator") as raw:
            n = raw.execute(self._q(_SQL_ADVANCE), p).rowcount
        return bool(n == 1)

    def confirm_initiator(self, handle: bytes, generation: int) -> bool:
        """Initiator: the responder is known to hold (handle, generation); drop the older one."""
        # lazy: a SQLite cache runs on the sqlite3 driver alone (tests/test_startup.py)
        from sqlalchemy import update

        _T = _table()
        stmt = (
            update(_T)
            .where(_T.c.role == "initiator", _T.c.handle == handle, _T.c.generation == generation)
            .values(
                prev_handle=None,
                prev_generation=None,
                prev_key_id=None,
                prev_secret_wrapped=None,
                prev_paper_wrapped=None,
                prev_lineage=None,
            )
        )
        with self._errors("confirm_initiator"), self.engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    # -- the install outbox (spec 6.2.1) ---------------------------------------------
    def pending_installs(self, node: str, now: float) -> OutboxReplay:
        """Start-up: the outbox rows of ``node`` to install, their lifetimes cut to what
        remains at ``now``.  Rows whose hard expiry has passed are deleted here (one
        transaction) and never installed; rows that do not decode or authenticate are left
        in place and reported (fail closed: nothing is installed from them, nothing is
        deleted because it could not be read)."""
        kr = self._need_keyring()
        with self._raw("pending installs") as raw:
            cur = raw.cursor()
            try:
                rows = cur.execute(self._q(_SQL_OUTBOX_SELECT), (node,)).fetchall()
            finally:
                cur.close()
        pending: list[PendingInstall] = []
        expired: list[str] = []
        unreadable: dict[str, str] = {}
        for row in rows:
            uid, exp = str(row[0]), row[4]
            if exp is not None and float(exp) <= now:
                expired.append(uid)
                continue
            try:
                pending.append(decode_row(kr, tuple(row), now))
            except StoreError as e:
                unreadable[uid] = str(e)
        if expired:
            self.forget_installs(expired)
        return OutboxReplay(pending, len(expired), unreadable)

    def forget_installs(self, uids: Sequence[str]) -> int:
        """Delete install-outbox rows (installed, or expired); the number deleted."""
        if not uids:
            return 0
        with self._transaction("forget installs") as raw:
            cur = raw.cursor()
            try:
                n = 0
                for u in uids:
                    cur.execute(self._q(_SQL_OUTBOX_DELETE), (u,))
                    n += max(0, cur.rowcount)
            finally:
                cur.close()
        return n

    # -- full IKE and accounting -----------------------------------------------------
    def upsert_full_ike(
        self, role: Role, credential: Credential, now: float, *, counters: Counters | None = None
    ) -> str:
        """Start a new chain after a full IKE; returns the record uid.

        With ``replace_same_peers`` (default) a full IKE between the same identities
        replaces that pair's previous chain for this role.  Evicts the least recently used
        records beyond ``policy.capacity`` in the same transaction.
        """
        # lazy: a SQLite cache runs on the sqlite3 driver alone (tests/test_startup.py)
        from sqlalchemy import delete, insert

        _T = _table()
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        c = credential
        ctr = counters or Counters.fresh(now)
        ptext = params_text(c.params)
        kid, wrapped, paper = wrap_credential(self._need_keyring(), role, c, ptext)
        uid = secrets.token_hex(16)
        with self._errors("upsert_full_ike"), self.engine.begin() as conn:
            if self.replace_same_peers:
                conn.execute(
                    delete(_T).where(_T.c.role == role, _T.c.id_i == c.id_i, _T.c.id_r == c.id_r)
                )
            conn.execute(delete(_T).where(_T.c.role == role, _T.c.handle == c.handle))
            conn.execute(
                insert(_T).values(
                    uid=uid,
                    role=role,
                    mode=c.mode.value,
                    handle=c.handle,
                    generation=c.generation,
                    key_id=kid,
                    secret_wrapped=wrapped,
                    paper_wrapped=paper,
                    id_i=c.id_i,
                    id_r=c.id_r,
                    params=ptext,
                    full_ike_at=ctr.full_ike_at,
                    last_used_at=ctr.last_used_at,
                    established_s=ctr.established_s,
                    bytes_total=ctr.bytes_total,
                    resumptions=ctr.resumptions,
                    created_at=now,
                    lineage=c.lineage.value,
                )
            )
            self._evict_beyond_capacity(conn, keep_uid=uid)
        return uid

    def upsert_full_ike_many(
        self,
        role: Role,
        credentials: Sequence[Credential],
        now: float,
        *,
        counters: Counters | None = None,
    ) -> list[str]:
        """Many :meth:`upsert_full_ike` calls in ONE transaction; returns their uids.

        Same result as calling it for each credential in order (a later credential with
        the same identities -- with ``replace_same_peers`` -- or the same handle replaces
        an earlier one, whose uid is then not in the table), except that the capacity
        limit is applied once at the end: the least recently used records beyond it go,
        this batch's included.  For loading many chains at once (start-up harvest,
        migration, benchmarks): one commit instead of one per chain.
        """
        # lazy: a SQLite cache runs on the sqlite3 driver alone (tests/test_startup.py)
        from sqlalchemy import bindparam, delete, insert

        _T = _table()
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        ctr = counters or Counters.fresh(now)
        # later entries win: drop earlier ones that a later one would delete
        last_by_peers: dict[tuple[bytes, bytes], int] = {}
        last_by_handle: dict[bytes, int] = {}
        for i, c in enumerate(credentials):
            last_by_peers[(c.id_i, c.id_r)] = i
            last_by_handle[c.handle] = i
        uids: list[str] = []
        values: list[dict[str, Any]] = []
        for i, c in enumerate(credentials):
            uid = secrets.token_hex(16)
            uids.append(uid)
            if last_by_handle[c.handle] != i:
                continue
            if self.replace_same_peers and last_by_peers[(c.id_i, c.id_r)] != i:
                continue
            ptext = params_text(c.params)
            kid, wrapped, paper = wrap_credential(self._need_keyring(), role, c, ptext)
            values.append(
                {
                    "uid": uid, "role": role, "mode": c.mode.value, "handle": c.handle,
                    "generation": c.generation, "key_id": kid, "secret_wrapped": wrapped,
                    "paper_wrapped": paper, "id_i": c.id_i, "id_r": c.id_r, "params": ptext,
                    "full_ike_at": ctr.full_ike_at, "last_used_at": ctr.last_used_at,
                    "established_s": ctr.established_s, "bytes_total": ctr.bytes_total,
                    "resumptions": ctr.resumptions, "created_at": now,
                    "lineage": c.lineage.value,
                }
            )  # fmt: skip
        if not values:
            return uids
        with self._errors("upsert_full_ike_many"), self.engine.begin() as conn:
            if self.replace_same_peers:
                conn.execute(
                    delete(_T).where(
                        _T.c.role == role,
                        _T.c.id_i == bindparam("b_id_i"),
                        _T.c.id_r == bindparam("b_id_r"),
                    ),
                    [{"b_id_i": v["id_i"], "b_id_r": v["id_r"]} for v in values],
                )
            conn.execute(
                delete(_T).where(_T.c.role == role, _T.c.handle == bindparam("b_handle")),
                [{"b_handle": v["handle"]} for v in values],
            )
            conn.execute(insert(_T), values)
            self._evict_beyond_capacity(conn)
        return uids

    def _evict_beyond_capacity(self, conn: Connection, keep_uid: str | None = None) -> None:
        """LRU: delete the least recently used records beyond policy.capacity (same txn)."""
        # lazy: a SQLite cache runs on the sqlite3 driver alone (tests/test_startup.py)
        from sqlalchemy import delete, func, select

        _T = _table()
        cap = self.policy.capacity
        if cap is None:
            return
        n = conn.execute(select(func.count()).select_from(_T)).scalar_one()
        if n <= cap:
            return
        victims = select(_T.c.id)
        if keep_uid is not None:
            victims = victims.where(_T.c.uid != keep_uid)
        victims = victims.order_by(_T.c.last_used_at.asc(), _T.c.id.asc()).limit(n - cap)
        ids = [r[0] for r in conn.execute(victims)]
        conn.execute(delete(_T).where(_T.c.id.in_(ids)))

    def record_session(
        self, role: Role, handle: bytes, *, duration_s: float, nbytes: int, ended_at: float
    ) -> bool:
        """Account a finished (or interim) session segment: connected time and bytes.

        ``handle`` may be the record's current or (initiator) kept previous handle.
        Returns False if no such record (e.g. revoked or replaced meanwhile).
        """
        # lazy: a SQLite cache runs on the sqlite3 driver alone (tests/test_startup.py)
        from sqlalchemy import case, literal, update

        _T = _table()
        if duration_s < 0 or nbytes < 0:
            raise ValueError("session duration and bytes must be non-negative")
        stmt = (
            update(_T)
            .where(_T.c.role == role, (_T.c.handle == handle) | (_T.c.prev_handle == handle))
            .values(
                established_s=_T.c.established_s + float(duration_s),
                bytes_total=_T.c.bytes_total + int(nbytes),
                last_used_at=case(
                    (_T.c.last_used_at < literal(float(ended_at)), literal(float(ended_at))),
                    else_=_T.c.last_used_at,
                ),
            )
        )
        with self._errors("record_session"), self.engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount >= 1)

    def revoke(self, *, uid: str | None = None, handle: bytes | None = None) -> int:
        """Delete a record (by uid, or by current handle in any role); returns rows deleted."""
        # lazy: a SQLite cache runs on the sqlite3 driver alone (tests/test_startup.py)
        from sqlalchemy import delete

        _T = _table()
        if (uid is None) == (handle is None):
            raise ValueError("revoke by exactly one of uid or handle")
        cond = _T.c.uid == uid if uid is not None else _T.c.handle == handle
        with self._errors("revoke"), self.engine.begin() as conn:
            return int(conn.execute(delete(_T).where(cond)).rowcount)

    # -- master keys -----------------------------------------------------------------
    def verify_master_keys(self) -> bool:
        """Refuse a master key that does not match the one that wrapped this database.

        Read-only (no write lock, no transaction that writes): opening a cache must not
        stall behind another process's write, nor block one.  Checks each configured key
        against its stored check value and that the records' key ids are not all unknown.
        Returns whether the current key is registered; if not, :meth:`register_master_key`
        is the (separate, explicit) write that registers it.
        """
        kr = self._need_keyring()
        with self._raw("verify master keys") as raw:
            cur = raw.cursor()
            try:
                rows = cur.execute("SELECT key_id, check_blob FROM master_keys").fetchall()
                used = {r[0] for r in cur.execute(
                    "SELECT DISTINCT key_id FROM credentials").fetchall()}  # fmt: skip
            finally:
                cur.close()
        stored = {str(k): bytes(b) for k, b in rows}
        self._check_keys(kr, stored)
        if used and not used & set(kr.key_ids):
            raise MasterKeyError(
                f"wrong master key: records in {self.url_display} are wrapped under key id(s) "
                f"{', '.join(sorted(used))}, configured: {', '.join(kr.key_ids)}"
            )
        return kr.current_id in stored

    def _check_keys(self, kr: Keyring, stored: dict[str, bytes]) -> None:
        for kid in kr.key_ids:
            if kid in stored and kr.verify_check(kid, stored[kid]) is False:
                raise MasterKeyError(
                    f"master key {kid!r} is not the key this database was written with "
                    f"({self.url_display}); refusing to use it"
                )

    def register_master_key(self, now: float = 0.0) -> bool:
        """Register the keyring's current key (its check value) so that a wrong key is
        caught at open; True if this call registered it, False if it already was.

        One write transaction of its own, done on a database's first use with a key (a new
        cache, or the new key of a rotation): every other open is read-only.  Two processes
        registering the same key at once: one inserts, the other finds it (and checks it).
        """
        kr = self._need_keyring()
        kid, blob = kr.key_check()
        with self._transaction("register master key") as raw:
            row = raw.execute(
                self._q("SELECT check_blob FROM master_keys WHERE key_id = ?"), (kid,)
            ).fetchone()
            if row is not None:
                self._check_keys(kr, {kid: bytes(row[0])})
                return False
            sql = "INSERT INTO master_keys (key_id, check_blob, created_at) VALUES (?, ?, ?)"
            raw.execute(self._q(sql), (kid, blob, now))
        return True
