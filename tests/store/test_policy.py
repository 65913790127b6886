"""Policy semantics: hand-computed cases for each limit, combinations, and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store.policy import Counters, Policy, Refusal, parse_duration, parse_size

H = 3600.0


def counters(age: float, est: float = 0.0, nbytes: int = 0, uses: int = 0, idle: float = 0.0):
    now = 1_000_000.0
    return Counters(
        full_ike_at=now - age,
        last_used_at=now - idle,
        established_s=est,
        bytes_total=nbytes,
        resumptions=uses,
    ), now


@pytest.mark.parametrize(
    ("policy", "state", "expected"),
    [
        (Policy(clocked=2 * H), dict(age=2 * H - 1), None),
        (Policy(clocked=2 * H), dict(age=2 * H), Refusal.CLOCKED),
        (Policy(established=2 * H), dict(age=30 * H, est=1.5 * H), None),
        (Policy(established=2 * H), dict(age=1 * H, est=2 * H), Refusal.ESTABLISHED),
        (Policy(data=20_000_000), dict(age=5 * H, nbytes=19_999_999), None),
        (Policy(data=20_000_000), dict(age=5 * H, nbytes=20_000_000), Refusal.DATA),
        (Policy(max_chain_age=24 * H), dict(age=24 * H), Refusal.CHAIN_AGE),
        (Policy(max_chain_age=None), dict(age=1e9), None),
        (Policy(idle=H), dict(age=5 * H, idle=H), Refusal.IDLE),
        (Policy(idle=H), dict(age=5 * H, idle=H - 1), None),
        (Policy(max_resumptions=3), dict(age=1, uses=3), Refusal.RESUMPTIONS),
        (Policy(max_resumptions=3), dict(age=1, uses=2), None),
        # combinations: every limit must hold
        (Policy(clocked=8 * H, data=50_000_000), dict(age=H, nbytes=60_000_000), Refusal.DATA),
        (Policy(clocked=8 * H, data=50_000_000), dict(age=9 * H, nbytes=1), Refusal.CLOCKED),
        (Policy(clocked=8 * H, established=2 * H), dict(age=7 * H, est=H), None),
    ],
)
def test_hand_computed(policy: Policy, state: dict, expected: Refusal | None) -> None:
    c, now = counters(**state)
    assert policy.check(c, now) is expected


def test_counters_accumulate_sessions() -> None:
    c = Counters.fresh(100.0).after_session(60, 1000, 160).after_resumption(500)
    c = c.after_session(30, 500, 530)
    assert (c.established_s, c.bytes_total, c.resumptions, c.last_used_at) == (90, 1500, 1, 530)
    with pytest.raises(ValueError):
        c.after_session(-1, 0, 0)


def test_parsers() -> None:
    assert parse_duration("2h") == 7200
    assert parse_duration("15m") == 900
    assert parse_duration(30) == 30
    assert parse_size("20MB") == 20_000_000
    assert parse_size("1GiB") == 2**30
    for bad in ("2 hours", "-1", "h"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    with pytest.raises(ValueError):
        parse_size("lots")


def test_config_round_trip_and_unknown_keys() -> None:
    p = Policy(clocked=8 * H, data=50_000_000, max_resumptions=100, idle=None)
    assert Policy.from_mapping(p.to_mapping()) == p
    assert '[policy]\nclocked = "8h"' in p.to_toml()
    with pytest.raises(ValueError, match="unknown policy keys: clocke"):
        Policy.from_mapping({"clocke": "8h"})
    with pytest.raises(ValueError):
        Policy(clocked=-1)


def test_sa_lifetimes_bound_by_remaining_budget() -> None:
    p = Policy(clocked=8 * H, data=50_000_000, max_chain_age=None)
    c, now = counters(age=6 * H, nbytes=10_000_000)
    lt = p.sa_lifetimes(c, now)
    assert lt.hard_seconds == int(2 * H)
    assert lt.hard_bytes == 40_000_000
    assert lt.soft_seconds is not None and lt.soft_seconds < lt.hard_seconds


lims = st.floats(min_value=1, max_value=1e7)


@given(
    kind=st.sampled_from(["clocked", "established", "data"]),
    small=lims,
    extra=lims,
    age=st.floats(0, 2e7),
    est=st.floats(0, 2e7),
    nbytes=st.integers(0, 10**10),
)
def test_longer_lifetime_never_refuses_more(kind, small, extra, age, est, nbytes) -> None:
    c, now = counters(age=age, est=est, nbytes=nbytes)
    base = Policy(max_chain_age=None)
    short = base.with_lifetime(kind, small)
    long = base.with_lifetime(kind, small + extra)
    if short.allows(c, now):
        assert long.allows(c, now)
