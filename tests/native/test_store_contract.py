"""The Rust SQLite store against the one schema (store/tables.py) and the Python store.

* It runs the Python store's statements, character for character: the responder lookup and
  the guarded ratchet UPDATE for any policy.
* Those statements read and write exactly the columns of ``store.tables.credentials`` that
  the Python store's do (SQLite's authorizer reports every column a statement touches).
* Rows written by Python read back identically in Rust (credential, SA lifetimes), and
  rows committed by Rust read back identically in Python -- the same columns as a Python
  commit would leave, the secret wrapped under the same key id with the same AAD.
* The hypothesis property "the SQL guard equals Policy.check" holds for the Rust guard, and
  the Rust lookup-time check and lifetimes equal ``Policy.check`` / ``sa_lifetimes``.
* Bad rows fail closed the way the Python store's do: a corrupt row or a wrong key is an
  error, never a credential.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resume import _native  # type: ignore[attr-defined]
from resume.credential import Credential
from resume.native import native_credential, python_credential
from resume.net.native_service import native_sqlite_store
from resume.sa import DirectionKeys, Lifetimes, SAPair
from store import outbox, repository
from store.keys import Keyring, MasterKey
from store.outbox import InstallIntent
from store.policy import Counters, Policy
from store.repository import RatchetRequest, Store
from store.tables import credentials
from tests.store.helpers import make_credential, successor

NOW = 1_800_000_000.0
H = 3600.0
FIELDS = ("clocked", "established", "data", "max_chain_age", "idle", "max_resumptions")


def _limits(p: Policy) -> dict[str, Any]:
    return {f: getattr(p, f) for f in FIELDS}


@pytest.fixture
def kr() -> Keyring:
    return Keyring([MasterKey.generate()])


@pytest.fixture
def store(tmp_path: Path, kr: Keyring) -> Iterator[Store]:
    s = Store.open(f"sqlite:///{tmp_path}/cache.db", kr)
    yield s
    s.close()


def _row(store: Store, handle: bytes) -> dict[str, Any]:
    path = store.sqlite_file()
    assert path is not None
    con = sqlite3.connect(path[0])
    con.row_factory = sqlite3.Row
    try:
        r = con.execute("SELECT * FROM credentials WHERE handle = ?", (handle,)).fetchone()
    finally:
        con.close()
    return dict(r) if r is not None else {}


# -- the statements -------------------------------------------------------------------------
POLICIES = [
    Policy(),
    Policy(max_chain_age=None),
    Policy(
        clocked=2 * H,
        max_chain_age=H,
        idle=600.0,
        established=1800.0,
        data=10**9,
        max_resumptions=5,
    ),
    Policy(clocked=7200, max_chain_age=None, idle=None, data=5, max_resumptions=None),
]


@pytest.mark.parametrize("policy", POLICIES)
def test_the_rust_store_runs_the_python_stores_statements(store: Store, policy: Policy) -> None:
    sql = _native.store_sql(_limits(policy))
    assert sql["lookup"] == repository._SQL_LOOKUP_R
    store.policy = policy
    assert sql["ratchet"] == store._ratchet_sql()[0]
    assert native_sqlite_store(store).ratchet_sql == store._ratchet_sql()[0]


def _touched(db: Path, statement: str) -> tuple[set[str], set[str]]:
    """(columns read, columns written) of ``credentials`` by ``statement`` (authorizer)."""
    read: set[str] = set()
    written: set[str] = set()
    con = sqlite3.connect(db)

    def auth(action: int, a: str | None, b: str | None, _db: str | None, _t: str | None) -> int:
        if action == sqlite3.SQLITE_READ and a == "credentials" and b:
            read.add(b)
        if action == sqlite3.SQLITE_UPDATE and a == "credentials" and b:
            written.add(b)
        return sqlite3.SQLITE_OK

    con.set_authorizer(auth)
    try:
        # prepared (so authorized), not run: EXPLAIN, every parameter NULL
        con.execute("EXPLAIN " + statement, (None,) * statement.count("?"))
    finally:
        con.close()
    return read, written


def test_the_statements_touch_exactly_the_schemas_columns(store: Store, tmp_path: Path) -> None:
    schema = {c.name for c in credentials.columns}
    policy = POLICIES[2]
    sql = _native.store_sql(_limits(policy))
    db = tmp_path / "cache.db"
    read, written = _touched(db, sql["lookup"])
    assert read <= schema and not written
    assert read == {
        "uid", "mode", "generation", "key_id", "secret_wrapped", "paper_wrapped", "id_i",
        "id_r", "params", "full_ike_at", "last_used_at", "established_s", "bytes_total",
        "resumptions", "lineage", "role", "handle",
    }  # fmt: skip
    read, written = _touched(db, sql["ratchet"])
    assert written == {
        "handle", "generation", "secret_wrapped", "paper_wrapped", "key_id", "lineage",
        "resumptions", "last_used_at",
    }  # fmt: skip
    assert read <= schema
    # the Python store's own statements touch the same columns
    store.policy = policy
    assert _touched(db, store._ratchet_sql()[0]) == (read, written)


# -- rows both ways -------------------------------------------------------------------------
def _same_credential(n: Any, c: Credential) -> None:
    back = python_credential(n)
    assert (back.handle, back.generation, back.secret, back.id_i, back.id_r) == (
        c.handle, c.generation, c.secret, c.id_i, c.id_r,
    )  # fmt: skip
    assert back.params == c.params


def test_python_rows_read_back_in_rust(store: Store) -> None:
    store.policy = POLICIES[2]
    creds = [make_credential(peer=f"p{i}.example") for i in range(5)]
    for i, c in enumerate(creds):
        store.upsert_full_ike("responder", c, NOW - 10 * i)
    ns = native_sqlite_store(store)
    for c in creds:
        py = store.lookup(c.handle, NOW)
        kind, n, lt = ns.lookup(c.handle, NOW)
        assert kind == "found" and py is not None and py.lifetimes is not None
        _same_credential(n, c)
        assert lt == dataclasses.astuple(py.lifetimes)
    assert ns.lookup(b"\x07" * 16, NOW) == ("miss",)
    assert store.lookup(creds[0].handle, NOW, role="initiator") is None


def test_rust_commits_read_back_in_python_as_python_commits_would(
    tmp_path: Path, kr: Keyring
) -> None:
    """Two databases, one credential each side; Python commits on one, Rust on the other:
    every column ends equal but the fresh wrapping nonce, and Python reads the Rust row."""
    a = Store.open(f"sqlite:///{tmp_path}/a.db", kr)
    b = Store.open(f"sqlite:///{tmp_path}/b.db", kr)
    try:
        c0 = make_credential()
        for s in (a, b):
            s.upsert_full_ike("responder", c0, NOW - 60)
        c1 = successor(c0)
        assert a.commit_ratchet(c0.handle, 0, c1, NOW)
        nb = native_sqlite_store(b)
        assert nb.commit_many([(c0.handle, 0, native_credential(c1), None, NOW, None)]) == [True]
        ra, rb = _row(a, c1.handle), _row(b, c1.handle)
        assert ra and rb
        for col in ra:
            if col not in ("uid", "secret_wrapped", "id"):
                assert ra[col] == rb[col], col
        assert ra["secret_wrapped"] != rb["secret_wrapped"]  # fresh nonces
        got = b.lookup(c1.handle, NOW)
        assert got is not None and got.credential == c1
        assert b.verify_record(str(rb["uid"]))
        # the generation it moved past is gone for both, and a replay loses
        assert b.lookup(c0.handle, NOW) is None
        assert nb.commit_many([(c0.handle, 0, native_credential(c1), None, NOW, None)]) == [False]
        # and a Rust lookup of the Python-committed row gives the successor
        kind, n, _lt = native_sqlite_store(a).lookup(c1.handle, NOW)
        assert kind == "found"
        _same_credential(n, c1)
    finally:
        a.close()
        b.close()


# -- the install outbox (spec 6.2.1) ----------------------------------------------------------
def _outbox(store: Store) -> list[dict[str, Any]]:
    path = store.sqlite_file()
    assert path is not None
    con = sqlite3.connect(path[0])
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute("SELECT * FROM install_outbox ORDER BY uid")]
    finally:
        con.close()


def _pair(c: Credential, lifetimes: Lifetimes) -> SAPair:
    p = c.params

    def keys(spi: int) -> DirectionKeys:
        return DirectionKeys(spi, os.urandom(p.encr_key_len), os.urandom(p.integ.key_len))

    return SAPair("responder", p, keys(0xC0DE0001), keys(0xC0DE0002), lifetimes)


def _native_pair(sa: SAPair) -> tuple[Any, ...]:
    d = [(k.spi, k.encr_key, k.integ_key) for k in (sa.i_to_r, sa.r_to_i)]
    lt = sa.lifetimes
    lts = (lt.soft_seconds, lt.hard_seconds, lt.soft_bytes, lt.hard_bytes, lt.soft_packets,
           lt.hard_packets)  # fmt: skip
    return (d[0], d[1], lts)


@pytest.mark.parametrize(
    "lifetimes",
    [Lifetimes(soft_seconds=3000, hard_seconds=3600), Lifetimes(), Lifetimes(hard_bytes=10**9)],
)
def test_rust_outbox_rows_are_python_outbox_rows(
    tmp_path: Path, kr: Keyring, lifetimes: Lifetimes
) -> None:
    """A Rust commit that carries an SA pair writes the install-outbox row a Python commit
    writes -- same statement, every column equal but the wrapping nonce -- in the SAME
    transaction as its compare-and-set, and Python's start-up replay reads it back."""
    a = Store.open(f"sqlite:///{tmp_path}/a.db", kr)
    b = Store.open(f"sqlite:///{tmp_path}/b.db", kr)
    try:
        nb = native_sqlite_store(b)
        assert nb.outbox_sql == (outbox.INSERT_SQL, repository._SQL_OUTBOX_DELETE)
        c0 = make_credential()
        for s in (a, b):
            s.upsert_full_ike("responder", c0, NOW - 60)
        c1 = successor(c0)
        sa = _pair(c0, lifetimes)
        uid = "ab" * 16
        intent = InstallIntent(uid, "gw-1", sa)
        assert a.commit_ratchet_many([RatchetRequest(c0.handle, 0, c1, NOW, intent)]) == [True]
        rust = (uid, "gw-1", _native_pair(sa))
        assert nb.commit_many([(c0.handle, 0, native_credential(c1), None, NOW, rust)]) == [True]
        [ra], [rb] = _outbox(a), _outbox(b)
        for col in ra:
            if col != "keys_wrapped":
                assert ra[col] == rb[col], col
        assert ra["keys_wrapped"] != rb["keys_wrapped"]  # fresh nonces
        assert rb["sa"] == outbox.sa_text(sa) and rb["key_id"] == kr.current_id
        # Python's replay decodes and authenticates the Rust row: the same pair
        found = b.pending_installs("gw-1", NOW + 1)
        [p] = found.pending
        assert p.uid == uid and (p.handle, p.generation) == (c0.handle, 0)
        assert (p.sa.i_to_r, p.sa.r_to_i, p.sa.params) == (sa.i_to_r, sa.r_to_i, sa.params)
        assert p.sa.role == "responder" and not found.unreadable
        assert b.pending_installs("gw-2", NOW + 1).pending == []  # another node's: not ours

        # a compare-and-set that loses writes no row
        lost = ("cd" * 16, "gw-1", _native_pair(sa))
        assert nb.commit_many([(c0.handle, 0, native_credential(c1), None, NOW, lost)]) == [False]
        assert [r["uid"] for r in _outbox(b)] == [uid]
        # one transaction: a row that cannot be inserted (its uid is taken) undoes the
        # compare-and-set with it -- no accept is durable without its outbox row
        c2 = successor(c1)
        dup = (uid, "gw-1", _native_pair(_pair(c1, lifetimes)))
        with pytest.raises(OSError, match="unavailable"):
            nb.commit_many([(c1.handle, 1, native_credential(c2), None, NOW, dup)])
        r = b.lookup(c1.handle, NOW)
        assert r is not None and r.credential == c1 and b.lookup(c2.handle, NOW) is None
        # installed: the deletion rides on a transaction (its own with no accept)
        assert nb.commit_many([], forget=[uid]) == []
        assert _outbox(b) == []
    finally:
        a.close()
        b.close()


def test_a_successor_must_follow_its_generation(store: Store) -> None:
    """The Python store refuses such a request (RatchetRequest raises ValueError); the
    Rust store refuses the accept and writes nothing."""
    c = make_credential()
    store.upsert_full_ike("responder", c, NOW)
    with pytest.raises(ValueError):
        RatchetRequest(c.handle, 0, make_credential(2), NOW)
    bad = make_credential(2, params=c.params)
    ns = native_sqlite_store(store)
    assert ns.commit_many([(c.handle, 0, native_credential(bad), None, NOW, None)]) == [False]
    r = store.lookup(c.handle, NOW)
    assert r is not None and r.credential == c


def test_a_batch_answers_each_accept_like_sequential_cases(store: Store) -> None:
    a0, b0 = make_credential(peer="a.example"), make_credential(peer="b.example")
    for c in (a0, b0):
        store.upsert_full_ike("responder", c, NOW)
    a1, b1 = successor(a0), successor(b0)
    a2 = successor(a1)
    ns = native_sqlite_store(store)
    res = ns.commit_many(
        [
            (a0.handle, 0, native_credential(a1), None, NOW, None),
            (a0.handle, 0, native_credential(successor(a0)), None, NOW, None),  # same g again
            (a1.handle, 1, native_credential(a2), None, NOW, None),  # a chain in the batch
            (b0.handle, 0, native_credential(b1), None, NOW, None),
        ]
    )
    assert res == [True, False, True, True]
    r = store.lookup(a2.handle, NOW)
    assert r is not None and r.credential == a2 and r.counters.resumptions == 2


# -- the policy: lookup-time check, lifetimes and the SQL guard ----------------------------
_LIMIT = st.one_of(st.none(), st.floats(0, 10 * H, allow_nan=False))
#: a policy (its six limits) and a record's counters, for the properties below
_CASE: dict[str, Any] = dict(
    clocked=_LIMIT,
    chain=_LIMIT,
    idle=_LIMIT,
    established=_LIMIT,
    data=st.one_of(st.none(), st.integers(0, 10**6)),
    max_res=st.one_of(st.none(), st.integers(0, 5)),
    age=st.floats(0, 10 * H, allow_nan=False),
    since_use=st.floats(0, 10 * H, allow_nan=False),
    est=st.floats(0, 10 * H, allow_nan=False),
    nbytes=st.integers(0, 10**6),
    resumptions=st.integers(0, 5),
)


@settings(max_examples=60, deadline=None)
@given(**_CASE)
def test_rust_check_and_lifetimes_equal_policy_check(
    clocked: float | None, chain: float | None, idle: float | None,
    established: float | None, data: int | None, max_res: int | None, age: float,
    since_use: float, est: float, nbytes: int, resumptions: int,
) -> None:  # fmt: skip
    policy = Policy(clocked=clocked, max_chain_age=chain, idle=idle, established=established,
                    data=data, max_resumptions=max_res)  # fmt: skip
    c = Counters(NOW - age, NOW - since_use, est, nbytes, resumptions)
    refusal, lt = _native.policy_check(
        _limits(policy), c.full_ike_at, c.last_used_at, c.established_s, c.bytes_total,
        c.resumptions, NOW,
    )  # fmt: skip
    py = policy.check(c, NOW)
    assert refusal == (None if py is None else py.value)
    if py is None:
        assert lt == dataclasses.astuple(policy.sa_lifetimes(c, NOW))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(**_CASE)
def test_rust_commit_guard_agrees_with_policy_check(
    store: Store, clocked: float | None, chain: float | None, idle: float | None,
    established: float | None, data: int | None, max_res: int | None, age: float,
    since_use: float, est: float, nbytes: int, resumptions: int,
) -> None:  # fmt: skip
    """tests/store/test_repository.py's property, with the Rust store committing."""
    policy = Policy(clocked=clocked, max_chain_age=chain, idle=idle, established=established,
                    data=data, max_resumptions=max_res)  # fmt: skip
    counters = Counters(NOW - age, NOW - since_use, est, nbytes, resumptions)
    c0 = make_credential()
    uid = store.upsert_full_ike("responder", c0, NOW - age)
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE credentials SET full_ike_at = ?, last_used_at = ?, established_s = ?, "
            "bytes_total = ?, resumptions = ? WHERE uid = ?",
            (counters.full_ike_at, counters.last_used_at, est, nbytes, resumptions, uid),
        )
    ns = native_sqlite_store(store, policy)
    won = ns.commit_many([(c0.handle, 0, native_credential(successor(c0)), None, NOW, None)])
    assert won == [policy.allows(counters, NOW)]


# -- bad rows fail closed, as in the Python store -------------------------------------------
def _corrupt(store: Store, handle: bytes, assignment: str, *args: Any) -> None:
    with store.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE credentials SET {assignment} WHERE handle = ?",
                             (*args, handle))  # fmt: skip


BAD_ROWS = [
    ("generation = 'x'", ()),
    ("generation = 1.5", ()),
    ("generation = -1", ()),
    ("key_id = X'00'", ()),
    ("key_id = 'nosuchkey'", ()),
    ("secret_wrapped = 'text'", ()),
    ("secret_wrapped = X'0011'", ()),
    ("secret_wrapped = ?", (b"\x00" * 60,)),
    ("id_i = 'text'", ()),
    ("id_r = X'0202'", ()),
    ("params = '{'", ()),
    ("params = ?", ('{"mode": "tunnel"}',)),
    ("mode = 'other'", ()),
    ("mode = 'paper'", ()),
    ("full_ike_at = 'soon'", ()),
    ("established_s = ?", (math.inf,)),
    ("bytes_total = X'01'", ()),
    ("paper_wrapped = X'00112233'", ()),
]


@pytest.mark.parametrize(("assignment", "args"), BAD_ROWS)
def test_a_bad_row_is_an_error_in_both_stores(
    store: Store, assignment: str, args: tuple[Any, ...]
) -> None:
    c = make_credential()
    store.upsert_full_ike("responder", c, NOW)
    _corrupt(store, c.handle, assignment, *args)
    ns = native_sqlite_store(store)
    got = ns.lookup(c.handle, NOW)
    assert got[0] == "error" and got[1] in ("corrupt", "key"), got
    with pytest.raises(repository.StoreError):
        store.lookup(c.handle, NOW)


def test_a_wrong_master_key_never_unwraps(store: Store, tmp_path: Path) -> None:
    c = make_credential()
    store.upsert_full_ike("responder", c, NOW)
    other = Keyring([MasterKey.generate(store.keyring.current_id if store.keyring else None)])
    path = store.sqlite_file()
    assert path is not None
    ns = _native.NativeSqliteStore(path[0], other.material(), _limits(store.policy))
    got = ns.lookup(c.handle, NOW)
    assert got[0] == "error" and got[1] == "corrupt"  # same id, other key: does not open


def test_a_store_that_goes_away_is_unavailable(store: Store, tmp_path: Path) -> None:
    c = make_credential()
    store.upsert_full_ike("responder", c, NOW)
    ns = native_sqlite_store(store)
    assert ns.lookup(c.handle, NOW)[0] == "found"
    con = sqlite3.connect(tmp_path / "cache.db")
    con.execute("DROP TABLE credentials")
    con.commit()
    con.close()
    assert ns.lookup(c.handle, NOW)[:2] == ("error", "unavailable")
    with pytest.raises(OSError, match="unavailable"):
        ns.commit_many([(c.handle, 0, native_credential(successor(c)), None, NOW, None)])
