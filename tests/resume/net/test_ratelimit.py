"""Per-source token buckets: fairness between sources, bounded memory, refill over time."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from resume.net.ratelimit import SourceLimiter, TokenBucket


def test_one_source_is_cut_others_are_not() -> None:
    lim = SourceLimiter(rate=10, burst=5)
    got = [lim.allow("10.0.0.1", 0.0) for _ in range(100)]
    assert sum(got) == 5
    assert lim.allow("10.0.0.2", 0.0)
    assert not lim.allow("10.0.0.1", 0.05)  # half a token refilled
    assert lim.allow("10.0.0.1", 0.2)  # two tokens refilled


def test_ipv6_prefix_shares_a_bucket() -> None:
    lim = SourceLimiter(rate=1, burst=2, ipv6_prefix=64)
    assert lim.allow("2001:db8::1", 0.0)
    assert lim.allow("2001:db8::2", 0.0)
    assert not lim.allow("2001:db8::ffff", 0.0)  # same /64
    assert lim.allow("2001:db8:0:1::1", 0.0)  # another /64


def test_memory_is_bounded() -> None:
    lim = SourceLimiter(rate=1, burst=3, max_sources=100)
    for i in range(10_000):
        lim.allow(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", i * 1e-6)
    assert len(lim) <= 100


@given(st.lists(st.floats(min_value=0, max_value=0.01), min_size=1, max_size=200))
def test_bucket_never_exceeds_rate_plus_burst(gaps: list[float]) -> None:
    b = TokenBucket(rate=100.0, burst=10.0, now=0.0)
    now, taken = 0.0, 0
    for g in gaps:
        now += g
        taken += b.take(now)
    assert taken <= 10 + 100.0 * now + 1e-9
