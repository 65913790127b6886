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
_BLOCK = 1024
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
    est = np.zeros((U, L)) if active["established"] else None
    byt = np.zeros((U, L), dtype=np.int64)
    nres = np.zeros((U, L), dtype=np.int64) if active["max_resumptions"] else None
    checks: list[tuple[str, str]] = [
        (Refusal.CHAIN_AGE.value, "max_chain_age"), (Refusal.CLOCKED.value, "clocked"),
        (Refusal.ESTABLISHED.value, "established"), (Refusal.DATA.value, "data"),
        (Refusal.IDLE.value, "idle"), (Refusal.RESUMPTIONS.value, "max_resumptions"),
    ]
    checks = [(name, lim_name) for name, lim_name in checks if active[lim_name]]

    lo = 0
    for k, n in enumerate(active_per_step.tolist()):
        # row blocks keep the (rows x policies) temporaries in cache
        for r0 in range(0, n, _BLOCK):
            r1 = min(n, r0 + _BLOCK)
            a0, a1 = lo + r0, lo + r1
            t = t_all[a0:a1, None]
            d = d_all[a0:a1, None]
            b = b_all[a0:a1, None]
            e = e_all[a0:a1, None]
            if k == 0:
                m = r1 - r0
                reasons[NO_RECORD] += m
                n_full += m
                full_at[r0:r1] = t
                byt[r0:r1] = b
                if est is not None:
                    est[r0:r1] = d
                np.maximum(max_age, float((e - t).max()), out=max_age)
                np.maximum(max_bytes, int(b.max()), out=max_bytes)
                if full_out is not None:
                    full_out[src[a0:a1]] = True
                continue
            fa_old = full_at[r0:r1]
            age = t - fa_old
            full: B | None = None
            for name, lim_name in checks:
                if lim_name in ("max_chain_age", "clocked"):
                    hit = age >= lim[lim_name]
                elif lim_name == "established" and est is not None:
                    hit = est[r0:r1] >= lim[lim_name]
                elif lim_name == "data":
                    hit = byt[r0:r1] >= lim[lim_name]
                elif lim_name == "idle":
                    hit = (t - prev_end[a0:a1, None]) >= lim[lim_name]
                elif nres is not None:
                    hit = nres[r0:r1] >= lim[lim_name]
                if full is None:
                    reasons[name] += np.count_nonzero(hit, axis=0)
                    full = hit
                else:
                    reasons[name] += np.count_nonzero(hit & ~full, axis=0)
                    full |= hit
            if full is None:
                full = np.zeros(age.shape, dtype=bool)
            n_full += np.count_nonzero(full, axis=0)
            np.maximum(max_use, np.where(full, 0.0, age).max(axis=0), out=max_use)
            bz = np.where(full, 0, byt[r0:r1])
            np.maximum(max_buse, bz.max(axis=0), out=max_buse)
            bz += b
            byt[r0:r1] = bz
            np.maximum(max_bytes, bz.max(axis=0), out=max_bytes)
            fa = np.where(full, t, fa_old)
            full_at[r0:r1] = fa
            np.maximum(max_age, (e - fa).max(axis=0), out=max_age)
            if est is not None:
                est[r0:r1] = np.where(full, 0.0, est[r0:r1]) + d
            if nres is not None:
                nres[r0:r1] = np.where(full, 0, nres[r0:r1] + 1)
            if full_out is not None:
                full_out[src[a0:a1]] = full
        lo += n
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
