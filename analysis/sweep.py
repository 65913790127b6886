"""The fast replay: many policies at once, vectorized over users and policies.

The reference loop (:mod:`analysis.replay`) walks one session at a time.  Here the trace
is laid out by *visit number*: step ``k`` takes the k-th session of every user who has at
least k+1 sessions (users ordered by visit count, so they are a prefix of the state
arrays), and judges it under every policy at once with the same comparisons as
:meth:`Policy.check`, in the same float64 arithmetic, so the two agree exactly.  The
loop runs max-visits times; each step is a handful of numpy operations on
(active users x policies) arrays.

Capacity (LRU eviction) couples users through global time order and is replayed by the
reference loop instead (:func:`run`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from analysis.replay import NO_RECORD, replay_reference
from analysis.trace import F64, I64, B, Trace
from store.policy import Policy, Refusal

_INF = np.inf
_IMAX = np.iinfo(np.int64).max
REASONS = (NO_RECORD, *(r.value for r in Refusal))


@dataclass
class SweepResult:
    """Per-policy totals; ``full`` (sessions x policies, input order) when kept."""

    policies: list[Policy]
    n_sessions: int
    n_full: I64
    refusals: dict[str, I64]
    max_secret_age: F64  # longest time keys derived from one full IKE stayed in use
    max_chain_bytes: I64  # most bytes protected under one chain
    max_age_at_use: F64  # oldest cached credential a resumption was allowed to use
    max_bytes_at_use: I64  # most bytes already under a chain when it was resumed again
    full: B | None = None

    @property
    def n_resumed(self) -> I64:
        return np.int64(self.n_sessions) - self.n_full

    def saving(self) -> F64:
        """Fraction of full IKE exchanges avoided."""
        if self.n_sessions == 0:
            return np.zeros(len(self.policies))
        return (self.n_resumed / self.n_sessions).astype(np.float64)


def _limits(policies: Sequence[Policy]) -> dict[str, npt.NDArray[np.float64] | I64]:
    def f(name: str) -> F64:
        return np.array(
            [_INF if getattr(p, name) is None else float(getattr(p, name)) for p in policies]
        )

    def i(name: str) -> I64:
        return np.array(
            [_IMAX if getattr(p, name) is None else int(getattr(p, name)) for p in policies],
            dtype=np.int64,
        )

    return {
        "max_chain_age": f("max_chain_age"), "clocked": f("clocked"),
        "established": f("established"), "data": i("data"), "idle": f("idle"),
        "max_resumptions": i("max_resumptions"),
    }


def sweep(trace: Trace, policies: Sequence[Policy], keep_full: bool = False) -> SweepResult:
    """Replay ``trace`` under every policy (capacity must be None: see :func:`run`)."""
    if any(p.capacity is not None for p in policies):
        raise ValueError("capacity needs global order: use run() / replay_reference()")
    pols = list(policies)
    L, N = len(pols), len(trace)
    lim = _limits(pols)
    active = {
        k: bool(np.any(v < (_IMAX if v.dtype == np.int64 else _INF))) for k, v in lim.items()
    }
    n_full = np.zeros(L, dtype=np.int64)
    reasons = {r: np.zeros(L, dtype=np.int64) for r in REASONS}
    max_age = np.zeros(L)
    max_bytes = np.zeros(L, dtype=np.int64)
    max_use = np.zeros(L)
    max_buse = np.zeros(L, dtype=np.int64)
    full_out = np.zeros((N, L), dtype=bool) if keep_full else None
    if N == 0:
        return SweepResult(
            pols, 0, n_full, reasons, max_age, max_bytes, max_use, max_buse, full_out
        )

    order = trace.user_order()
    u = trace.user[order].astype(np.int64)
    counts = np.bincount(u)
    first = np.cumsum(counts) - counts
    visit = np.arange(N) - first[u]
    by_count = np.argsort(-counts, kind="stable")
    pos = np.empty_like(by_count)
    pos[by_count] = np.arange(len(by_count))
    layout = np.lexsort((pos[u], visit))  # step-major, then user position
    src = order[layout]  # input index of each laid-out session
    t_all = trace.start[src]
    e_all = trace.end[src]
    d_all = e_all - t_all
    b_all = trace.nbytes[src]
    # previous session's end of the same user = last_used_at (see replay model)
    prev_end = np.zeros(N)
    sorted_by_user_end = trace.end[order]
    prev_sorted = np.concatenate(([0.0], sorted_by_user_end[:-1]))
    prev_end = prev_sorted[layout]
    active_per_step = np.bincount(visit)
    U = int(active_per_step[0])

    full_at = np.zeros((U, L))
    est = np.zeros((U, L))
    byt = np.zeros((U, L), dtype=np.int64)
    nres = np.zeros((U, L), dtype=np.int64)

    lo = 0
    for k, n in enumerate(active_per_step.tolist()):
        hi = lo + n
        t = t_all[lo:hi, None]
        d = d_all[lo:hi, None]
        b = b_all[lo:hi, None]
        if k == 0:
            full = np.ones((n, L), dtype=bool)
            reasons[NO_RECORD] += n
        else:
            age = t - full_at[:n]
            refused = np.zeros((n, L), dtype=bool)
            checks: list[tuple[str, B]] = []
            if active["max_chain_age"]:
                checks.append((Refusal.CHAIN_AGE.value, age >= lim["max_chain_age"]))
            if active["clocked"]:
                checks.append((Refusal.CLOCKED.value, age >= lim["clocked"]))
            if active["established"]:
                checks.append((Refusal.ESTABLISHED.value, est[:n] >= lim["established"]))
            if active["data"]:
                checks.append((Refusal.DATA.value, byt[:n] >= lim["data"]))
            if active["idle"]:
                idle = (t - prev_end[lo:hi, None]) >= lim["idle"]
                checks.append((Refusal.IDLE.value, idle))
            if active["max_resumptions"]:
                checks.append((Refusal.RESUMPTIONS.value, nres[:n] >= lim["max_resumptions"]))
            for name, hit in checks:
                new = hit & ~refused
                reasons[name] += new.sum(axis=0)
                refused |= hit
            full = refused
        n_full += full.sum(axis=0)
        if k:
            np.maximum(max_buse, np.where(full, 0, byt[:n]).max(axis=0), out=max_buse)
        fa = np.where(full, t, full_at[:n])
        full_at[:n] = fa
        est[:n] = np.where(full, 0.0, est[:n]) + d
        byt[:n] = np.where(full, 0, byt[:n]) + b
        if active["max_resumptions"]:
            nres[:n] = np.where(full, 0, nres[:n] + 1)
        np.maximum(max_age, (e_all[lo:hi, None] - fa).max(axis=0), out=max_age)
        np.maximum(max_use, (t - fa).max(axis=0), out=max_use)
        np.maximum(max_bytes, byt[:n].max(axis=0), out=max_bytes)
        if full_out is not None:
            full_out[src[lo:hi]] = full
        lo = hi
    return SweepResult(pols, N, n_full, reasons, max_age, max_bytes, max_use, max_buse, full_out)


def run(trace: Trace, policies: Sequence[Policy], keep_full: bool = False) -> SweepResult:
    """Like :func:`sweep`, but policies with a capacity go through the reference loop."""
    pols = list(policies)
    plain = [i for i, p in enumerate(pols) if p.capacity is None]
    res = sweep(trace, [pols[i] for i in plain], keep_full)
    L = len(pols)
    out = SweepResult(
        pols, len(trace), np.zeros(L, dtype=np.int64),
        {r: np.zeros(L, dtype=np.int64) for r in REASONS}, np.zeros(L),
        np.zeros(L, dtype=np.int64), np.zeros(L), np.zeros(L, dtype=np.int64),
        np.zeros((len(trace), L), dtype=bool) if keep_full else None,
    )
    for j, i in enumerate(plain):
        out.n_full[i] = res.n_full[j]
        for reason in REASONS:
            out.refusals[reason][i] = res.refusals[reason][j]
        out.max_secret_age[i] = res.max_secret_age[j]
        out.max_chain_bytes[i] = res.max_chain_bytes[j]
        out.max_age_at_use[i] = res.max_age_at_use[j]
        out.max_bytes_at_use[i] = res.max_bytes_at_use[j]
        if out.full is not None and res.full is not None:
            out.full[:, i] = res.full[:, j]
    for i, p in enumerate(pols):
        if p.capacity is None:
            continue
        ref = replay_reference(trace, p)
        out.n_full[i] = ref.n_full
        for name, c in ref.refusals.items():
            out.refusals[name][i] = c
        if len(trace):
            out.max_secret_age[i] = float((trace.end - ref.chain_start).max())
            out.max_chain_bytes[i] = int(ref.chain_bytes.max())
            out.max_age_at_use[i] = float((trace.start - ref.chain_start).max())
            before = np.where(ref.full, 0, ref.chain_bytes - trace.nbytes)
            out.max_bytes_at_use[i] = int(before.max())
        if out.full is not None:
            out.full[:, i] = ref.full
    return out
