"""The analysis pipeline: trace in, every figure the report shows out (JSON-ready).

Kept apart from printing and plotting so tests, the CLI and benchmarks share one code
path, and so ``--json`` holds exactly the numbers the tables and plots were made from.
Times inside are integer microseconds; the JSON gives seconds (``*_s``) computed from
them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from analysis import metrics
from analysis.recommend import (
    BOOTSTRAP_RESAMPLES,
    CI_LEVEL,
    KINDS,
    KNEE_FRACTION,
    MAX_CI_WIDTH,
    MAX_INCOMPLETE_SHARE,
    MIN_SESSIONS,
    MIN_USERS,
    Bootstrap,
    Limits,
    Row,
    best,
    candidate,
    default_lifetimes,
    knee,
    knee_of_kind,
    pareto,
    rows,
)
from analysis.sweep import SweepResult, layout, stack_distances, sweep
from analysis.trace import F64, US, Trace, split_rekeys
from store.policy import Policy, format_duration, format_size

# The 2007 study's Figure 6 statements (share of connections still needing a full IKE),
# replayed for comparison: (kind, lifetime, the study's statement, its value as a share).
STUDY_POINTS: tuple[tuple[str, float, str, float], ...] = (
    ("clocked", 86400.0, "below 50%", 0.50),
    ("established", 2 * 3600.0, "below 20%", 0.20),
    ("data", 20e6, "about 25% (wireless)", 0.25),
    ("data", 50e6, "about 25% (remote)", 0.25),
)


THREADS = min(2, os.cpu_count() or 1)


@dataclass(frozen=True)
class Settings:
    """How the analysis runs (all stated in the JSON)."""

    rekey_us: int | None = 4 * 3600 * US
    n_lifetimes: int | None = None
    record_bytes: int = metrics.RECORD_BYTES
    knee_fraction: float = KNEE_FRACTION
    resamples: int = BOOTSTRAP_RESAMPLES
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "rekey_interval_s": None if self.rekey_us is None else self.rekey_us / US,
            "lifetimes_per_sweep": self.n_lifetimes or "round values",
            "record_bytes": self.record_bytes,
            "knee_fraction": self.knee_fraction,
            "bootstrap": {"resamples": self.resamples, "level": CI_LEVEL, "unit": "user",
                          "weights": "Poisson(1)", "seed": self.seed},
            "warn_below": {"sessions": MIN_SESSIONS, "users": MIN_USERS,
                           "complete_share": 1 - MAX_INCOMPLETE_SHARE,
                           "ci_width_above": MAX_CI_WIDTH},
            "lifetime_bound": "exclusive: a credential is refused once a measured value "
                              "reaches its limit (age, connected time, bytes, idle time, "
                              "resumptions)",
            "units": "times in integer microseconds (sub-us digits truncated), bytes "
                     "integers; chain sums saturate at 2**63-2",
            "reader": _reader_limits(),
        }


def _reader_limits() -> dict[str, Any]:
    from analysis.logs import DETECT_WINDOW, MAX_FORMATS_PER_FILE
    from analysis.parsers.base import Assembler
    from analysis.textin import MAX_LINE

    asm = Assembler()
    return {"max_line_chars": MAX_LINE, "detect_window_lines": DETECT_WINDOW,
            "max_formats_per_file": MAX_FORMATS_PER_FILE,
            "repeat_window_s": asm.merge_window / US,
            "closed_sessions_remembered": asm.max_closed}


@dataclass
class Analysis:
    trace: Trace
    limits: Limits
    settings: Settings
    lifetimes: dict[str, F64] = field(default_factory=dict)
    sweeps: dict[str, SweepResult] = field(default_factory=dict)
    sweeps_rekey: dict[str, SweepResult] = field(default_factory=dict)
    ci: dict[str, npt.NDArray[np.float64] | None] = field(default_factory=dict)
    ci_rekey: dict[str, npt.NDArray[np.float64] | None] = field(default_factory=dict)
    table: list[Row] = field(default_factory=list)
    front: list[Row] = field(default_factory=list)
    best: Row | None = None
    knee: Row | None = None
    knees: dict[str, int] = field(default_factory=dict)
    selected: list[dict[str, Any]] = field(default_factory=list)
    occupancy: metrics.Occupancy | None = None
    rekeyed_segments: int = 0
    limit_sweeps: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def rekey(self) -> int | None:
        return self.settings.rekey_us


def lifetime_label(kind: str, v: float) -> str:
    return format_size(int(v)) if kind == "data" else format_duration(v)


def summary(trace: Trace) -> dict[str, Any]:
    n = len(trace)
    if n == 0:
        return {"sessions": 0, "users": 0, "connections": 0}
    visits = metrics.sessions_per_user(trace)
    first, last = int(trace.start.min()), int(trace.end.max())
    return {
        "sessions": n,
        "connections": trace.connections,
        "users": int((visits > 0).sum()),
        "incomplete": int((~trace.complete).sum()),
        "first": first / US,
        "last": last / US,
        "days": (last - first) / US / 86400.0,
        "mean_duration_h": float(trace.duration.mean()) / US / 3600.0,
        "mean_bytes_in_mb": float(trace.bytes_in.mean() / 1e6),
        "mean_bytes_out_mb": float(trace.bytes_out.mean() / 1e6),
        "visits_per_user": metrics.quantiles(visits[visits > 0]),
        "duration_quantiles_s": [q / US for q in metrics.quantiles(trace.duration)],
        "bytes_quantiles": metrics.quantiles(trace.nbytes),
    }


def _warnings(trace: Trace, a: Analysis) -> list[str]:
    out: list[str] = []
    s = summary(trace)
    if s["sessions"] < MIN_SESSIONS:
        out.append(f"only {s['sessions']:,} sessions (fewer than {MIN_SESSIONS:,}): the "
                   "savings are anecdotes, not estimates")
    if s["users"] < MIN_USERS:
        out.append(f"only {s['users']:,} users (fewer than {MIN_USERS:,}): one user's habits "
                   "can move every figure")
    if s["sessions"] and s.get("incomplete", 0) > MAX_INCOMPLETE_SHARE * s["sessions"]:
        out.append(f"{s['incomplete']:,} of {s['sessions']:,} sessions are incomplete (start "
                   "or stop missing): their durations are guesses")
    for label, row in (("maximum", a.best), ("knee", a.knee)):
        if row is not None and row.ci is not None and row.ci[1] - row.ci[0] > MAX_CI_WIDTH:
            out.append(f"the {label}'s saving is uncertain: {100 * row.ci[0]:.1f}%.."
                       f"{100 * row.ci[1]:.1f}% ({100 * CI_LEVEL:.0f}% interval over users)")
    return out


def analyze(
    trace: Trace,
    limits: Limits | None = None,
    settings: Settings | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    when_lighter: Callable[[], None] | None = None,
) -> Analysis:
    """Sweeps with intervals, Pareto table, maximum and knee, and their neighbourhood.

    ``when_lighter`` is called once the sweeps with rekeying are done and their segments
    freed (from the worker thread): memory is lower from there on, so the CLI starts
    drawing the trace's plots then, beside the remaining sweeps."""
    lim = limits if limits is not None else Limits()
    st = settings if settings is not None else Settings()
    a = Analysis(trace, lim, st)
    tick = progress or (lambda _msg: None)
    seg: Trace | None = (split_rekeys(trace, st.rekey_us, both_directions=False)
                         if st.rekey_us and len(trace) else None)
    if seg is not None:
        a.rekeyed_segments = len(seg) - len(trace)
    visits = metrics.sessions_per_user(trace)
    boot = Bootstrap(visits, st.resamples, st.seed) if st.resamples > 0 and len(trace) else None
    cands = {}
    for kind in KINDS:
        a.lifetimes[kind] = default_lifetimes(kind, st.n_lifetimes)
        cands[kind] = [candidate(kind, float(v), lim) for v in a.lifetimes[kind]]

    held = [seg]  # the segments, released as soon as their sweeps are done
    seg_none = seg is None

    def rekeyed() -> None:
        """The sweeps with rekeying: only full IKE counts and intervals are shown."""
        seg = held[0]
        if seg is None:
            return
        layout(seg)
        seg._cache.pop("user_order", None)  # the layout is all these sweeps need
        boot_seg = None if boot is None else boot.with_visits(metrics.sessions_per_user(seg))
        for kind in KINDS:
            rk = sweep(seg, cands[kind], reasons=False, user_counts=True, figures=False)
            a.sweeps_rekey[kind] = rk
            a.ci_rekey[kind] = _ci(rk, boot_seg)
            tick(f"sweep {kind} with rekeying")
        held.clear()
        held.append(None)
        if when_lighter is not None:
            when_lighter()

    def background() -> None:
        rekeyed()
        if seg_none and when_lighter is not None:
            when_lighter()
        if len(trace):
            stack_distances(trace)  # for the capacity sweep at the end (cached on the trace)

    # numpy releases the GIL inside its loops: the sweeps with rekeying (and the LRU
    # stack distances) run beside the plain sweeps, on the second core
    if len(trace):
        layout(trace)  # the user order both threads need, computed once
    del seg
    pool = ThreadPoolExecutor(max_workers=1) if THREADS > 1 else None
    other = pool.submit(background) if pool is not None else None
    try:
        for kind in KINDS:
            res = sweep(trace, cands[kind], reasons=False, user_counts=True)
            a.sweeps[kind] = res
            a.ci[kind] = _ci(res, boot)
            tick(f"sweep {kind}")
            a.table.extend(rows(kind, a.lifetimes[kind], res, a.ci[kind]))
            a.knees[kind] = knee_of_kind(a.lifetimes[kind], res.saving(), st.knee_fraction)
        a.front = pareto(a.table)
        a.best = best(a.table)
        a.knee = knee(a.table, st.knee_fraction)
        picks: list[tuple[str, str, float, Policy]] = [
            (f"study: {k} {lifetime_label(k, v)}", k, v, candidate(k, v, lim))
            for k, v, _s, _x in STUDY_POINTS
        ]
        if a.knee is not None:
            picks.insert(0, ("knee", a.knee.kind, a.knee.lifetime, a.knee.policy))
        if a.best is not None:
            picks.insert(0, ("maximum (recommended)", a.best.kind, a.best.lifetime, a.best.policy))
        _selected(a, picks, visits, boot)
        tick("selected policies")
        if a.best is not None:
            a.limit_sweeps = limit_sweeps(trace, a.best.policy, lim)
        if other is not None:
            other.result()
        else:
            background()
    finally:
        if pool is not None:
            pool.shutdown(wait=True)
    if a.best is not None:
        peak = a.occupancy.peak if a.occupancy is not None else 0
        if peak:
            caps = sorted({max(1, round(peak * f)) for f in CAPACITY_FRACTIONS})
            a.limit_sweeps["capacity"] = _limit_rows(
                trace, [replace(a.best.policy, capacity=c) for c in caps], caps
            )
    tick("limits around the recommended policy")
    a.warnings = _warnings(trace, a)
    return a


def _ci(res: SweepResult, boot: Bootstrap | None) -> npt.NDArray[np.float64] | None:
    """The interval of every saving of ``res``; its per-user counts are dropped after."""
    if res.user_full is None or boot is None:
        return None
    out = boot.ci(res.user_full)
    res.user_full = None
    return out


def _selected(
    a: Analysis, picks: list[tuple[str, str, float, Policy]], visits: Any,
    boot: Bootstrap | None,
) -> None:
    trace = a.trace
    if not len(trace):
        return
    res = sweep(trace, [p for *_x, p in picks], keep_full=True, user_counts=True)
    if res.full is None or res.user_full is None:
        raise RuntimeError("sweep did not keep per-session flags")
    user_full = res.user_full
    ci = _ci(res, boot)
    base_peak = metrics.peak_per_minute(trace)
    warm = metrics.warm_up_end(trace)
    base_peak_warm = metrics.peak_per_minute(trace, after=warm)
    sav = res.saving()
    for i, (label, kind, value, pol) in enumerate(picks):
        full = res.full[:, i]
        per_user = user_full[:, i].astype(np.int64)
        occ = metrics.occupancy(trace, full, pol, record_bytes=a.settings.record_bytes)
        if i == 0 and a.best is not None:
            a.occupancy = occ
        item: dict[str, Any] = {
            "label": label, "kind": kind, "lifetime": value, "policy": pol.to_mapping(),
            "toml": pol.to_toml(),
            "full": int(res.n_full[i]), "resumed": int(res.n_resumed[i]),
            "saving": float(sav[i]),
            "saving_ci": None if ci is None else [float(ci[0, i]), float(ci[1, i])],
            "peak_full_per_min": metrics.peak_per_minute(trace, full),
            "peak_full_per_min_no_cache": base_peak,
            "peak_full_per_min_warm": metrics.peak_per_minute(trace, full, after=warm),
            "peak_full_per_min_warm_no_cache": base_peak_warm,
            "warm_after": warm / US,
            "per_user_full_quantiles": metrics.quantiles(per_user[visits > 0]),
            "users_never_resuming": int(((per_user == visits) & (visits > 0)).sum()),
            "peak_records": occ.peak, "peak_cache_bytes": occ.peak_bytes,
            "max_age_at_use_s": int(res.max_age_at_use[i]) / US,
            "max_secret_age_s": int(res.max_secret_age[i]) / US,
            "max_chain_bytes": int(res.max_chain_bytes[i]),
            "max_bytes_at_use": int(res.max_bytes_at_use[i]),
            "refusals": {} if res.refusals is None else
            {k: int(v[i]) for k, v in res.refusals.items() if v[i]},
        }
        if label.startswith("maximum"):
            item["per_user_full_histogram"] = _histogram(per_user, visits)
        a.selected.append(item)


# Other limits swept around the recommended policy (never beyond the operator's limits).
LIMIT_VALUES: dict[str, list[float | None]] = {
    "max_chain_age": [3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0, 2 * 86400.0, 7 * 86400.0,
                      None],
    "idle": [300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 86400.0, None],
    "max_resumptions": [0, 1, 2, 5, 10, 20, 50, 100, None],
}
CAPACITY_FRACTIONS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0)


def _limit_rows(trace: Trace, pols: list[Policy], values: list[Any]) -> list[dict[str, Any]]:
    return _rows_of(sweep(trace, pols, reasons=False), pols, values, range(len(pols)))


def _rows_of(res: SweepResult, pols: list[Policy], values: list[Any],
             idx: Any) -> list[dict[str, Any]]:
    sav = res.saving()
    return [
        {"value": v, "saving": float(sav[i]), "full": int(res.n_full[i]),
         "max_age_at_use_s": int(res.max_age_at_use[i]) / US,
         "max_bytes_at_use": int(res.max_bytes_at_use[i]),
         **({"evictions": int(res.evictions[i])} if pols[i].capacity is not None else {})}
        for i, v in zip(idx, values, strict=True)
    ]


def limit_sweeps(trace: Trace, base: Policy, lim: Limits) -> dict[str, list[dict[str, Any]]]:
    """Savings of ``base`` with each other limit varied (capacity: see :func:`analyze`),
    all in one sweep."""
    groups: list[tuple[str, list[Any], list[Policy]]] = []
    for name, values in LIMIT_VALUES.items():
        vals = list(values)
        if name == "max_chain_age" and lim.max_secret_age is not None:
            vals = [v for v in vals if v is not None and v <= lim.max_secret_age]
        if name == "idle" and lim.idle is not None:
            vals = [v for v in vals if v is not None and v <= lim.idle]
        if name == "max_resumptions" and lim.max_resumptions is not None:
            vals = [v for v in vals if v is not None and v <= lim.max_resumptions]
        if not vals:
            continue
        conv: Callable[[float], float | int] = int if name == "max_resumptions" else float
        changes: list[dict[str, Any]] = [{name: None if v is None else conv(v)} for v in vals]
        pols = [replace(base, **c) for c in changes]
        groups.append((name, vals, pols))
    every = [p for _n, _v, pols in groups for p in pols]
    res = sweep(trace, every, reasons=False)
    out: dict[str, list[dict[str, Any]]] = {}
    at = 0
    for name, vals, pols in groups:
        out[name] = _rows_of(res, every, vals, range(at, at + len(pols)))
        at += len(pols)
    return out


def _histogram(per_user: Any, visits: Any, top: int = 50) -> dict[str, Any]:
    counts = np.bincount(per_user[visits > 0].astype(np.int64))
    return {"full_ike_per_user": list(range(min(top, len(counts)))),
            "users": counts[:top].tolist(), "users_above": int(counts[top:].sum())}


def _row_json(r: Row) -> dict[str, Any]:
    return {
        "kind": r.kind, "lifetime": r.lifetime, "policy": r.policy.to_mapping(),
        "saving": r.saving, "saving_ci": None if r.ci is None else list(r.ci),
        "full": r.full, "resumed": r.resumed,
        "max_age_at_use_s": r.max_age_at_use, "max_chain_bytes": r.max_chain_bytes,
        "max_bytes_at_use": r.max_bytes_at_use,
    }


def _ci_json(ci: npt.NDArray[np.float64] | None) -> Any:
    return None if ci is None else {"low": ci[0].tolist(), "high": ci[1].tolist()}


def to_json(a: Analysis) -> dict[str, Any]:
    curves: dict[str, Any] = {}
    for kind, res in a.sweeps.items():
        rk = a.sweeps_rekey.get(kind)
        curves[kind] = {
            "lifetimes": a.lifetimes[kind].tolist(),
            "full": res.n_full.tolist(),
            "saving": res.saving().tolist(),
            "saving_ci": _ci_json(a.ci.get(kind)),
            "knee_index": a.knees.get(kind),
            "max_secret_age_s": (res.max_secret_age / US).tolist(),
            "max_age_at_use_s": (res.max_age_at_use / US).tolist(),
            "max_chain_bytes": res.max_chain_bytes.tolist(),
            "max_bytes_at_use": res.max_bytes_at_use.tolist(),
            "with_rekey": None if rk is None else {
                "key_exchanges": rk.n_sessions, "full": rk.n_full.tolist(),
                "saving": rk.saving().tolist(), "saving_ci": _ci_json(a.ci_rekey.get(kind)),
            },
        }
    rec = None
    if a.best is not None:
        rec = {**_row_json(a.best), "toml": a.best.policy.to_toml()}
    kn = None
    if a.knee is not None:
        kn = {**_row_json(a.knee), "toml": a.knee.policy.to_toml(),
              "fraction_of_maximum": a.settings.knee_fraction}
    return {
        "summary": summary(a.trace),
        "limits": a.limits.in_force(),
        "limits_text": a.limits.describe(),
        "settings": a.settings.to_json(),
        "warnings": a.warnings,
        "rekey_interval_s": None if a.rekey is None else a.rekey / US,
        "rekey_extra_exchanges_without_cache": a.rekeyed_segments,
        "curves": curves,
        "study_points": [{"kind": k, "lifetime": v, "study": s, "study_share": x}
                         for k, v, s, x in STUDY_POINTS],
        "pareto": [_row_json(r) for r in a.front],
        "recommended": rec,
        "knee": kn,
        "selected": a.selected,
        "limit_sweeps": a.limit_sweeps,
        "occupancy": None if a.occupancy is None else {
            "times": (a.occupancy.times / US).tolist(),
            "records": a.occupancy.records.tolist(),
            "record_bytes": a.occupancy.record_bytes, "peak": a.occupancy.peak,
            "peak_bytes": a.occupancy.peak_bytes,
        },
    }
