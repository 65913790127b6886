"""Admission in Rust (native/src/server/admission.rs) against resume/net/admission.py.

The same datagrams, sources, clock and pending counts through both: every verdict (the drop
reason or admit) is the same, bucket for bucket, including the eviction of sources when
``max_sources`` is reached, IPv6 prefixes, the new-exchange budget and draining.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from resume import _native  # type: ignore[attr-defined]
from resume.net.admission import Admission
from resume.net.config import LimitsSection
from resume.wire import EXCHANGE_IKE_RESUME


def _header(mid: int, flags: int, version: int, xchg: int, tail: bytes) -> bytes:
    return bytes(16) + bytes([33, version, xchg, flags]) + struct.pack(">II", mid, 28) + tail


datagrams = st.one_of(
    st.binary(max_size=40),
    st.builds(
        _header,
        st.sampled_from([0, 1, 2, 1 << 24]),
        st.sampled_from([0x08, 0x00, 0x20, 0x28, 0x18]),
        st.sampled_from([0x20, 0x21, 0x10]),
        st.sampled_from([EXCHANGE_IKE_RESUME, 34, 35]),
        st.binary(max_size=8),
    ),
)
v4 = st.builds(lambda a, b: f"10.{a}.0.{b}", st.integers(0, 3), st.integers(1, 6))
v6 = st.builds(lambda a, b: f"2001:db8:{a:x}::{b:x}", st.integers(0, 3), st.integers(1, 6))
steps = st.lists(
    st.tuples(datagrams, st.one_of(v4, v6), st.floats(0, 0.5), st.integers(0, 12)),
    min_size=1,
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(
    steps=steps,
    rate=st.sampled_from([1.0, 5.0, 100.0]),
    burst=st.sampled_from([1.0, 2.0, 7.5]),
    prefix=st.sampled_from([48, 64, 128]),
    max_sources=st.sampled_from([2, 5, 1000]),
    new_rate=st.sampled_from([0.0, 3.0, 50.0]),
    max_pending=st.sampled_from([4, 10]),
    drain_at=st.integers(0, 100),
)
def test_rust_admission_gives_the_python_verdicts(
    steps: list[tuple[bytes, str, float, int]], rate: float, burst: float, prefix: int,
    max_sources: int, new_rate: float, max_pending: int, drain_at: int,
) -> None:  # fmt: skip
    limits = LimitsSection(
        per_source_rate=rate, per_source_burst=burst, ipv6_prefix=prefix,
        max_sources=max_sources, new_exchange_rate=new_rate, max_pending=max_pending,
    )  # fmt: skip
    py = Admission(limits)
    rs = _native.NativeAdmission(rate, burst, prefix, max_sources, new_rate, max_pending)
    now = 1000.0
    for i, (data, host, dt, pending) in enumerate(steps):
        if i == drain_at:
            py.draining = True
            rs.draining = True
        now += dt
        assert rs.admit(data, host, now, pending) == py.admit(data, host, now, pending), i
    assert rs.sources == len(py.sources)
