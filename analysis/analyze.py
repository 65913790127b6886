"""The analysis pipeline: trace in, every figure the report shows out (JSON-ready).

Kept apart from printing and plotting so tests, the CLI and benchmarks share one code
path, and so ``--json`` holds exactly the numbers the tables and plots were made from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from analysis import metrics
from analysis.recommend import KINDS, Limits, Row, best, candidate, default_lifetimes, pareto, rows
from analysis.sweep import SweepResult, run
from analysis.trace import F64, Trace, split_rekeys
from store.policy import Policy, format_duration, format_size

# Points the 2007 study reports (Figure 6 discussion), replayed for comparison.
STUDY_POINTS: tuple[tuple[str, float], ...] = (
    ("established", 2 * 3600.0), ("data", 20e6), ("data", 50e6), ("clocked", 8 * 3600.0),
)


@dataclass
class Analysis:
    trace: Trace
    limits: Limits
    rekey: float | None
    lifetimes: dict[str, F64] = field(default_factory=dict)
    sweeps: dict[str, SweepResult] = field(default_factory=dict)
    sweeps_rekey: dict[str, SweepResult] = field(default_factory=dict)
    table: list[Row] = field(default_factory=list)
    front: list[Row] = field(default_factory=list)
    best: Row | None = None
    selected: list[dict[str, Any]] = field(default_factory=list)
    occupancy: metrics.Occupancy | None = None
    rekeyed_segments: int = 0
    limit_sweeps: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _label(kind: str, v: float) -> str:
    return format_size(int(v)) if kind == "data" else format_duration(v)


def summary(trace: Trace) -> dict[str, Any]:
    n = len(trace)
    if n == 0:
        return {"sessions": 0, "users": 0}
    visits = metrics.sessions_per_user(trace)
    return {
        "sessions": n,
        "users": int((visits > 0).sum()),
        "incomplete": int((~trace.complete).sum()),
        "first": float(trace.start.min()),
        "last": float(trace.end.max()),
        "days": float((trace.end.max() - trace.start.min()) / 86400.0),
        "mean_duration_h": float(trace.duration.mean() / 3600.0),
        "mean_bytes_in_mb": float(trace.bytes_in.mean() / 1e6),
        "mean_bytes_out_mb": float(trace.bytes_out.mean() / 1e6),
        "visits_per_user": metrics.quantiles(visits[visits > 0]),
        "duration_quantiles_s": metrics.quantiles(trace.duration),
        "bytes_quantiles": metrics.quantiles(trace.nbytes),
    }


def analyze(
    trace: Trace,
    limits: Limits | None = None,
    *,
    rekey: float | None = 4 * 3600.0,
    n_lifetimes: int | None = None,
    record_bytes: int = metrics.RECORD_BYTES,
    progress: Callable[[str], None] | None = None,
    capacity_max_sessions: int = 300_000,
) -> Analysis:
    """Sweeps, Pareto table, recommendation and its neighbourhood.

    Capacity (LRU) is replayed by the reference loop, so its sweep is skipped for traces
    above ``capacity_max_sessions`` (the report says so).
    """
    lim = limits or Limits()
    a = Analysis(trace, lim, rekey)
    tick = progress or (lambda _msg: None)
    seg = split_rekeys(trace, rekey) if rekey else None
    if seg is not None:
        a.rekeyed_segments = len(seg) - len(trace)
    for kind in KINDS:
        values = default_lifetimes(kind, n_lifetimes)
        pols = [candidate(kind, float(v), lim) for v in values]
        a.lifetimes[kind] = values
        a.sweeps[kind] = run(trace, pols)
        tick(f"sweep {kind}")
        if seg is not None:
            a.sweeps_rekey[kind] = run(seg, pols)
            tick(f"sweep {kind} with rekeying")
        a.table.extend(rows(kind, values, a.sweeps[kind]))
    a.front = pareto(a.table)
    a.best = best(a.table)
    picks: list[tuple[str, str, Policy]] = [
        (f"study: {k} {_label(k, v)}", k, candidate(k, v, lim)) for k, v in STUDY_POINTS
    ]
    if a.best is not None:
        picks.insert(0, ("recommended", a.best.kind, a.best.policy))
    res = run(trace, [p for _, _, p in picks], keep_full=True)
    if res.full is None:  # keep_full=True always fills it
        raise RuntimeError("sweep did not keep per-session flags")
    base_peak = metrics.peak_per_minute(trace)
    warm = metrics.warm_up_end(trace) if len(trace) else 0.0
    base_peak_warm = metrics.peak_per_minute(trace, after=warm)
    for i, (label, kind, pol) in enumerate(picks):
        full = res.full[:, i]
        per_user = metrics.per_user_full(trace, full)
        visits = metrics.sessions_per_user(trace)
        occ = metrics.occupancy(trace, full, pol, record_bytes=record_bytes)
        if i == 0 and a.best is not None:
            a.occupancy = occ
        a.selected.append({
            "label": label, "kind": kind, "policy": pol.to_mapping(),
            "full": int(res.n_full[i]), "resumed": int(res.n_resumed[i]),
            "saving": float(res.saving()[i]),
            "peak_full_per_min": metrics.peak_per_minute(trace, full),
            "peak_full_per_min_no_cache": base_peak,
            "peak_full_per_min_warm": metrics.peak_per_minute(trace, full, after=warm),
            "peak_full_per_min_warm_no_cache": base_peak_warm,
            "warm_after": warm,
            "per_user_full_quantiles": metrics.quantiles(per_user[visits > 0]),
            "users_never_resuming": int(((per_user == visits) & (visits > 0)).sum()),
            "peak_records": occ.peak, "peak_cache_bytes": occ.peak_bytes,
            "max_age_at_use_s": float(res.max_age_at_use[i]),
            "max_chain_bytes": int(res.max_chain_bytes[i]),
            "max_bytes_at_use": int(res.max_bytes_at_use[i]),
            "refusals": {k: int(v[i]) for k, v in res.refusals.items() if v[i]},
        })
    tick("selected policies")
    if a.best is not None:
        a.limit_sweeps = limit_sweeps(trace, a.best.policy, lim, capacity_max_sessions)
        peak = a.occupancy.peak if a.occupancy is not None else 0
        a.selected[0]["per_user_full_histogram"] = _histogram(
            metrics.per_user_full(trace, res.full[:, 0]), metrics.sessions_per_user(trace)
        )
        if peak and len(trace) <= capacity_max_sessions:
            caps = sorted({max(1, round(peak * f)) for f in CAPACITY_FRACTIONS})
            a.limit_sweeps["capacity"] = _limit_rows(
                trace, [replace(a.best.policy, capacity=c) for c in caps], caps
            )
        tick("limits around the recommended policy")
    return a


# Other limits swept around the recommended policy (never beyond the operator's limits).
LIMIT_VALUES: dict[str, list[float | None]] = {
    "max_chain_age": [3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0, 2 * 86400.0, 7 * 86400.0],
    "idle": [300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0, None],
    "max_resumptions": [0, 1, 2, 5, 10, 20, 50, 100, None],
}
CAPACITY_FRACTIONS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0)


def _limit_rows(trace: Trace, pols: list[Policy], values: list[Any]) -> list[dict[str, Any]]:
    res = run(trace, pols)
    sav = res.saving()
    return [
        {"value": v, "saving": float(sav[i]), "full": int(res.n_full[i]),
         "max_age_at_use_s": float(res.max_age_at_use[i]),
         "max_bytes_at_use": int(res.max_bytes_at_use[i])}
        for i, v in enumerate(values)
    ]


def limit_sweeps(
    trace: Trace, base: Policy, lim: Limits, capacity_max_sessions: int
) -> dict[str, list[dict[str, Any]]]:
    """Savings of ``base`` with each other limit varied (capacity: see :func:`analyze`)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for name, values in LIMIT_VALUES.items():
        vals = list(values)
        if name == "max_chain_age" and lim.max_secret_age is not None:
            vals = [v for v in vals if v is not None and v <= lim.max_secret_age]
        if not vals:
            continue
        conv: Callable[[float], float | int] = int if name == "max_resumptions" else float
        changes: list[dict[str, Any]] = [{name: None if v is None else conv(v)} for v in vals]
        pols = [replace(base, **c) for c in changes]
        out[name] = _limit_rows(trace, pols, vals)
    return out


def _histogram(per_user: Any, visits: Any, top: int = 50) -> dict[str, Any]:
    counts = np.bincount(per_user[visits > 0].astype(np.int64))
    return {"full_ike_per_user": list(range(min(top, len(counts)))),
            "users": counts[:top].tolist(), "users_above": int(counts[top:].sum())}


def _row_json(r: Row) -> dict[str, Any]:
    return {
        "kind": r.kind, "lifetime": r.lifetime, "policy": r.policy.to_mapping(),
        "saving": r.saving, "full": r.full, "resumed": r.resumed,
        "max_age_at_use_s": r.max_age_at_use, "max_chain_bytes": r.max_chain_bytes,
        "max_bytes_at_use": r.max_bytes_at_use,
    }


def to_json(a: Analysis) -> dict[str, Any]:
    curves: dict[str, Any] = {}
    for kind, res in a.sweeps.items():
        rk = a.sweeps_rekey.get(kind)
        curves[kind] = {
            "lifetimes": a.lifetimes[kind].tolist(),
            "full": res.n_full.tolist(),
            "saving": res.saving().tolist(),
            "max_secret_age_s": res.max_secret_age.tolist(),
            "max_age_at_use_s": res.max_age_at_use.tolist(),
            "max_chain_bytes": res.max_chain_bytes.tolist(),
            "max_bytes_at_use": res.max_bytes_at_use.tolist(),
            "refusals": {k: v.tolist() for k, v in res.refusals.items()},
            "with_rekey": None if rk is None else {
                "segments": rk.n_sessions, "full": rk.n_full.tolist(),
                "saving": rk.saving().tolist(),
            },
        }
    lim = a.limits
    return {
        "summary": summary(a.trace),
        "limits": {
            "max_secret_age_s": lim.max_secret_age, "max_chain_bytes": lim.max_chain_bytes,
            "idle_s": lim.idle, "capacity": lim.capacity,
        },
        "rekey_interval_s": a.rekey,
        "rekey_extra_exchanges_without_cache": a.rekeyed_segments,
        "curves": curves,
        "pareto": [_row_json(r) for r in a.front],
        "recommended": None if a.best is None else {
            **_row_json(a.best), "toml": a.best.policy.to_toml(),
        },
        "selected": a.selected,
        "limit_sweeps": a.limit_sweeps,
        "occupancy": None if a.occupancy is None else {
            "times": a.occupancy.times.tolist(), "records": a.occupancy.records.tolist(),
            "record_bytes": a.occupancy.record_bytes, "peak": a.occupancy.peak,
            "peak_bytes": a.occupancy.peak_bytes,
        },
    }

