"""From sweeps to a decision: candidate policies within exposure limits, Pareto table, best.

Operators state what they accept (oldest cached secret a resumption may use, most bytes
under one chain); every candidate carries those limits as hard caps (``max_chain_age``,
``data``), so whatever the replay says, the policy pasted into the server cannot exceed
them.  Among candidates we keep the Pareto front of (savings up; measured secret age at
use down; measured bytes already under a chain when it is resumed, down) and recommend
the one that saves most.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.sweep import SweepResult
from analysis.trace import F64
from store.policy import Policy

KINDS = ("clocked", "established", "data")
DEFAULT_CHAIN_AGE = 7 * 86400.0


@dataclass(frozen=True)
class Limits:
    max_secret_age: float | None = None
    max_chain_bytes: int | None = None
    idle: float | None = None
    capacity: int | None = None
    max_resumptions: int | None = None


_NICE_TIMES = (
    [m * 60.0 for m in (5, 10, 15, 20, 30, 45)]
    + [h * 3600.0 for h in (1, 1.5, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20)]
    + [d * 86400.0 for d in (1, 1.5, 2, 3, 4, 5, 6, 7)]
)
_NICE_SIZES = [m * 10.0**e for e in range(6, 10) for m in (1, 2, 5)] + [1e10]


def default_lifetimes(kind: str, n: int | None = None) -> F64:
    """Round values an operator would configure; ``n`` asks for a log-spaced grid instead."""
    if n is None:
        return np.array(_NICE_SIZES if kind == "data" else _NICE_TIMES)
    if kind == "data":
        return np.geomspace(1e6, 1e10, n).round()
    return np.geomspace(300.0, 7 * 86400.0, n).round()


def candidate(kind: str, value: float, limits: Limits) -> Policy:
    age = DEFAULT_CHAIN_AGE
    if limits.max_secret_age is not None:
        age = min(age, limits.max_secret_age)
    base = Policy(
        max_chain_age=age, idle=limits.idle, capacity=limits.capacity,
        max_resumptions=limits.max_resumptions, data=limits.max_chain_bytes,
    )
    if kind == "data" and limits.max_chain_bytes is not None:
        value = min(value, limits.max_chain_bytes)
    if kind in ("clocked",) and value > age:
        value = age
    return base.with_lifetime(kind, value)


@dataclass(frozen=True)
class Row:
    kind: str
    lifetime: float
    policy: Policy
    saving: float
    full: int
    resumed: int
    max_age_at_use: float
    max_chain_bytes: int
    max_bytes_at_use: int
    pareto: bool = False


def rows(kind: str, lifetimes: F64, res: SweepResult) -> list[Row]:
    sav = res.saving()
    return [
        Row(kind, float(v), p, float(sav[i]), int(res.n_full[i]), int(res.n_resumed[i]),
            float(res.max_age_at_use[i]), int(res.max_chain_bytes[i]),
            int(res.max_bytes_at_use[i]))
        for i, (v, p) in enumerate(zip(lifetimes.tolist(), res.policies, strict=True))
    ]


def pareto(all_rows: list[Row]) -> list[Row]:
    """Rows no other row beats on savings, secret age and chain bytes at once.

    Among rows with the same outcome only the first (smallest lifetime of its kind, the
    sweeps being in increasing order) is kept: a longer lifetime that saves nothing more
    only widens what the configuration allows.
    """
    out: list[Row] = []
    outcomes: set[tuple[float, float, int]] = set()
    for r in all_rows:
        key = (r.saving, r.max_age_at_use, r.max_bytes_at_use)
        if key in outcomes:
            continue
        dominated = any(
            o.saving >= r.saving
            and o.max_age_at_use <= r.max_age_at_use
            and o.max_bytes_at_use <= r.max_bytes_at_use
            and (o.saving, o.max_age_at_use, o.max_bytes_at_use) != key
            for o in all_rows
        )
        if not dominated:
            outcomes.add(key)
            out.append(Row(**{**r.__dict__, "pareto": True}))
    out.sort(key=lambda r: (-r.saving, r.max_age_at_use, r.max_bytes_at_use))
    return out


def best(all_rows: list[Row]) -> Row | None:
    """Most savings; then least exposure; then the earliest (smallest) lifetime."""
    if not all_rows:
        return None
    ranked = sorted(
        enumerate(all_rows),
        key=lambda ir: (-ir[1].saving, ir[1].max_age_at_use, ir[1].max_bytes_at_use, ir[0]),
    )
    return ranked[0][1]
