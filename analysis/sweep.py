"""The fast replay: many policies at once, vectorized over users and policies.

The reference loop (:mod:`analysis.replay`) walks one session at a time.  Here the trace
is laid out by *visit number*: step ``k`` takes the k-th session of every user who has at
least k+1 sessions (users ordered by visit count, so they are a prefix of the state
arrays), and judges it under every policy at once with the same comparisons as
:meth:`Policy.check`, in the same integer microseconds and bytes, so the two agree
exactly (a hypothesis test proves it, boundaries included).  Each step is a handful of
in-place numpy operations on (active users x policies) blocks; users are processed in
batches so the state arrays stay within :data:`STATE_BYTES` whatever the trace.

Capacity (LRU eviction) couples users through time, but only through *which records are
in the cache*: every session touches its user's record whatever the policy decides, so
the cache's content is the classic LRU over the sequence of users in time order.  A
session finds its user's record iff fewer than ``capacity`` other users were seen since
that user's previous session (its *stack distance*, :func:`stack_distances`, computed
once per trace in O(N log N) with numpy); with the distances known, an eviction is one
more comparison per session and policy, and users are independent again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from analysis.replay import NO_RECORD, SATURATED, policy_us
from analysis.trace import I64, B, Trace, index_dtype
from store.policy import Policy, Refusal

I32 = npt.NDArray[np.int32]
IX = npt.NDArray[np.signedinteger[Any]]  # positions (int32 when they fit)
IMAX = np.iinfo(np.int64).max
REASONS = (NO_RECORD, *(r.value for r in Refusal))
STATE_BYTES = 4 << 20  # per-batch state (users x policies) budget
BLOCK_CELLS = 1 << 16  # (rows x policies) cells per block: 512 KiB temporaries (cache, heap)


@dataclass
class SweepResult:
    """Per-policy totals; ``full`` (sessions x policies, input order) when kept;
    ``user_full`` (users x policies) full IKE exchanges per user; times in us."""

    policies: list[Policy]
    n_sessions: int
    n_full: I64
    refusals: dict[str, I64] | None
    max_secret_age: I64  # longest time keys derived from one full IKE stayed in use
    max_chain_bytes: I64  # most bytes protected under one chain
    max_age_at_use: I64  # oldest cached credential a resumption was allowed to use
    max_bytes_at_use: I64  # most bytes already under a chain when it was resumed again
    evictions: I64
    full: B | None = None
    user_full: I32 | None = None

    @property
    def n_resumed(self) -> I64:
        out: I64 = np.int64(self.n_sessions) - self.n_full
        return out

    def saving(self) -> npt.NDArray[np.float64]:
        """Fraction of full IKE exchanges avoided."""
        if self.n_sessions == 0:
            return np.zeros(len(self.policies))
        return (self.n_resumed / self.n_sessions).astype(np.float64)


@dataclass
class Layout:
    """A trace laid out by visit number (computed once per trace, see the module doc)."""

    src: IX  # input index of each laid-out session: step-major, then row
    step_start: I64  # offset of step k in ``src``; step k holds rows 0..per_step[k]-1
    per_step: I64  # users with more than k sessions
    row_user: I64  # user id of each row (rows ordered by visit count, descending)
    can_saturate: bool  # a user's total bytes or connected time could pass 2**63-1
    extra: dict[str, Any] = field(default_factory=dict)

    def prev_end(self, trace: Trace) -> I64:
        """Per session (input order): end of its user's previous session (meaningless for
        a user's first session, which is a full IKE anyway).  Not cached: one sweep needs
        it, and it is as large as a trace column."""
        order = trace.user_order()
        out: I64 = np.empty(len(order), dtype=np.int64)
        if len(order):
            out[order[1:]] = trace.end[order[:-1]]
            out[order[0]] = 0
        return out


def layout(trace: Trace) -> Layout:
    got = trace._cache.get("layout")
    if isinstance(got, Layout):
        return got
    n = len(trace)
    ix = index_dtype(n)
    order = trace.user_order()
    u = trace.user[order]
    counts = np.bincount(u, minlength=trace.n_users)
    first = (np.cumsum(counts) - counts).astype(ix)
    visit: Any = np.arange(n, dtype=ix)
    visit -= first[u]
    by_count = np.argsort(-counts, kind="stable")
    pos = np.empty(len(by_count), dtype=ix)
    pos[by_count] = np.arange(len(by_count))
    per_step = np.bincount(visit) if n else np.zeros(0, dtype=np.int64)
    step_start = (np.cumsum(per_step) - per_step).astype(ix)
    # step k holds rows 0..per_step[k]-1 (users by visit count): a direct placement
    dest = step_start[visit]
    del visit
    dest += pos[u]
    src = np.empty(n, dtype=ix)
    src[dest] = order
    n_users_active = int(per_step[0]) if n else 0
    # Can any user's chain sums overflow int64?  Float sums overestimate safely here.
    if n:
        w_b = np.bincount(trace.user, weights=trace.nbytes.astype(np.float64))
        w_d = np.bincount(trace.user, weights=trace.duration.astype(np.float64))
        sat = bool(max(w_b.max(), w_d.max()) >= 2.0**62)
    else:
        sat = False
    out = Layout(src, step_start.astype(np.int64), per_step.astype(np.int64),
                 by_count[:n_users_active].astype(np.int64), sat)
    trace._cache["layout"] = out
    return out


def greater_before(v: I64) -> I64:
    """For each k, ``#{j < k : v[j] > v[k]}`` (values distinct and non-negative).

    Bit by bit from the most significant: the elements are kept grouped by their value's
    higher bits (a stable sort, so in input order within a group); an element whose
    current bit is 0 is exceeded by exactly the elements of its group before it whose bit
    is 1.  O(M) numpy work per bit, plus a stable sort of nearly sorted keys.
    """
    m = len(v)
    if m < 2:
        return np.zeros(m, dtype=np.int64)
    dt = index_dtype(max(m, int(v.max()) + 1))
    x: Any = v.astype(dt)
    order: Any = np.arange(m, dtype=dt)
    cnt: Any = np.zeros(m, dtype=dt)
    # buffers reused level after level (fresh arrays this size would be mapped and
    # zeroed by the kernel each time)
    key, bit, grp, ones, tmp = (np.empty(m, dtype=dt) for _ in range(5))
    x2, order2, cnt2 = (np.empty(m, dtype=dt) for _ in range(3))
    flag = np.empty(m, dtype=bool)
    flag[0] = True
    for b in range(int(x.max()).bit_length() - 1, -1, -1):
        np.right_shift(x, b, out=key)
        np.bitwise_and(key, 1, out=bit)
        np.right_shift(key, 1, out=grp)
        np.not_equal(grp[1:], grp[:-1], out=flag[1:])
        np.cumsum(bit, out=ones)
        ones -= bit  # ones before, in the whole arrangement
        np.multiply(ones, flag, out=tmp)
        np.maximum.accumulate(tmp, out=tmp)
        ones -= tmp  # ... within the group
        np.subtract(1, bit, out=bit)  # 1 where the bit is 0
        ones *= bit
        cnt += ones
        perm = np.argsort(key, kind="stable")
        np.take(x, perm, out=x2)
        np.take(order, perm, out=order2)
        np.take(cnt, perm, out=cnt2)
        x, x2, order, order2, cnt, cnt2 = x2, x, order2, order, cnt2, cnt
    out = np.empty(m, dtype=np.int64)
    out[order] = cnt
    return out


def stack_distances(trace: Trace) -> IX:
    """Per session (input order): how many *other* users had a session since this user's
    previous one, in time order (-1 for a user's first session): the session's LRU stack
    distance.  Under capacity C its record is still cached iff the distance is below C."""
    got = trace._cache.get("stack_distances")
    if got is not None:
        out_c: IX = got
        return out_c
    n = len(trace)
    order = trace.time_order()
    tpos = np.empty(n, dtype=np.int64)
    tpos[order] = np.arange(n)
    # within a user, time order and user order agree (start, then input position): the
    # previous session of a user in user order is its previous access in time order
    uo = trace.user_order()
    prev = np.full(n, -1, dtype=np.int64)
    if n > 1:
        same = trace.user[uo[1:]] == trace.user[uo[:-1]]
        prev[tpos[uo[1:][same]]] = tpos[uo[:-1][same]]
    has = prev >= 0
    i_idx = np.flatnonzero(has)
    p = prev[has]
    nested = greater_before(p)  # earlier reuse intervals (smaller right end) starting later
    d = (i_idx - p - 1) - nested
    out: IX = np.full(n, -1, dtype=index_dtype(n))
    out[order[i_idx]] = d
    trace._cache["stack_distances"] = out
    trace._cache.pop("time_order", None)  # only needed here (the reference loop re-sorts)
    return out


_FAR = 2**62  # "no limit" for checks whose measured value can be negative (see sweep)


def _reached(lim_minus_1: I64, x: npt.NDArray[np.signedinteger[Any]]) -> I64:
    """-1 where ``x >= limit`` (``lim_minus_1 = limit - 1``), else 0."""
    out: I64 = np.subtract(lim_minus_1, x, dtype=np.int64)
    out >>= 63
    return out


def _limit_row(policies: Sequence[Policy], name: str) -> I64:
    vals = [getattr(p, name) for p in policies]
    return np.array([IMAX if v is None else min(int(v), IMAX) for v in vals], dtype=np.int64)


def sweep(
    trace: Trace,
    policies: Sequence[Policy],
    keep_full: bool = False,
    *,
    reasons: bool = True,
    user_counts: bool = False,
    figures: bool = True,
) -> SweepResult:
    """Replay ``trace`` under every policy (each exactly as :func:`replay_reference`).

    ``reasons``: count refusals by reason (a few more operations per cell);
    ``keep_full``: per-session full-IKE flags; ``user_counts``: full IKEs per user;
    ``figures=False``: only the full IKE counts (the four exposure maxima stay 0)."""
    pols = list(policies)
    L, N = len(pols), len(trace)
    pu = [policy_us(p) for p in pols]
    age_cap = _limit_row(pu, "max_chain_age")
    clocked = _limit_row(pu, "clocked")
    est_l = _limit_row(pu, "established")
    data_l = _limit_row(pu, "data")
    idle_l = _limit_row(pu, "idle")
    res_l = _limit_row(pu, "max_resumptions")
    cap_l = _limit_row(pu, "capacity")
    time_l = np.minimum(age_cap, clocked)
    use_est, use_data, use_idle, use_res, use_cap = (
        bool((x < IMAX).any()) for x in (est_l, data_l, idle_l, res_l, cap_l))

    n_full = np.zeros(L, dtype=np.int64)
    why = {r: np.zeros(L, dtype=np.int64) for r in REASONS} if reasons else None
    max_age = np.zeros(L, dtype=np.int64)
    max_bytes = np.zeros(L, dtype=np.int64)
    max_use = np.zeros(L, dtype=np.int64)
    max_buse = np.zeros(L, dtype=np.int64)
    evictions = np.zeros(L, dtype=np.int64)
    full_out = np.zeros((N, L), dtype=bool) if keep_full else None
    user_full = np.zeros((trace.n_users, L), dtype=np.int32) if user_counts else None
    res = SweepResult(pols, N, n_full, why, max_age, max_bytes, max_use, max_buse, evictions,
                      full_out, user_full)
    if N == 0 or L == 0:
        return res
    lay = layout(trace)
    start, end, nbytes = trace.start, trace.end, trace.nbytes
    PE = lay.prev_end(trace) if use_idle else None
    SD = stack_distances(trace) if use_cap else None
    sat = lay.can_saturate
    cell = 8 * (3 + use_est + use_res)
    n_rows = len(lay.row_user)
    batch = max(1, min(n_rows, STATE_BYTES // (cell * L)))
    block = max(64, BLOCK_CELLS // L)
    # State is (policies x rows): the inner, contiguous axis runs over users, so every
    # operation is a long vector loop and every reduction is along rows.
    # A check "x >= limit" is computed as the mask (limit - 1 - x) >> 63: -1 where the
    # limit is reached, 0 where not (no overflow: x >= -2**60, limits <= 2**63-1, and the
    # unbounded "no limit" of a check whose x can be negative is 2**62).  Masks combine
    # with | and apply with &, several times faster than boolean arrays and masked copies.
    lim1 = {name: (np.minimum(x, cap_) - 1)[:, None] for name, x, cap_ in (
        ("time", time_l, _FAR), ("age", age_cap, _FAR), ("clocked", clocked, _FAR),
        ("est", est_l, IMAX), ("data", data_l, IMAX), ("idle", idle_l, _FAR),
        ("res", res_l, IMAX), ("cap", cap_l, IMAX))}
    for r0 in range(0, n_rows, batch):
        r1 = min(n_rows, r0 + batch)
        rows = r1 - r0
        fa = np.zeros((L, rows), dtype=np.int64)
        byt = np.zeros((L, rows), dtype=np.int64)
        uf = np.zeros((L, rows), dtype=np.int64)
        est = np.zeros((L, rows), dtype=np.int64) if use_est else None
        nres = np.zeros((L, rows), dtype=np.int64) if use_res else None
        for k in range(len(lay.per_step)):
            active = min(int(lay.per_step[k]), r1) - r0
            if active <= 0:
                break
            base = int(lay.step_start[k]) + r0
            for b0 in range(0, active, block):
                b1 = min(active, b0 + block)
                a0, a1 = base + b0, base + b1
                ix = lay.src[a0:a1]  # gathered per block: no (sessions,) copies per sweep
                t = start[ix]
                d = end[ix] - t
                bb = nbytes[ix]
                if sat:
                    bb = np.minimum(bb, SATURATED)
                fa_s, byt_s, uf_s = fa[:, b0:b1], byt[:, b0:b1], uf[:, b0:b1]
                if k == 0:
                    fa_s[...] = t
                    byt_s[...] = bb
                    uf_s += 1
                    if est is not None:
                        est[:, b0:b1] = d
                    if why is not None:
                        why[NO_RECORD] += b1 - b0
                    np.maximum(max_age, int(d.max()), out=max_age)
                    np.maximum(max_bytes, int(bb.max()), out=max_bytes)
                    if full_out is not None:
                        full_out[ix] = True
                    continue
                age = t - fa_s
                checks: list[tuple[str, I64]] = []  # (refusal, mask), in Policy.check order
                if SD is not None:
                    checks.append((NO_RECORD, _reached(lim1["cap"], SD[ix])))
                if why is not None:
                    checks.append((Refusal.CHAIN_AGE.value, _reached(lim1["age"], age)))
                    checks.append((Refusal.CLOCKED.value, _reached(lim1["clocked"], age)))
                else:
                    checks.append(("time", _reached(lim1["time"], age)))
                if est is not None:
                    checks.append((Refusal.ESTABLISHED.value,
                                   _reached(lim1["est"], est[:, b0:b1])))
                if use_data:
                    checks.append((Refusal.DATA.value, _reached(lim1["data"], byt_s)))
                if PE is not None:
                    checks.append((Refusal.IDLE.value, _reached(lim1["idle"], t - PE[ix])))
                if nres is not None:
                    checks.append((Refusal.RESUMPTIONS.value,
                                   _reached(lim1["res"], nres[:, b0:b1])))
                m = checks[0][1]
                if why is not None:
                    seen = np.zeros_like(m)
                    for name, h in checks:
                        why[name] -= (h & ~seen).sum(axis=1)
                        seen |= h
                    m = seen
                else:
                    for _name, h in checks[1:]:
                        m |= h
                uf_s -= m
                keep = np.invert(m)  # -1 where resumed
                fz = np.bitwise_and(age, m)  # the age where a full IKE, else 0
                fa_s += fz  # fa + (t - fa) = t: the chain restarts at this session
                if figures:
                    age -= fz  # age at use (0 for a full IKE)
                    np.maximum(max_use, age.max(axis=1), out=max_use)
                    age += d  # how long this chain's keys are in use by the session's end
                    np.maximum(max_age, age.max(axis=1), out=max_age)
                if figures or use_data:
                    byt_s &= keep
                    if figures:
                        np.maximum(max_buse, byt_s.max(axis=1), out=max_buse)
                    if sat:
                        byt_s += np.minimum(bb, SATURATED - byt_s)
                    else:
                        byt_s += bb
                    if figures:
                        np.maximum(max_bytes, byt_s.max(axis=1), out=max_bytes)
                if est is not None:
                    e_s = est[:, b0:b1]
                    e_s &= keep
                    if sat:
                        e_s += np.minimum(d, SATURATED - e_s)
                    else:
                        e_s += d
                if nres is not None:
                    r_s = nres[:, b0:b1]
                    r_s += 1
                    r_s &= keep
                if full_out is not None:
                    full_out[ix] = (m != 0).T
        n_full += uf.sum(axis=1)
        if user_full is not None:
            user_full[lay.row_user[r0:r1]] = uf.T
    if use_cap:  # every miss inserts a record; the cache holds min(capacity, misses)
        sd_all = np.sort(stack_distances(trace))
        firsts = int(np.searchsorted(sd_all, 0))
        misses = firsts + (N - np.searchsorted(sd_all, np.maximum(cap_l, 0)))
        evictions[:] = np.where(cap_l < IMAX, misses - np.minimum(cap_l, misses), 0)
    return res


def run(trace: Trace, policies: Sequence[Policy], keep_full: bool = False) -> SweepResult:
    """:func:`sweep` with every figure (kept for callers of the former two-path API)."""
    return sweep(trace, policies, keep_full)
