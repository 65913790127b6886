"""From sweeps to a decision: candidate policies within exposure limits, Pareto table, best.

Operators state what they accept (oldest cached secret a resumption may use, most bytes
under one chain); every candidate carries those limits as hard caps (``max_chain_age``,
``data``), so whatever the replay says, the policy pasted into the server cannot exceed
them.  Among candidates we keep the Pareto front of (savings up, measured secret age at
use down, measured bytes under one chain down) and recommend the one that saves most.
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


def default_lifetimes(kind: str, n: int = 40) -> F64:
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
    pareto: bool = False


def rows(kind: str, lifetimes: F64, res: SweepResult) -> list[Row]:
    sav = res.saving()
    return [
        Row(kind, float(v), p, float(sav[i]), int(res.n_full[i]), int(res.n_resumed[i]),
            float(res.max_age_at_use[i]), int(res.max_chain_bytes[i]))
        for i, (v, p) in enumerate(zip(lifetimes.tolist(), res.policies, strict=True))
    ]


def pareto(all_rows: list[Row]) -> list[Row]:
    """Rows no other row beats on savings, secret age and chain bytes at once."""
    out: list[Row] = []
    for r in all_rows:
        dominated = any(
            o.saving >= r.saving
            and o.max_age_at_use <= r.max_age_at_use
            and o.max_chain_bytes <= r.max_chain_bytes
            and (o.saving, -o.max_age_at_use, -o.max_chain_bytes)
            != (r.saving, -r.max_age_at_use, -r.max_chain_bytes)
            for o in all_rows
        )
        if not dominated and all(o.policy != r.policy for o in out):
            out.append(Row(**{**r.__dict__, "pareto": True}))
    out.sort(key=lambda r: (-r.saving, r.max_age_at_use, r.max_chain_bytes))
    return out


def best(all_rows: list[Row]) -> Row | None:
    if not all_rows:
        return None
    return min(all_rows, key=lambda r: (-r.saving, r.max_age_at_use, r.max_chain_bytes))
