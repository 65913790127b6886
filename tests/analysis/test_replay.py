"""Replay semantics: hand-computed traces per policy, every limit at its boundary +-1 unit
(microsecond, byte, resumption, record) in the reference loop and the vectorized sweep,
and the sweep proven equal to the reference loop (which calls Policy.check itself) on
random traces and policies, capacity and saturated counters included."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.replay import replay_reference
from analysis.sweep import greater_before, run, stack_distances, sweep
from analysis.timeparse import TimeContext, parse_time
from analysis.trace import Trace, split_rekeys
from store.policy import Policy, Refusal

US = 1_000_000
H = 3600 * US  # the trace's unit is the microsecond; policies speak seconds


def trace(rows: list[tuple[int, int, int, int]]) -> Trace:
    """rows: (user, start us, duration us, bytes)"""
    u = [r[0] for r in rows]
    s = [r[1] for r in rows]
    e = [r[1] + r[2] for r in rows]
    b = [r[3] for r in rows]
    return Trace.from_columns(u, s, e, b, [0] * len(rows))


def fulls(t: Trace, p: Policy) -> list[bool]:
    """The reference's per-session outcome, checked equal to every sweep variant."""
    ref: list[bool] = replay_reference(t, p).full.tolist()
    for kw in ({}, {"reasons": False}, {"figures": False, "reasons": False}):
        fast = sweep(t, [p], keep_full=True, **kw).full  # type: ignore[arg-type]
        assert fast is not None
        assert fast[:, 0].tolist() == ref, kw
    return ref


def test_clocked_limit_is_exclusive() -> None:
    t = trace([(0, 0, 600 * US, 0), (0, 1800 * US, 60 * US, 0), (0, H - 1, 0, 0), (0, H, 0, 0),
               (0, H + 1, 0, 0)])
    # ages 1800 s and 1 h - 1 us resume; exactly 1 h is refused; then age 1 us resumes
    assert fulls(t, Policy(clocked=3600)) == [True, False, False, True, False]


def test_one_hour_apart_is_exactly_one_hour() -> None:
    """Issue 17 item 2: float epoch seconds made two stamps an hour apart 3599.99999976 s."""
    ctx = TimeContext(year=2024)
    a = parse_time("2024-03-10T12:34:56.3Z", ctx)
    b = parse_time("2024-03-10T13:34:56.3Z", ctx)
    assert b - a == H
    t = trace([(0, a, 0, 0), (0, b, 0, 0)])
    assert fulls(t, Policy(clocked=3600)) == [True, True]  # at the lifetime: refused
    assert fulls(t, Policy(clocked=3600.000001)) == [True, False]  # 1 us more: resumed


@pytest.mark.parametrize(
    ("name", "limit", "make"),
    [
        # each: a two-session trace whose second session's measured value is exactly `at`
        ("max_chain_age", 7200, lambda at: [(0, 0, 0, 0), (0, at, 0, 0)]),
        ("clocked", 7200, lambda at: [(0, 0, 0, 0), (0, at, 0, 0)]),
        ("established", 7200, lambda at: [(0, 0, at, 0), (0, 10**12, 0, 0)]),
        ("data", 10**6, lambda at: [(0, 0, 0, at), (0, 1, 0, 0)]),
        ("idle", 7200, lambda at: [(0, 0, 5 * US, 0), (0, 5 * US + at, 0, 0)]),
    ],
)
def test_every_limit_refuses_at_its_value_and_allows_one_unit_below(
    name: str, limit: float, make: object
) -> None:
    """Exclusive bounds: refused at the limit and above, allowed one unit (us/byte) below."""
    unit_limit = int(limit * US) if name != "data" else int(limit)
    base = Policy(max_chain_age=None)
    for delta, want in ((-1, False), (0, True), (1, True)):
        rows = make(unit_limit + delta)  # type: ignore[operator]
        if name == "established" and delta > 0:
            rows = make(unit_limit + delta)  # type: ignore[operator]
        got = fulls(trace(rows), replace(base, **{name: limit}))
        assert got == [True, want], (name, delta)


def test_resumption_count_and_capacity_boundaries() -> None:
    t = trace([(0, i * US, 0, 0) for i in range(4)])
    # max_resumptions = 2: two resumptions allowed, the third refused
    assert fulls(t, Policy(max_resumptions=2)) == [True, False, False, True]
    assert fulls(t, Policy(max_resumptions=3)) == [True, False, False, False]
    # capacity: users 0,1,2 then 0 again: stack distance of the last session is 2
    t = trace([(0, 0, 0, 0), (1, US, 0, 0), (2, 2 * US, 0, 0), (0, 3 * US, 0, 0)])
    assert fulls(t, Policy(capacity=2)) == [True, True, True, True]  # distance 2 >= 2
    assert fulls(t, Policy(capacity=3)) == [True, True, True, False]  # 2 < 3: cached


def test_established_counts_connected_time_only() -> None:
    t = trace([(0, 0, 40 * 60 * US, 0), (0, 10 * H, 40 * 60 * US, 0), (0, 20 * H, 40 * 60 * US, 0),
               (0, 30 * H, 10 * US, 0)])
    # established 40 min < 1h -> resume; 80 min >= 1h -> full; then 40 min -> resume
    assert fulls(t, Policy(established=3600)) == [True, False, True, False]
    # the same trace under a clocked hour never resumes
    assert fulls(t, Policy(clocked=3600)) == [True, True, True, True]


def test_data_lifetime() -> None:
    t = trace([(0, 0, US, 60), (0, 10 * US, US, 60), (0, 20 * US, US, 60), (0, 30 * US, US, 0)])
    assert fulls(t, Policy(data=100)) == [True, False, True, False]


def test_idle_and_resumption_cap_and_chain_age() -> None:
    t = trace([(0, 0, 60 * US, 0), (0, 600 * US, 60 * US, 0), (0, 1300 * US, 60 * US, 0),
               (0, 1900 * US, 60 * US, 0)])
    # gaps after each end: 540 (<600 resume), 640 (full), 540 (resume)
    assert fulls(t, Policy(idle=600)) == [True, False, True, False]
    assert fulls(t, Policy(max_resumptions=1)) == [True, False, True, False]
    week = 7 * 86400 * US
    t = trace([(0, 0, US, 0), (0, week - 1, US, 0), (0, 2 * week - 1, US, 0)])
    assert fulls(t, Policy()) == [True, False, True]  # default 7-day chain cap


def test_combination_all_must_hold_and_users_are_independent() -> None:
    t = trace([(0, 0, 10 * US, 60), (1, 5 * US, 10 * US, 0), (0, 100 * US, 10 * US, 60),
               (1, 2 * H, 10 * US, 0), (0, 200 * US, US, 0)])
    p = Policy(clocked=3600, data=100)
    # user 0: full, resume (60<100), full (120>=100); user 1: full, full (age 2h)
    assert fulls(t, p) == [True, True, False, True, True]
    res = replay_reference(t, p)
    assert res.refusals == {"no_record": 2, Refusal.DATA.value: 1, Refusal.CLOCKED.value: 1}


def test_capacity_evicts_least_recently_used() -> None:
    t = trace([(0, 0, US, 0), (1, 10 * US, US, 0), (0, 20 * US, US, 0), (2, 30 * US, US, 0),
               (1, 40 * US, US, 0), (0, 50 * US, US, 0)])
    # capacity 2: users 0,1 cached; 0 resumes (MRU); 2 evicts 1; 1 misses and evicts 0; 0 misses
    p = Policy(clocked=3600, capacity=2)
    assert fulls(t, p) == [True, True, False, True, True, True]
    assert replay_reference(t, p).evictions == 3
    assert int(sweep(t, [p]).evictions[0]) == 3
    assert fulls(t, Policy(clocked=3600, capacity=3)) == [True, True, False, True, False, False]


def test_exposure_figures() -> None:
    t = trace([(0, 0, 100 * US, 10), (0, 1000 * US, 500 * US, 20), (0, 5000 * US, 10 * US, 5)])
    r = sweep(t, [Policy(clocked=2000.0)])
    assert r.max_age_at_use[0] == 1000 * US  # second session used a 1000 s old credential
    assert r.max_secret_age[0] == 1500 * US  # its keys lived until 1500 s after the full IKE
    assert r.max_bytes_at_use[0] == 10 and r.max_chain_bytes[0] == 30
    lean = sweep(t, [Policy(clocked=2000.0)], figures=False)
    assert lean.n_full.tolist() == r.n_full.tolist() and lean.max_age_at_use[0] == 0


def test_rekey_split_conserves_bytes_and_time() -> None:
    t = trace([(0, 0, 10 * H, 1001), (1, 0, 30 * US, 7), (0, 11 * H, 0, 0)])
    s = split_rekeys(t, 4 * H)
    assert len(s) == 5 and s.rekey.tolist() == [False, True, True, False, False]
    assert s.nbytes.sum() == t.nbytes.sum() and s.duration.sum() == t.duration.sum()
    lean = split_rekeys(t, 4 * H, both_directions=False)
    assert lean.nbytes.tolist() == s.nbytes.tolist() and (lean.bytes_out == 0).all()
    # a clocked 1h cache: the rekeys of the 10 h session come 4 h apart, none resumes
    assert int(sweep(s, [Policy(clocked=3600)]).n_full[0]) == 5
    # clocked 5h, user 0: 0 full, 4h resumes, 8h full (age 8h), 11h resumes; user 1 full
    assert sweep(s, [Policy(clocked=5 * 3600)], keep_full=True).full[:, 0].tolist() == [  # type: ignore[index]
        True, False, True, True, False
    ]


def test_saturating_byte_counts_never_wrap() -> None:
    big = 2**63 - 1
    t = trace([(0, 0, 0, big), (0, US, 0, big), (0, 2 * US, 0, 5)])
    assert t.nbytes.tolist() == [big, big, 5]
    p = Policy(data=big)
    assert fulls(t, p) == [True, True, True]  # a chain holding 2**63-1 bytes is at the limit
    assert fulls(t, Policy(data=None)) == [True, False, False]
    r = sweep(t, [Policy(data=None)])
    assert r.max_chain_bytes[0] == big - 1  # saturated, not wrapped to a negative count
    assert replay_reference(t, Policy(data=None)).chain_bytes.tolist() == [big - 1] * 3


# ---------------------------------------------------------------- LRU stack distances

def brute_distances(t: Trace) -> list[int]:
    order = t.time_order().tolist()
    users = [int(t.user[i]) for i in order]
    out = [-1] * len(t)
    for k, i in enumerate(order):
        prev = max((j for j in range(k) if users[j] == users[k]), default=-1)
        if prev >= 0:
            out[i] = len(set(users[prev + 1 : k]))
    return out


@given(st.lists(st.integers(0, 5), max_size=40), st.randoms())
def test_stack_distances_equal_brute_force(users: list[int], rnd: object) -> None:
    starts = [i // 2 for i in range(len(users))]  # ties in time: order by user, then input
    t = Trace.from_columns(users, starts, starts, [0] * len(users), [0] * len(users))
    assert stack_distances(t).tolist() == brute_distances(t)


@given(st.permutations(list(range(60))).map(lambda p: p[: len(p) // 2 + 3]))
def test_greater_before_counts_inversions(v: list[int]) -> None:
    arr = np.array(v, dtype=np.int64)
    assert greater_before(arr).tolist() == [sum(x > v[k] for x in v[:k]) for k in range(len(v))]


# ---------------------------------------------------------------- properties

@st.composite
def traces(draw: st.DrawFn, overlap: bool = True, huge: bool = False) -> Trace:
    n_users = draw(st.integers(1, 4))
    rows: list[tuple[int, int, int, int]] = []
    sizes = st.integers(0, 10**6) if not huge else st.sampled_from([0, 1, 2**62, 2**63 - 1])
    for u in range(n_users):
        t = draw(st.integers(0, 5000)) * US + draw(st.sampled_from([0, 1, 999_999]))
        for _ in range(draw(st.integers(0, 12))):
            d = draw(st.sampled_from([0, 1, 30, 600, 3000, 20000])) * US
            d += draw(st.sampled_from([0, 0, 1, -1])) if d else 0
            rows.append((u, t, d, draw(sizes)))
            gap = draw(st.sampled_from([0, 1, 100, 1800, 3600, 40000, 700000])) * US
            gap += draw(st.sampled_from([0, 0, 1, -1])) if gap else 0
            # without overlap: strictly after the previous end (replay order unambiguous)
            step = gap + (0 if draw(st.booleans()) else d) if overlap else max(gap, 1) + d
            t = t + step
    draw(st.randoms()).shuffle(rows)
    return trace(rows)


def opt(draw: st.DrawFn, values: Sequence[float]) -> float | None:
    return draw(st.one_of(st.none(), st.sampled_from(values)))


@st.composite
def policies(draw: st.DrawFn, capacity: bool = True) -> Policy:
    times = [0, 1, 100, 1800, 3600, 7200, 86400, 3600.000001]
    data = opt(draw, [0, 1, 10**5, 10**6, 3 * 10**6, 2**62])
    res = opt(draw, [0, 1, 3])
    cap = opt(draw, [0, 1, 2, 3, 5]) if capacity else None
    return Policy(
        clocked=opt(draw, times), established=opt(draw, times),
        data=None if data is None else int(data), max_chain_age=opt(draw, [*times, 7 * 86400]),
        idle=opt(draw, times), max_resumptions=None if res is None else int(res),
        capacity=None if cap is None else int(cap),
    )


def assert_equal(t: Trace, pols: list[Policy]) -> None:
    fast = sweep(t, pols, keep_full=True, user_counts=True)
    lean = sweep(t, pols, reasons=False, figures=False)
    assert fast.full is not None and fast.user_full is not None
    assert lean.n_full.tolist() == fast.n_full.tolist()
    assert fast.refusals is not None
    for j, p in enumerate(pols):
        ref = replay_reference(t, p)
        assert fast.full[:, j].tolist() == ref.full.tolist()
        assert {k: int(v[j]) for k, v in fast.refusals.items() if v[j]} == dict(ref.refusals)
        assert int(fast.evictions[j]) == ref.evictions
        per_user = np.bincount(t.user, weights=ref.full, minlength=t.n_users)
        assert fast.user_full[:, j].tolist() == per_user.astype(int).tolist()
        if len(t):
            assert fast.max_secret_age[j] == (t.end - ref.chain_start).max()
            assert fast.max_chain_bytes[j] == ref.chain_bytes.max()
            assert fast.max_age_at_use[j] == (t.start - ref.chain_start).max()
            before = [0 if f else cb - nb for f, cb, nb in zip(
                ref.full.tolist(), ref.chain_bytes.tolist(), t.nbytes.tolist(), strict=True)]
            if not t.nbytes.max() >= 2**62:  # saturated chains: "before" is not cb - nb
                assert fast.max_bytes_at_use[j] == max(before)


@given(traces(), st.lists(policies(), min_size=1, max_size=4))
def test_vectorized_sweep_agrees_with_policy_check_loop(t: Trace, pols: list[Policy]) -> None:
    assert_equal(t, pols)


@given(traces(huge=True), st.lists(policies(), min_size=1, max_size=3))
def test_sweep_agrees_with_the_loop_on_counters_near_2_63(t: Trace, pols: list[Policy]) -> None:
    assert_equal(t, pols)


@given(traces(), st.lists(policies(capacity=False), min_size=1, max_size=3), st.integers(0, 5))
def test_capacity_never_saves_more_than_no_capacity(t: Trace, pols: list[Policy], cap: int) -> None:
    withcap = [replace(p, capacity=cap) for p in pols]
    res = run(t, withcap)
    nocap = sweep(t, pols)
    assert (res.n_full + res.n_resumed == len(t)).all()
    assert (res.n_full >= nocap.n_full).all()  # a smaller cache never saves more


@given(traces(), st.sampled_from(["clocked", "established", "data"]), policies())
def test_monotone_in_lifetime(t: Trace, kind: str, base: Policy) -> None:
    values = [0, 1, 60, 1800, 3600, 7200, 86400, 10**6, 10**7]
    pols = [base.with_lifetime(kind, v) for v in values]
    r = sweep(t, pols)
    assert (np.diff(r.n_full) <= 0).all(), r.n_full
    assert (r.n_full + r.n_resumed == len(t)).all()
    users = len(set(t.user.tolist()))
    assert (r.n_full >= users).all()  # every user's first connection is a full IKE


@given(traces(overlap=False), st.sampled_from([1.0, 600.0, 3600.0, 86400.0]))
def test_established_never_needs_more_full_ike_than_clocked(t: Trace, life: float) -> None:
    # Without overlapping sessions a user's connected time since a full IKE is at most the
    # wall time since it, so every chain clocked allows, established allows too; both are
    # greedy covers of an interval-closed family, hence optimal, hence the inequality.
    r = sweep(t, [Policy(clocked=life), Policy(established=life)])
    assert r.n_full[1] <= r.n_full[0]


def test_sweep_in_batches_and_blocks_equals_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis import sweep as sw
    from analysis.synth import generate

    t = generate("remote", seed=5, scale=0.01)
    pols = [Policy(clocked=c, idle=i, capacity=k) for c, i, k in
            itertools.product((3600, 86400), (None, 1800), (None, 50))]
    one = sweep(t, pols, keep_full=True)
    monkeypatch.setattr(sw, "STATE_BYTES", 4096)  # many user batches
    monkeypatch.setattr(sw, "BLOCK_CELLS", 64)  # many blocks per step
    t2 = generate("remote", seed=5, scale=0.01)
    many = sweep(t2, pols, keep_full=True)
    assert one.full is not None and many.full is not None
    assert (one.full == many.full).all() and (one.n_full == many.n_full).all()
    assert (one.max_age_at_use == many.max_age_at_use).all()


def test_limit_sweeps_and_capacity_around_recommendation() -> None:
    from analysis.analyze import Settings, analyze
    from analysis.synth import generate

    t = generate("wireless", seed=2, scale=0.01)
    a = analyze(t, settings=Settings(rekey_us=None, resamples=0))
    assert a.best is not None
    ls = a.limit_sweeps
    assert set(ls) == {"max_chain_age", "idle", "max_resumptions", "capacity"}
    # max_resumptions = 0 forbids every resumption; more resumptions never save less
    saves = [r["saving"] for r in ls["max_resumptions"]]
    assert saves[0] == 0 and all(x <= y for x, y in itertools.pairwise(saves))
    # (LRU savings need not be monotone in capacity: an eviction restarts a chain)
    assert all(0 <= r["saving"] <= 1 for r in ls["capacity"])
    roomy = run(t, [replace(a.best.policy, capacity=t.n_users)])
    assert roomy.saving()[0] == a.best.saving  # nothing evicted: the plain sweep's answer
    hist = a.selected[0]["per_user_full_histogram"]
    assert sum(hist["users"]) + hist["users_above"] == len(set(t.user.tolist()))


def test_peak_rate_and_occupancy() -> None:
    from analysis import metrics

    day = 86400 * US
    rows = [(u, (10 + u) * US, 60 * US, 0) for u in range(3)]  # cold start: first connections
    rows += [(u, 8 * day + u * US, 60 * US, 0) for u in range(3)]  # a week later, same minute
    t = trace(rows)
    r = run(t, [Policy(clocked=30 * 86400, max_chain_age=None)], keep_full=True)
    assert r.full is not None
    full = r.full[:, 0]
    assert metrics.peak_per_minute(t) == 3 and metrics.peak_per_minute(t, full) == 3
    warm = metrics.warm_up_end(t)
    assert warm == 10 * US + (8 * day + 2 * US + 60 * US - 10 * US) // 4  # a quarter of 8 days
    assert metrics.peak_per_minute(t, full, after=warm) == 0  # all resumed once warm
    assert metrics.peak_per_minute(t, after=warm) == 3
    occ = metrics.occupancy(t, full, Policy(clocked=30 * 86400, max_chain_age=None))
    assert occ.peak == 3 and occ.peak_bytes == 3 * metrics.RECORD_BYTES
    occ = metrics.occupancy(t, full, Policy(clocked=86400, max_chain_age=None))
    assert occ.records[-1] == 0  # clocked 1 day: expired long before the trace ends
