"""What a policy means for a gateway: load peaks, per-user effect, cache occupancy.

All functions take the per-session full-IKE flags of one policy (from the sweep or the
reference replay) so they describe exactly the replay that produced the totals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from analysis.replay import policy_us
from analysis.trace import I64, US, B, Trace
from store.policy import Policy

# Bytes one cached record costs the store: handle 32, wrapped secret 32+28, identities
# ~2x64, SA parameters ~48, counters 40, row and index overhead ~200 (SQLite).  An
# estimate; the store's own benchmark measures the real figure.
RECORD_BYTES = 512
MAX_POINTS = 100_000  # occupancy samples at most (hourly unless the trace spans >11 years)


def _minutes(trace: Trace) -> npt.NDArray[np.int64] | npt.NDArray[np.int32]:
    """Each session's start minute, counted from the trace's first (cached on the trace)."""
    got = trace._cache.get("minutes")
    if got is None:
        t0 = int(trace.start.min())
        span = (int(trace.start.max()) - t0) // (60 * US)
        got = (trace.start - t0) // (60 * US)
        if span < 2**31:
            got = got.astype(np.int32)
        trace._cache["minutes"] = got
    out: npt.NDArray[np.int64] | npt.NDArray[np.int32] = got
    return out


def peak_per_minute(trace: Trace, full: B | None = None, after: int | None = None) -> int:
    """Most full IKE exchanges started in any one minute (``full=None``: no cache).

    ``after``: count only sessions starting at or after this time, to leave out the cold
    start of a replay (every user's first connection is a full IKE, an artefact of the
    trace beginning, not a load the gateway sees once the cache is warm).
    """
    if len(trace) == 0:
        return 0
    minute = _minutes(trace)
    keep = full if after is None else (trace.start >= after if full is None else
                                       full & (trace.start >= after))
    if keep is not None:
        minute = minute[keep]
    if not len(minute):
        return 0
    if int(minute.max()) <= 4 * len(trace) + 10**6:
        return int(np.bincount(minute).max())
    # a trace spanning years (or a stray stamp): count by the minutes that occur
    return int(np.unique(minute, return_counts=True)[1].max())


def warm_up_end(trace: Trace) -> int:
    """When a replay's cache counts as warm: a week in, or a quarter of the trace if shorter."""
    t0, t1 = int(trace.start.min()), int(trace.end.max())
    return t0 + min(7 * 86400 * US, (t1 - t0) // 4)


def per_user_full(trace: Trace, full: B) -> I64:
    """Full IKE exchanges per user (index = user id)."""
    out: I64 = np.bincount(trace.user, weights=full.astype(np.float64),
                           minlength=trace.n_users).astype(np.int64)
    return out


def sessions_per_user(trace: Trace) -> I64:
    out: I64 = np.bincount(trace.user, minlength=trace.n_users).astype(np.int64)
    return out


@dataclass(frozen=True)
class Occupancy:
    times: I64  # us
    records: I64
    record_bytes: int

    @property
    def peak(self) -> int:
        return int(self.records.max()) if len(self.records) else 0

    @property
    def peak_bytes(self) -> int:
        return self.peak * self.record_bytes


def occupancy(
    trace: Trace, full: B, policy: Policy, step: int = 3600 * US,
    record_bytes: int = RECORD_BYTES,
) -> Occupancy:
    """Cached records alive over time.

    A record lives from its full IKE until the next full IKE of the same user replaces it
    or the policy's wall-clock limits expire it (:meth:`Policy.expires_at` with the
    chain's final counters: chain age, clocked, idle after the chain's last session).
    Records kept only by established/data limits live until the trace ends.  With a
    capacity the count is capped at the capacity (LRU eviction keeps it there).
    """
    if len(trace) == 0:
        return Occupancy(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), record_bytes)
    pol = policy_us(policy)
    order = trace.user_order()
    chain_idx = np.flatnonzero(full[order])  # chain starts, in user order
    heads = order[chain_idx]
    born = trace.start[heads]
    u = trace.user[heads]
    last_end = born
    if pol.idle is not None:
        # the chain's last use: the latest end among its sessions (contiguous in user order)
        last_end = np.maximum.reduceat(trace.end[order], chain_idx)
    never = np.iinfo(np.int64).max
    death = np.full(len(chain_idx), never, dtype=np.int64)
    for lim in (pol.max_chain_age, pol.clocked):
        if lim is not None:
            death = np.minimum(death, born + int(lim))
    if pol.idle is not None:
        death = np.minimum(death, last_end + int(pol.idle))
    nxt_same = np.append(u[1:] == u[:-1], False)
    replaced = np.append(born[1:], never)
    death = np.where(nxt_same, np.minimum(death, replaced), death)
    t0, t1 = int(trace.start.min()), int(trace.end.max())
    step = max(step, -(-(t1 - t0) // MAX_POINTS))  # a long trace: coarser steps
    times = np.arange(t0 // step * step, t1 + step, step, dtype=np.int64)
    alive = np.searchsorted(np.sort(born), times, side="right") - np.searchsorted(
        np.sort(death), times, side="right"
    )
    records: I64 = alive.astype(np.int64)
    if pol.capacity is not None:
        records = np.minimum(records, pol.capacity)
    return Occupancy(times, records, record_bytes)


def quantiles(values: npt.ArrayLike, qs: tuple[float, ...] = (0.5, 0.9, 0.99, 1.0)) -> list[float]:
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return [0.0 for _ in qs]
    return [float(x) for x in np.quantile(v, qs)]
