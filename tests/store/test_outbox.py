"""The install outbox: committed with the ratchet, wrapped at rest, replayed or expired.

Every test runs on SQLite and PostgreSQL (the ``store`` fixture).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from resume.sa import DirectionKeys, Lifetimes, SAPair
from store.errors import StoreError
from store.outbox import InstallIntent, remaining_lifetimes
from store.repository import RatchetRequest, Store
from tests.store.helpers import PARAMS, make_credential, successor

NOW = 1_800_000_000.0


def sa_pair(hard: int | None = 3600, soft: int | None = 3240) -> SAPair:
    return SAPair(
        role="responder",
        params=PARAMS,
        i_to_r=DirectionKeys(int.from_bytes(os.urandom(4), "big") | 0x100, os.urandom(36), b""),
        r_to_i=DirectionKeys(int.from_bytes(os.urandom(4), "big") | 0x100, os.urandom(36), b""),
        lifetimes=Lifetimes(soft_seconds=soft, hard_seconds=hard, hard_bytes=10**9),
    )


def _rows(store: Store) -> dict[str, tuple[object, ...]]:
    with store.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT uid, node, handle, generation, committed_at, expires_at, sa, key_id, "
            "keys_wrapped FROM install_outbox"
        ).fetchall()
    return {r[0]: tuple(r) for r in rows}


def _seed(store: Store, n: int) -> list:  # type: ignore[type-arg]
    creds = [make_credential(peer=f"p{i}.example") for i in range(n)]
    for c in creds:
        store.upsert_full_ike("responder", c, NOW)
    return creds


def test_the_winner_commits_its_sa_pair_and_the_loser_nothing(store: Store) -> None:
    (c,) = _seed(store, 1)
    win = InstallIntent.new("node-a", sa_pair())
    lose = InstallIntent.new("node-a", sa_pair())
    assert store.commit_ratchet(c.handle, 0, successor(c), NOW, win)
    assert not store.commit_ratchet(c.handle, 0, successor(c), NOW, lose)  # generation gone
    assert set(_rows(store)) == {win.uid}
    replay = store.pending_installs("node-a", NOW + 10)
    assert replay.expired == 0 and not replay.unreadable
    [p] = replay.pending
    assert (p.uid, p.handle, p.generation) == (win.uid, c.handle, 0)
    assert p.sa.i_to_r == win.sa.i_to_r and p.sa.r_to_i == win.sa.r_to_i
    assert p.sa.params == win.sa.params and p.sa.role == "responder"
    # installed 10 s late: the pair must not outlive its budget
    assert p.sa.lifetimes == Lifetimes(soft_seconds=3230, hard_seconds=3590, hard_bytes=10**9)
    assert store.pending_installs("node-b", NOW).pending == []  # another node's kernel


def test_keys_are_wrapped_at_rest(store: Store) -> None:
    (c,) = _seed(store, 1)
    intent = InstallIntent.new("n", sa_pair())
    assert store.commit_ratchet(c.handle, 0, successor(c), NOW, intent)
    row = _rows(store)[intent.uid]
    dump = b"".join(x if isinstance(x, bytes) else str(x).encode() for x in row)
    for key in (intent.sa.i_to_r.encr_key, intent.sa.r_to_i.encr_key):
        assert key not in dump
    assert str(intent.sa.i_to_r.spi) in str(row[6])  # the public part is readable


def test_batch_rows_match_the_cas_results_and_deletions_ride_along(store: Store) -> None:
    creds = _seed(store, 4)
    old = InstallIntent.new("n", sa_pair())
    assert store.commit_ratchet(creds[0].handle, 0, successor(creds[0]), NOW, old)
    intents = [InstallIntent.new("n", sa_pair()) for _ in range(4)]
    reqs = [
        RatchetRequest(c.handle, 0, successor(c), NOW, i)
        for c, i in zip(creds, intents, strict=True)
    ]
    reqs.append(RatchetRequest(creds[1].handle, 0, successor(creds[1]), NOW))  # no intent
    results = store.commit_ratchet_many(reqs, forget=[old.uid])
    assert results == [False, True, True, True, False]  # creds[0] moved already
    assert set(_rows(store)) == {i.uid for i in intents[1:]}
    assert store.forget_installs([intents[1].uid, "0" * 32]) == 1
    assert store.commit_ratchet_many([], forget=[intents[2].uid]) == []
    assert set(_rows(store)) == {intents[3].uid}


def test_a_failed_outbox_insert_takes_its_cas_with_it(store: Store) -> None:
    """Ratchet and outbox row commit together or not at all: two requests carrying the
    same outbox uid cannot both insert; whichever request's row is missing did not move
    its credential either."""
    creds = _seed(store, 2)
    dup = InstallIntent.new("n", sa_pair())
    reqs = [RatchetRequest(c.handle, 0, successor(c), NOW, dup) for c in creds]
    try:
        results = store.commit_ratchet_many(reqs)
    except StoreError:
        results = [False, False]  # SQLite: the whole batch rolled back
    assert sum(results) == len(_rows(store)) <= 1
    for c, ok in zip(creds, results, strict=True):
        r = store.lookup(c.handle, NOW)
        assert (r is None) == ok  # moved exactly when its row was inserted


def test_expired_rows_are_deleted_never_installed(store: Store) -> None:
    creds = _seed(store, 3)
    short = InstallIntent.new("n", sa_pair(hard=60, soft=50))
    forever = InstallIntent.new("n", sa_pair(hard=None, soft=None))
    other = InstallIntent.new("elsewhere", sa_pair(hard=60, soft=50))
    for c, i in zip(creds, (short, forever, other), strict=True):
        assert store.commit_ratchet(c.handle, 0, successor(c), NOW, i)
    replay = store.pending_installs("n", NOW + 60)  # exactly at the hard expiry: gone
    assert replay.expired == 1
    assert [p.uid for p in replay.pending] == [forever.uid]
    assert replay.pending[0].sa.lifetimes == forever.sa.lifetimes
    assert set(_rows(store)) == {forever.uid, other.uid}  # only this node's rows judged


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE install_outbox SET expires_at = expires_at + 86400",
        "UPDATE install_outbox SET sa = replace(sa, '\"hard_seconds\":3600', "
        "'\"hard_seconds\":9600')",
        "UPDATE install_outbox SET generation = generation + 1",
        "UPDATE install_outbox SET handle = (SELECT handle FROM credentials LIMIT 1)",
    ],
)
def test_edited_rows_are_reported_and_left_alone(
    open_store: Callable[..., Store], edit: str
) -> None:
    store = open_store()
    (c,) = _seed(store, 1)
    intent = InstallIntent.new("n", sa_pair())
    assert store.commit_ratchet(c.handle, 0, successor(c), NOW, intent)
    with store.engine.begin() as conn:
        conn.exec_driver_sql(edit)
    replay = store.pending_installs("n", NOW)
    assert replay.pending == [] and replay.unreadable is not None
    assert list(replay.unreadable) == [intent.uid]
    assert "does not authenticate" in replay.unreadable[intent.uid]
    assert set(_rows(store)) == {intent.uid}  # nothing deleted because it could not be read


def test_remaining_lifetimes() -> None:
    lt = Lifetimes(soft_seconds=90, hard_seconds=100, soft_bytes=5, hard_bytes=9)
    assert remaining_lifetimes(lt, 0.0, 100.0) == lt
    assert remaining_lifetimes(lt, 30.2, 69.8) == Lifetimes(59, 69, 5, 9)
    assert remaining_lifetimes(lt, 99.5, 0.5) == Lifetimes(1, 1, 5, 9)  # at least a second
    unlimited = Lifetimes(hard_bytes=9)
    assert remaining_lifetimes(unlimited, 1e6, None) == unlimited


def test_sa_text_is_the_canonical_json_of_the_document() -> None:
    import json

    from store.outbox import sa_document, sa_text

    for pair in (sa_pair(), sa_pair(hard=None, soft=None)):
        for reqid in (None, 0x40000001):
            p = SAPair(pair.role, pair.params, pair.i_to_r, pair.r_to_i, pair.lifetimes, reqid)
            doc = sa_document(p)
            assert sa_text(p) == json.dumps(doc, sort_keys=True, separators=(",", ":"))
            assert json.loads(sa_text(p)) == doc
