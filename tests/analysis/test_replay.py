"""Replay semantics: hand-computed traces per policy, the fast sweep against the reference
loop (which calls Policy.check itself), and structural properties."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.replay import replay_reference
from analysis.sweep import run, sweep
from analysis.trace import Trace, split_rekeys
from store.policy import Policy, Refusal

H = 3600.0


def trace(rows: list[tuple[int, float, float, int]]) -> Trace:
    """rows: (user, start, duration, bytes)"""
    u = [r[0] for r in rows]
    s = [r[1] for r in rows]
    e = [r[1] + r[2] for r in rows]
    b = [r[3] for r in rows]
    return Trace.from_columns(u, s, e, b, [0] * len(rows))


def fulls(t: Trace, p: Policy) -> list[bool]:
    ref: list[bool] = replay_reference(t, p).full.tolist()
    fast = run(t, [p], keep_full=True).full
    assert fast is not None
    assert fast[:, 0].tolist() == ref
    return ref


def test_clocked_limit_is_strict() -> None:
    t = trace([(0, 0, 600, 0), (0, 1800, 60, 0), (0, 3599, 0, 0), (0, 3600, 0, 0), (0, 3601, 0, 0)])
    # ages 1800, 3599 < 1h resume; 3600 >= 1h full; then age 1 resumes
    assert fulls(t, Policy(clocked=H)) == [True, False, False, True, False]


def test_established_counts_connected_time_only() -> None:
    t = trace([(0, 0, 2400, 0), (0, 10 * H, 2400, 0), (0, 20 * H, 2400, 0), (0, 30 * H, 10, 0)])
    # established 40 min < 1h -> resume; 80 min >= 1h -> full; then 40 min -> resume
    assert fulls(t, Policy(established=H)) == [True, False, True, False]
    # the same trace under a clocked hour never resumes
    assert fulls(t, Policy(clocked=H)) == [True, True, True, True]


def test_data_lifetime() -> None:
    t = trace([(0, 0, 1, 60), (0, 10, 1, 60), (0, 20, 1, 60), (0, 30, 1, 0)])
    assert fulls(t, Policy(data=100)) == [True, False, True, False]


def test_idle_and_resumption_cap_and_chain_age() -> None:
    t = trace([(0, 0, 60, 0), (0, 600, 60, 0), (0, 1300, 60, 0), (0, 1900, 60, 0)])
    # gaps after each end: 540 (<600 resume), 640 (full), 540 (resume)
    assert fulls(t, Policy(idle=600)) == [True, False, True, False]
    assert fulls(t, Policy(max_resumptions=1)) == [True, False, True, False]
    week = 7 * 86400.0
    t = trace([(0, 0, 1, 0), (0, week - 1, 1, 0), (0, 2 * week - 1, 1, 0)])
    assert fulls(t, Policy()) == [True, False, True]  # default 7-day chain cap


def test_combination_all_must_hold_and_users_are_independent() -> None:
    t = trace([(0, 0, 10, 60), (1, 5, 10, 0), (0, 100, 10, 60), (1, 2 * H, 10, 0), (0, 200, 1, 0)])
    p = Policy(clocked=H, data=100)
    # user 0: full, resume (60<100), full (120>=100); user 1: full, full (age 2h)
    assert fulls(t, p) == [True, True, False, True, True]
    res = replay_reference(t, p)
    assert res.refusals == {"no_record": 2, Refusal.DATA.value: 1, Refusal.CLOCKED.value: 1}


def test_capacity_evicts_least_recently_used() -> None:
    t = trace([(0, 0, 1, 0), (1, 10, 1, 0), (0, 20, 1, 0), (2, 30, 1, 0), (1, 40, 1, 0),
               (0, 50, 1, 0)])
    # capacity 2: users 0,1 cached; 0 resumes (MRU); 2 evicts 1; 1 misses and evicts 0; 0 misses
    p = Policy(clocked=H, capacity=2)
    assert fulls(t, p) == [True, True, False, True, True, True]
    assert replay_reference(t, p).evictions == 3
    assert fulls(t, Policy(clocked=H, capacity=3)) == [True, True, False, True, False, False]


def test_exposure_figures() -> None:
    t = trace([(0, 0, 100, 10), (0, 1000, 500, 20), (0, 5000, 10, 5)])
    r = sweep(t, [Policy(clocked=2000.0)])
    assert r.max_age_at_use[0] == 1000  # second session used a 1000 s old credential
    assert r.max_secret_age[0] == 1500  # its keys lived until 1500 s after the full IKE
    assert r.max_bytes_at_use[0] == 10 and r.max_chain_bytes[0] == 30


def test_rekey_split_conserves_bytes_and_time() -> None:
    t = trace([(0, 0, 10 * H, 1001), (1, 0, 30, 7), (0, 11 * H, 0, 0)])
    s = split_rekeys(t, 4 * H)
    assert len(s) == 5 and s.rekey.tolist() == [False, True, True, False, False]
    assert s.nbytes.sum() == t.nbytes.sum() and s.duration.sum() == pytest.approx(t.duration.sum())
    # a clocked 1h cache: the rekeys of the 10 h session come 4 h apart, none resumes
    assert int(sweep(s, [Policy(clocked=H)]).n_full[0]) == 5
    # clocked 5h, user 0: 0 full, 4h resumes, 8h full (age 8h), 11h resumes; user 1 full
    assert sweep(s, [Policy(clocked=5 * H)], keep_full=True).full[:, 0].tolist() == [  # type: ignore[index]
        True, False, True, True, False
    ]


# ---------------------------------------------------------------- properties

@st.composite
def traces(draw: st.DrawFn, overlap: bool = True) -> Trace:
    n_users = draw(st.integers(1, 4))
    rows: list[tuple[int, float, float, int]] = []
    for u in range(n_users):
        t = float(draw(st.integers(0, 5000)))
        for _ in range(draw(st.integers(0, 12))):
            d = float(draw(st.sampled_from([0, 1, 30, 600, 3000, 20000])))
            rows.append((u, t, d, draw(st.integers(0, 10**6))))
            gap = draw(st.sampled_from([0, 1, 100, 1800, 3600, 40000, 700000]))
            # without overlap: strictly after the previous end (replay order unambiguous)
            step = gap + (0 if draw(st.booleans()) else d) if overlap else max(gap, 1) + d
            t = t + step
    draw(st.randoms()).shuffle(rows)
    return trace(rows)


def opt(draw: st.DrawFn, values: Sequence[float]) -> float | None:
    return draw(st.one_of(st.none(), st.sampled_from(values)))


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    times = [0, 1, 100, 1800, 3600, 7200, 86400]
    data = opt(draw, [0, 1, 10**5, 10**6, 3 * 10**6])
    res = opt(draw, [0, 1, 3])
    return Policy(
        clocked=opt(draw, times), established=opt(draw, times),
        data=None if data is None else int(data), max_chain_age=opt(draw, [*times, 7 * 86400]),
        idle=opt(draw, times), max_resumptions=None if res is None else int(res),
    )


@given(traces(), st.lists(policies(), min_size=1, max_size=4))
def test_vectorized_sweep_agrees_with_policy_check_loop(t: Trace, pols: list[Policy]) -> None:
    fast = sweep(t, pols, keep_full=True)
    assert fast.full is not None
    for j, p in enumerate(pols):
        ref = replay_reference(t, p)
        assert fast.full[:, j].tolist() == ref.full.tolist()
        assert {k: int(v[j]) for k, v in fast.refusals.items() if v[j]} == dict(ref.refusals)
        if len(t):
            assert fast.max_secret_age[j] == (t.end - ref.chain_start).max()
            assert fast.max_chain_bytes[j] == ref.chain_bytes.max()


@given(traces(), st.lists(policies(), min_size=1, max_size=3), st.integers(0, 5))
def test_capacity_path_totals_conserved(t: Trace, pols: list[Policy], cap: int) -> None:
    from dataclasses import replace

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


def test_limit_sweeps_and_capacity_around_recommendation() -> None:
    from analysis.analyze import analyze
    from analysis.synth import generate

    t = generate("wireless", seed=2, scale=0.01)
    a = analyze(t, rekey=None)
    assert a.best is not None
    ls = a.limit_sweeps
    assert set(ls) == {"max_chain_age", "idle", "max_resumptions", "capacity"}
    # max_resumptions = 0 forbids every resumption; more resumptions never save less
    saves = [r["saving"] for r in ls["max_resumptions"]]
    assert saves[0] == 0 and all(x <= y for x, y in itertools.pairwise(saves))
    # (LRU savings need not be monotone in capacity: an eviction restarts a chain)
    assert all(0 <= r["saving"] <= 1 for r in ls["capacity"])
    from dataclasses import replace

    roomy = run(t, [replace(a.best.policy, capacity=t.n_users)])
    assert roomy.saving()[0] == a.best.saving  # nothing evicted: the plain sweep's answer
    hist = a.selected[0]["per_user_full_histogram"]
    assert sum(hist["users"]) + hist["users_above"] == len(set(t.user.tolist()))


def test_peak_rate_and_occupancy() -> None:
    from analysis import metrics

    day = 86400.0
    rows = [(u, 10.0 + u, 60, 0) for u in range(3)]  # cold start: three first connections
    rows += [(u, 8 * day + u, 60, 0) for u in range(3)]  # a week later, same minute
    t = trace(rows)
    r = run(t, [Policy(clocked=30 * day, max_chain_age=None)], keep_full=True)
    assert r.full is not None
    full = r.full[:, 0]
    assert metrics.peak_per_minute(t) == 3 and metrics.peak_per_minute(t, full) == 3
    warm = metrics.warm_up_end(t)
    assert warm == 10.0 + (8 * day + 2 + 60 - 10.0) / 4  # a quarter of an 8-day trace
    assert metrics.peak_per_minute(t, full, after=warm) == 0  # all resumed once warm
    assert metrics.peak_per_minute(t, after=warm) == 3
    occ = metrics.occupancy(t, full, Policy(clocked=30 * day, max_chain_age=None))
    assert occ.peak == 3 and occ.peak_bytes == 3 * metrics.RECORD_BYTES
    occ = metrics.occupancy(t, full, Policy(clocked=day, max_chain_age=None))
    assert occ.records[-1] == 0  # clocked 1 day: expired long before the trace ends
