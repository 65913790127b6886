"""Repository behaviour, run against SQLite and a real PostgreSQL (``db_url`` fixture)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resume.credential import Credential
from store.committer import GroupCommitter
from store.errors import StoreError
from store.policy import Counters, Policy, Refusal
from store.repository import RatchetRequest, Store
from tests.store.helpers import PARAMS, make_credential, successor

NOW = 1_800_000_000.0
H = 3600.0


def test_full_ike_then_lookup_roundtrip(store: Store) -> None:
    c = make_credential()
    uid = store.upsert_full_ike("responder", c, NOW)
    r = store.lookup(c.handle, NOW + 10)
    assert r is not None and r.allowed and r.uid == uid and r.role == "responder"
    assert r.credential == c and r.credential.secret == c.secret
    assert r.counters == Counters.fresh(NOW)
    assert r.lifetimes == store.policy.sa_lifetimes(r.counters, NOW + 10)
    # the role is part of the key: a responder record is not an initiator's
    assert store.lookup(c.handle, NOW, role="initiator") is None
    assert store.lookup(b"\x00" * 16, NOW) is None


def test_paper_mode_keys_roundtrip(store: Store) -> None:
    c = make_credential(paper=True)
    store.upsert_full_ike("responder", c, NOW)
    r = store.lookup(c.handle, NOW)
    assert r is not None and r.credential == c
    assert r.credential.paper_keys == c.paper_keys


def test_secret_is_not_stored_in_clear(store: Store) -> None:
    c = make_credential(paper=True)
    store.upsert_full_ike("responder", c, NOW)
    with store.engine.connect() as conn:
        dump = b"".join(
            bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode()
            for row in conn.exec_driver_sql("SELECT * FROM credentials")
            for v in row
            if v is not None
        )
    assert c.secret not in dump
    assert c.paper_keys is not None and c.paper_keys.i_to_r.encr_key not in dump
    assert c.handle in dump  # the handle is public (sent in clear in message 1)


def test_policy_refusal_does_not_unwrap(store: Store) -> None:
    store.policy = Policy(clocked=2 * H)
    c = make_credential()
    store.upsert_full_ike("responder", c, NOW)
    ok = store.lookup(c.handle, NOW + 2 * H - 1)
    assert ok is not None and ok.allowed
    assert ok.lifetimes is not None and ok.lifetimes.hard_seconds == 1
    r = store.lookup(c.handle, NOW + 2 * H)
    assert r is not None and not r.allowed
    assert r.refusal is Refusal.CLOCKED and r.credential is None and r.lifetimes is None


def test_ratchet_compare_and_set(store: Store) -> None:
    c0 = make_credential()
    store.upsert_full_ike("responder", c0, NOW)
    c1, c1b = successor(c0), successor(c0)
    assert store.commit_ratchet(c0.handle, 0, c1, NOW + 5) is True
    assert store.commit_ratchet(c0.handle, 0, c1b, NOW + 6) is False  # generation consumed
    assert store.lookup(c0.handle, NOW + 7) is None  # old handle is gone
    r = store.lookup(c1.handle, NOW + 7)
    assert r is not None and r.credential == c1
    assert r.counters.resumptions == 1 and r.counters.last_used_at == NOW + 5
    assert r.counters.full_ike_at == NOW  # a resumption does not restart the chain
    assert store.lookup(c1b.handle, NOW + 7) is None
    c2 = successor(c1)
    assert store.commit_ratchet(c1.handle, 1, c2, NOW + 8)
    assert store.commit_ratchet(c1.handle, 1, successor(c1), NOW + 8) is False


def test_ratchet_refuses_successor_that_changes_the_record(store: Store) -> None:
    c0 = make_credential()
    store.upsert_full_ike("responder", c0, NOW)
    other_peer = make_credential(1, peer="mallory.example")
    assert store.commit_ratchet(c0.handle, 0, other_peer, NOW) is False
    other_params = make_credential(
        1, params=type(PARAMS)(**{**PARAMS.__dict__, "responder_addr": "198.51.100.2"})
    )
    assert store.commit_ratchet(c0.handle, 0, other_params, NOW) is False
    with pytest.raises(ValueError, match="does not follow"):
        store.commit_ratchet(c0.handle, 0, make_credential(2), NOW)
    r = store.lookup(c0.handle, NOW)
    assert r is not None and r.credential == c0


@pytest.mark.parametrize(
    ("policy", "allowed_at", "refused_at", "accounting"),
    [
        (Policy(clocked=2 * H), NOW + 2 * H - 1, NOW + 2 * H, None),
        (Policy(max_chain_age=H), NOW + H - 1, NOW + H, None),
        (Policy(idle=H, max_chain_age=None), NOW + H - 1, NOW + H, None),
        # a disconnect report crossing the data / established limit between the lookup
        # for message 1 and the commit of message 3 (e.g. from the harvest process)
        (Policy(data=1000), NOW + 10, NOW + 10, (5, 1000)),
        (Policy(established=600.0), NOW + 10, NOW + 10, (600, 0)),
    ],
)
def test_ratchet_rechecks_the_policy_at_commit(
    store: Store,
    policy: Policy,
    allowed_at: float,
    refused_at: float,
    accounting: tuple[int, int] | None,
) -> None:
    """The durable compare-and-set, not the earlier lookup, decides: a record the policy
    no longer allows at commit time is not ratcheted (and stays as it was)."""
    store.policy = policy
    c0, d0 = make_credential(), make_credential(peer="bob.example")
    store.upsert_full_ike("responder", c0, NOW)
    store.upsert_full_ike("responder", d0, NOW)
    looked = store.lookup(c0.handle, NOW + 1)
    assert looked is not None and looked.allowed  # message 1 was answered
    if accounting is not None:
        secs, nbytes = accounting
        assert store.record_session(
            "responder", c0.handle, duration_s=secs, nbytes=nbytes, ended_at=NOW + 2
        )
    # one batch: the refused request does not spoil the allowed one
    res = store.commit_ratchet_many(
        [
            RatchetRequest(c0.handle, 0, successor(c0), refused_at),
            RatchetRequest(d0.handle, 0, successor(d0), allowed_at),
        ]
    )
    assert res == [False, True]
    with store.engine.connect() as conn:
        gen = conn.exec_driver_sql(
            "SELECT generation FROM credentials WHERE handle = ?"
            if store.dialect == "sqlite"
            else "SELECT generation FROM credentials WHERE handle = %s",
            (c0.handle,),
        ).scalar_one()
    assert gen == 0  # c0's record did not move


_LIMIT = st.one_of(st.none(), st.floats(0, 10 * H, allow_nan=False))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
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
def test_commit_guard_agrees_with_policy_check(
    store: Store,
    clocked: float | None,
    chain: float | None,
    idle: float | None,
    established: float | None,
    data: int | None,
    max_res: int | None,
    age: float,
    since_use: float,
    est: float,
    nbytes: int,
    resumptions: int,
) -> None:
    """The SQL guard is :meth:`Policy.check` exactly, boundaries and float arithmetic
    included, on both databases."""
    policy = Policy(clocked=clocked, max_chain_age=chain, idle=idle, established=established,
                    data=data, max_resumptions=max_res)  # fmt: skip
    store.policy = policy
    counters = Counters(NOW - age, NOW - since_use, est, nbytes, resumptions)
    c0 = make_credential()
    uid = store.upsert_full_ike("responder", c0, NOW - age)
    with store.engine.begin() as conn:
        q = (
            "UPDATE credentials SET full_ike_at = ?, last_used_at = ?, established_s = ?, "
            "bytes_total = ?, resumptions = ? WHERE uid = ?"
        )
        conn.exec_driver_sql(
            q if store.dialect == "sqlite" else q.replace("?", "%s"),
            (counters.full_ike_at, counters.last_used_at, est, nbytes, resumptions, uid),
        )
    won = store.commit_ratchet(c0.handle, 0, successor(c0), NOW)
    assert won == policy.allows(counters, NOW)


def test_batch_with_duplicate_accepts_exactly_one(store: Store) -> None:
    c0, d0 = make_credential(), make_credential(peer="bob.example")
    store.upsert_full_ike("responder", c0, NOW)
    store.upsert_full_ike("responder", d0, NOW)
    reqs = [RatchetRequest(c0.handle, 0, successor(c0), NOW) for _ in range(5)]
    reqs.insert(2, RatchetRequest(d0.handle, 0, successor(d0), NOW))
    res = store.commit_ratchet_many(reqs)
    assert res == [True, False, True, False, False, False]


def test_batch_answers_match_sequential_cases(store: Store) -> None:
    """The batch fast path (all won) and its fallback give each request its own answer."""
    a0, b0, c0 = (make_credential(peer=f"{p}.example") for p in ("a", "b", "c"))
    for c in (a0, b0, c0):
        store.upsert_full_ike("responder", c, NOW)
    a1 = successor(a0)
    a2 = successor(a1)
    if store.dialect == "sqlite":
        # a chain inside one batch: the second CAS sees the first one's row (PostgreSQL
        # applies a batch in handle order to avoid deadlocks, so there it may not)
        assert store.commit_ratchet_many(
            [RatchetRequest(a0.handle, 0, a1, NOW), RatchetRequest(a1.handle, 1, a2, NOW)]
        ) == [True, True]
    else:
        assert store.commit_ratchet(a0.handle, 0, a1, NOW)
        assert store.commit_ratchet(a1.handle, 1, a2, NOW)
    r = store.lookup(a2.handle, NOW)
    assert r is not None and r.credential == a2 and r.counters.resumptions == 2
    # a stale generation between two winners
    b1, c1 = successor(b0), successor(c0)
    res = store.commit_ratchet_many(
        [
            RatchetRequest(b0.handle, 0, b1, NOW),
            RatchetRequest(a0.handle, 0, successor(a0), NOW),  # consumed long ago
            RatchetRequest(c0.handle, 0, c1, NOW),
        ]
    )
    assert res == [True, False, True]
    # a successor whose handle collides with another live record is refused alone
    b2, c2 = successor(b1), successor(c1)
    clash = Credential(
        mode=c2.mode, handle=a2.handle, generation=2, secret=c2.secret,
        id_i=c2.id_i, id_r=c2.id_r, params=c2.params,
    )  # fmt: skip
    res = store.commit_ratchet_many(
        [RatchetRequest(b1.handle, 1, b2, NOW), RatchetRequest(c1.handle, 1, clash, NOW)]
    )
    assert res == [True, False]
    for cred in (a2, b2, c1):
        r = store.lookup(cred.handle, NOW)
        assert r is not None and r.credential == cred
    assert store.commit_ratchet(c1.handle, 1, c2, NOW) is True


def test_initiator_keeps_previous_generation_until_confirmed(store: Store) -> None:
    c0 = make_credential()
    store.upsert_full_ike("initiator", c0, NOW)
    r = store.lookup_peer(c0.id_r, NOW)
    assert r is not None and r.credential == c0 and r.previous is None
    c1 = successor(c0)
    assert store.advance_initiator(c0.handle, 0, c1, NOW + 1)
    r = store.lookup_peer(c0.id_r, NOW + 2, id_i=c0.id_i)
    assert r is not None and r.credential == c1 and r.previous == c0
    # message 3 was lost: the responder is still at g=0; the initiator resumes from g=0
    c1b = successor(c0)
    assert store.advance_initiator(c0.handle, 0, c1b, NOW + 3)
    r = store.lookup_peer(c0.id_r, NOW + 4)
    assert r is not None and r.credential == c1b and r.previous == c0
    assert not store.advance_initiator(c1.handle, 1, successor(c1), NOW + 5)  # dropped
    assert store.confirm_initiator(c1b.handle, 1)
    r = store.lookup_peer(c0.id_r, NOW + 6)
    assert r is not None and r.credential == c1b and r.previous is None
    assert not store.advance_initiator(c0.handle, 0, successor(c0), NOW + 7)
    assert store.lookup_peer(c0.id_r, NOW, id_i=b"nobody") is None


def test_record_session_accounting_feeds_the_policy(store: Store) -> None:
    store.policy = Policy(data=1_000_000, established=2 * H)
    c0 = make_credential()
    store.upsert_full_ike("responder", c0, NOW)
    assert store.record_session(
        "responder", c0.handle, duration_s=600, nbytes=400_000, ended_at=NOW + 600
    )
    c1 = successor(c0)
    assert store.commit_ratchet(c0.handle, 0, c1, NOW + 700)
    assert store.record_session(
        "responder", c1.handle, duration_s=300, nbytes=599_999, ended_at=NOW + 1000
    )
    r = store.lookup(c1.handle, NOW + 1001)
    assert r is not None and r.allowed
    assert r.counters.bytes_total == 999_999 and r.counters.established_s == 900
    assert r.counters.last_used_at == NOW + 1000
    assert r.lifetimes is not None and r.lifetimes.hard_bytes == 1
    # an old (late) report never moves last_used_at back
    assert store.record_session("responder", c1.handle, duration_s=0, nbytes=1, ended_at=NOW)
    r = store.lookup(c1.handle, NOW + 1002)
    assert r is not None and r.refusal is Refusal.DATA and r.counters.last_used_at == NOW + 1000
    assert not store.record_session("responder", c0.handle, duration_s=1, nbytes=1, ended_at=NOW)
    with pytest.raises(ValueError):
        store.record_session("responder", c1.handle, duration_s=-1, nbytes=0, ended_at=NOW)


def test_new_full_ike_replaces_the_peer_pairs_chain(store: Store) -> None:
    old = make_credential()
    store.upsert_full_ike("responder", old, NOW)
    new = make_credential()
    store.upsert_full_ike("responder", new, NOW + 60)
    assert store.lookup(old.handle, NOW + 61) is None
    r = store.lookup(new.handle, NOW + 61)
    assert r is not None and r.counters.full_ike_at == NOW + 60
    store.upsert_full_ike("initiator", make_credential(), NOW)  # other role: independent
    assert store.lookup(new.handle, NOW + 61) is not None


def test_bulk_full_ike_equals_one_by_one(open_store: Callable[..., Store]) -> None:
    one, bulk = open_store(), open_store()
    bulk_creds = [make_credential(peer=f"p{i}.example") for i in range(6)]
    same_peers = make_credential(peer="p1.example")  # replaces p1's chain
    same_handle = Credential(
        mode=bulk_creds[4].mode, handle=bulk_creds[2].handle, generation=0,
        secret=bulk_creds[4].secret, id_i=bulk_creds[4].id_i, id_r=bulk_creds[4].id_r,
        params=bulk_creds[4].params,
    )  # fmt: skip  # same handle as p2's: replaces it
    seq = [*bulk_creds, same_peers, same_handle]
    for s in (one, bulk):  # an older chain of p0 already cached
        s.upsert_full_ike("responder", make_credential(peer="p0.example"), NOW - H)
    for c in seq:
        one.upsert_full_ike("responder", c, NOW)
    uids = bulk.upsert_full_ike_many("responder", seq, NOW)
    assert len(uids) == len(seq) and len(set(uids)) == len(seq)

    def content(s: Store) -> set[tuple[bytes, bytes, int]]:
        with s.engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT handle, id_i, generation FROM credentials")
            return {(bytes(h), bytes(i), g) for h, i, g in rows}

    assert content(one) == content(bulk)
    assert len(content(bulk)) == 5  # p0 (new), p1 (new), p3, p4 (same_handle), p5
    for c in (bulk_creds[0], same_peers, bulk_creds[3], same_handle, bulk_creds[5]):
        r = bulk.lookup(c.handle, NOW)
        assert r is not None and r.credential == c and r.counters == Counters.fresh(NOW)
    for c in (bulk_creds[1], bulk_creds[4]):
        assert bulk.lookup(c.handle, NOW) is None
    # capacity applies once, at the end: least recently used first
    bulk.policy = Policy(capacity=4)
    more = [make_credential(peer=f"q{i}.example") for i in range(3)]
    bulk.upsert_full_ike_many("responder", more, NOW + 10)
    assert len(content(bulk)) == 4
    for c in more:
        assert bulk.lookup(c.handle, NOW + 10) is not None


def test_capacity_evicts_least_recently_used(open_store: Callable[..., Store]) -> None:
    store = open_store(Policy(capacity=3))
    creds = [make_credential(peer=f"p{i}.example") for i in range(3)]
    for i, c in enumerate(creds):
        store.upsert_full_ike("responder", c, NOW + i)
    # use p0 so that p1 becomes the least recently used
    c0b = successor(creds[0])
    assert store.commit_ratchet(creds[0].handle, 0, c0b, NOW + 10)
    extra = make_credential(peer="p3.example")
    store.upsert_full_ike("responder", extra, NOW + 11)
    assert store.lookup(creds[1].handle, NOW + 12) is None
    for h in (c0b.handle, creds[2].handle, extra.handle):
        assert store.lookup(h, NOW + 12) is not None


def test_revoke(store: Store) -> None:
    c = make_credential()
    uid = store.upsert_full_ike("responder", c, NOW)
    assert store.revoke(uid=uid) == 1
    assert store.lookup(c.handle, NOW) is None
    assert store.revoke(handle=c.handle) == 0
    assert not store.commit_ratchet(c.handle, 0, successor(c), NOW)


def test_group_commit_from_trio_tasks(store: Store) -> None:
    chains = [make_credential(peer=f"u{i}.example") for i in range(40)]
    for c in chains:
        store.upsert_full_ike("responder", c, NOW)
    final: dict[int, Credential] = {}

    async def peer(i: int, committer: GroupCommitter) -> None:
        cur = chains[i]
        for _ in range(5):
            nxt = successor(cur)
            assert await committer.commit_ratchet(cur.handle, cur.generation, nxt, NOW)
            # a losing duplicate in flight at the same time
            assert not await committer.commit_ratchet(cur.handle, cur.generation, nxt, NOW)
            cur = nxt
        final[i] = cur

    async def main(committer: GroupCommitter) -> None:
        async with trio.open_nursery() as n:
            for i in range(len(chains)):
                n.start_soon(peer, i, committer)

    with GroupCommitter(store) as committer:
        trio.run(main, committer)
        st = committer.stats
    assert st.accepts == 400 and st.won == 200
    assert st.transactions < 400  # concurrent accepts really shared transactions
    for i, c in final.items():
        r = store.lookup(c.handle, NOW)
        assert r is not None and r.credential == c and r.counters.resumptions == 5, i


def test_group_commit_hands_over_one_scheduler_pass_at_once(store: Store) -> None:
    """Accepts made in one trio scheduler pass form one transaction, whatever the worker
    thread manages to grab meanwhile; ``max_batch`` still bounds a transaction."""
    chains = [make_credential(peer=f"v{i}.example") for i in range(60)]
    store.upsert_full_ike_many("responder", chains, NOW)

    async def accept_all(committer: GroupCommitter, creds: list[Credential]) -> list[bool]:
        out: list[bool] = []

        async def one(c: Credential) -> None:
            nxt = successor(c)
            time.sleep(0.001)  # work that releases the GIL (a lookup, a syscall)
            out.append(await committer.commit_ratchet(c.handle, c.generation, nxt, NOW))

        async with trio.open_nursery() as n:
            for c in creds:
                n.start_soon(one, c)  # all run in the same scheduler pass
        return out

    with GroupCommitter(store) as committer:
        assert trio.run(accept_all, committer, chains[:50]) == [True] * 50
        assert committer.stats.transactions == 1 and committer.stats.largest_batch == 50
    with GroupCommitter(store, max_batch=4) as committer:
        assert trio.run(accept_all, committer, chains[50:]) == [True] * 10
        assert committer.stats.transactions == 3 and committer.stats.largest_batch == 4


def test_close_commits_what_the_trio_thread_submitted_in_the_same_pass(store: Store) -> None:
    c0, d0 = make_credential(), make_credential(peer="bob.example")
    store.upsert_full_ike_many("responder", [c0, d0], NOW)
    c1, d1 = successor(c0), successor(d0)

    async def main() -> list[bool]:
        committer = GroupCommitter(store)
        futs = [committer.submit(c0.handle, 0, c1, NOW), committer.submit(d0.handle, 0, d1, NOW)]
        committer.close()  # before the hand-over callback had a chance to run
        with pytest.raises(StoreError, match="closed"):
            committer.submit(c1.handle, 1, successor(c1), NOW)
        await trio.sleep(0)
        return [f.result(timeout=10) for f in futs]

    assert trio.run(main) == [True, True]
    for c in (c1, d1):
        r = store.lookup(c.handle, NOW)
        assert r is not None and r.credential == c


def test_group_commit_threads_and_errors(store: Store) -> None:
    c0 = make_credential()
    store.upsert_full_ike("responder", c0, NOW)
    with GroupCommitter(store, max_batch=1) as committer:
        futs = [committer.submit(c0.handle, 0, successor(c0), NOW) for _ in range(4)]
        assert sorted(f.result() for f in futs) == [False, False, False, True]
    with pytest.raises(StoreError, match="closed"):
        committer.submit(c0.handle, 0, successor(c0), NOW)


def test_group_commit_failure_reaches_every_waiter(store: Store) -> None:
    c0 = make_credential()
    store.upsert_full_ike("responder", c0, NOW)
    with store.engine.begin() as conn:  # a real database failure: the table is missing
        conn.exec_driver_sql("ALTER TABLE credentials RENAME TO credentials_away")
    with GroupCommitter(store) as committer:
        futs = [committer.submit(c0.handle, 0, successor(c0), NOW) for _ in range(3)]
        for f in futs:
            with pytest.raises(StoreError, match="unreachable or failing"):
                f.result()
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE credentials_away RENAME TO credentials")
        assert committer.commit_ratchet_blocking(c0.handle, 0, successor(c0), NOW)
        assert committer.stats.failed_transactions >= 1
