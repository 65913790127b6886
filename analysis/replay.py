"""The reference replay: one session at a time through :meth:`Policy.check`.

This is the definition of what a policy does to a trace; the vectorized sweep
(:mod:`analysis.sweep`) must agree with it exactly (a hypothesis test checks that, at
the boundaries too).

Units: the trace is in integer microseconds and bytes; the policy's time limits (seconds
in the config) are converted once to whole microseconds (:func:`policy_us`), and the
store's own :class:`Counters` and :meth:`Policy.check` run on those integers, so every
comparison is exact.  :meth:`Policy.check` refuses when a measured value *reaches* its
limit: a lifetime is an exclusive bound (a 1 h clocked credential may be used at
59:59.999999, not at 1:00:00.000000).

Model (one cached record per user, as in the 2007 study):

* sessions are taken in start order (ties: by user, then input order);
* a user without a record, or whose record the policy refuses at the session's start,
  runs a full IKE (fresh :class:`Counters`); otherwise the session is a resumption
  (:meth:`Counters.after_resumption`);
* the session's duration and bytes are then accounted to the record
  (:meth:`Counters.after_session`) before that user's next session is judged.  For a user
  with overlapping sessions this counts usage a live gateway would learn only later, so
  the replay errs towards full IKE (never overstates savings);
* with a capacity, the least recently used record is evicted when a new one would exceed
  it (every session touches its user's record).

Byte figures saturate at 2**63-2 (an int64 cannot hold much more; a sum limit above it is
taken as it, so no decision changes).
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import numpy as np

from analysis.trace import I64, US, B, Trace
from store.policy import Counters, Policy

NO_RECORD = "no_record"


def to_us(seconds: float | None) -> int | None:
    """A time limit in seconds -> whole microseconds (None stays None)."""
    return None if seconds is None else round(seconds * US)


SATURATED = 2**63 - 2  # chain sums (bytes, connected us) saturate here


def _sat(v: int | None) -> int | None:
    return None if v is None else min(v, SATURATED)


def policy_us(p: Policy) -> Policy:
    """``p`` with its time limits in microseconds: the units of the replay.  Sum limits
    (data, established) above :data:`SATURATED` are taken as :data:`SATURATED`: an int64
    chain sum saturates there, and the two replays must judge alike."""
    return Policy(
        clocked=to_us(p.clocked), established=_sat(to_us(p.established)), data=_sat(p.data),
        max_chain_age=to_us(p.max_chain_age), idle=to_us(p.idle),
        max_resumptions=p.max_resumptions, capacity=p.capacity,
    )


@dataclass
class ReplayResult:
    """Outcome of one policy on one trace; ``full``/``resumed`` are per session (input order)."""

    policy: Policy
    full: B
    chain_start: I64  # per session: start of its chain (the full IKE's time), us
    chain_bytes: I64  # per session: bytes under its chain after this session
    refusals: Counter[str] = field(default_factory=Counter)
    evictions: int = 0

    @property
    def n_full(self) -> int:
        return int(self.full.sum())

    @property
    def n_resumed(self) -> int:
        return len(self.full) - self.n_full


def replay_reference(trace: Trace, policy: Policy) -> ReplayResult:
    """Replay ``trace`` under ``policy`` with the store's own objects (slow, exact)."""
    pol = policy_us(policy)
    n = len(trace)
    full = np.zeros(n, dtype=bool)
    chain_start = np.zeros(n, dtype=np.int64)
    chain_bytes = np.zeros(n, dtype=np.int64)
    refusals: Counter[str] = Counter()
    cache: OrderedDict[int, Counters] = OrderedDict()
    cap = pol.capacity
    evictions = 0
    user = trace.user.tolist()
    start = trace.start.tolist()
    end = trace.end.tolist()
    nbytes = trace.nbytes.tolist()
    for i in trace.time_order().tolist():
        u, t, e = user[i], start[i], end[i]
        c = cache.get(u)
        reason = NO_RECORD if c is None else pol.check(c, t)
        if c is not None and reason is None:
            c = c.after_resumption(t)
        else:
            full[i] = True
            refusals[reason if isinstance(reason, str) else reason.value] += 1  # type: ignore[union-attr]
            c = Counters(full_ike_at=t, last_used_at=t, established_s=0, bytes_total=0)
        c = c.after_session(e - t, nbytes[i], e)
        chain_start[i] = int(c.full_ike_at)
        chain_bytes[i] = min(c.bytes_total, SATURATED)
        cache[u] = c
        cache.move_to_end(u)
        if cap is not None and len(cache) > cap:
            cache.popitem(last=False)
            evictions += 1
    return ReplayResult(policy, full, chain_start, chain_bytes, refusals, evictions)
