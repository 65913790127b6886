"""From sweeps to a decision: candidate policies within exposure limits, Pareto table, the
best and the knee, and how sure we are (bootstrap over users).

Operators state what they accept (oldest cached secret a resumption may use, most bytes
under one chain, idle expiry, capacity); every candidate carries those limits as hard
caps, so whatever the replay says, the policy pasted into the server cannot exceed them.
The one limit with a default is the secret age (7 days, :data:`DEFAULT_MAX_SECRET_AGE`):
it is applied unless the operator says ``--max-secret-age none``, and every report, the
JSON and the plot titles state it (:meth:`Limits.in_force`).

Among candidates we keep the Pareto front of (savings up; measured secret age at use
down; measured bytes already under a chain when it is resumed, down).  The *maximum* is
the candidate that saves most; the *knee* the least exposed candidate that saves at
least :data:`KNEE_FRACTION` of what the maximum saves (without exposure limits the
maximum is simply the longest lifetime: the knee is the decision that costs little).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from analysis.sweep import SweepResult
from analysis.trace import F64, I64
from store.policy import Policy, format_duration, format_size

KINDS = ("clocked", "established", "data")
DEFAULT_MAX_SECRET_AGE = 7 * 86400.0
KNEE_FRACTION = 0.95
BOOTSTRAP_RESAMPLES = 200
CI_LEVEL = 0.95
# Below these the figures are reported with a warning (stated in every report).
MIN_SESSIONS = 1000
MIN_USERS = 100
MAX_INCOMPLETE_SHARE = 0.2
MAX_CI_WIDTH = 0.1


@dataclass(frozen=True)
class Limits:
    """Exposure limits every candidate carries (None: no such limit).

    ``sources`` says where each value came from (``default``/``option``), for the report.
    """

    max_secret_age: float | None = DEFAULT_MAX_SECRET_AGE
    max_chain_bytes: int | None = None
    idle: float | None = None
    capacity: int | None = None
    max_resumptions: int | None = None
    sources: dict[str, str] = field(default_factory=lambda: {"max_secret_age": "default"})

    def in_force(self) -> dict[str, Any]:
        """Every policy limit, its value and where it came from (JSON-ready)."""
        out: dict[str, Any] = {}
        for name, unit in (("max_secret_age", "s"), ("max_chain_bytes", "bytes"),
                           ("idle", "s"), ("capacity", "records"),
                           ("max_resumptions", "resumptions")):
            v = getattr(self, name)
            out[name] = {"value": v, "unit": unit,
                         "source": self.sources.get(name, "option" if v is not None else
                                                    "not set")}
        return out

    def describe(self) -> str:
        """One line for terminal headers and plot titles."""
        parts = [f"secret age <= {format_duration(self.max_secret_age)}"
                 if self.max_secret_age is not None else "secret age: no limit"]
        if self.max_chain_bytes is not None:
            parts.append(f"chain bytes <= {format_size(self.max_chain_bytes)}")
        if self.idle is not None:
            parts.append(f"idle < {format_duration(self.idle)}")
        if self.capacity is not None:
            parts.append(f"capacity {self.capacity:,}")
        if self.max_resumptions is not None:
            parts.append(f"<= {self.max_resumptions} resumptions")
        return "limits: " + ", ".join(parts)


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
    """The policy of lifetime ``kind=value`` under the operator's limits."""
    age = limits.max_secret_age
    base = Policy(
        max_chain_age=age, idle=limits.idle, capacity=limits.capacity,
        max_resumptions=limits.max_resumptions, data=limits.max_chain_bytes,
    )
    if kind == "data" and limits.max_chain_bytes is not None:
        value = min(value, limits.max_chain_bytes)
    if kind == "clocked" and age is not None and value > age:
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
    max_age_at_use: float  # seconds
    max_chain_bytes: int
    max_bytes_at_use: int
    ci: tuple[float, float] | None = None
    pareto: bool = False


def rows(kind: str, lifetimes: F64, res: SweepResult,
         ci: npt.NDArray[np.float64] | None = None) -> list[Row]:
    sav = res.saving()
    return [
        Row(kind, float(v), p, float(sav[i]), int(res.n_full[i]), int(res.n_resumed[i]),
            int(res.max_age_at_use[i]) / 1e6, int(res.max_chain_bytes[i]),
            int(res.max_bytes_at_use[i]),
            None if ci is None else (float(ci[0, i]), float(ci[1, i])))
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
    keys = np.array([(r.saving, r.max_age_at_use, r.max_bytes_at_use) for r in all_rows]) \
        if all_rows else np.zeros((0, 3))
    for i, r in enumerate(all_rows):
        key = (r.saving, r.max_age_at_use, r.max_bytes_at_use)
        if key in outcomes:
            continue
        k = keys[i]
        better_eq = (keys[:, 0] >= k[0]) & (keys[:, 1] <= k[1]) & (keys[:, 2] <= k[2])
        strictly = (keys[:, 0] != k[0]) | (keys[:, 1] != k[1]) | (keys[:, 2] != k[2])
        if not (better_eq & strictly).any():
            outcomes.add(key)
            out.append(Row(**{**r.__dict__, "pareto": True}))
    out.sort(key=lambda r: (-r.saving, r.max_age_at_use, r.max_bytes_at_use))
    return out


def best(all_rows: list[Row]) -> Row | None:
    """The maximum: most savings; then least exposure; then the earliest (smallest) lifetime."""
    if not all_rows:
        return None
    ranked = sorted(
        enumerate(all_rows),
        key=lambda ir: (-ir[1].saving, ir[1].max_age_at_use, ir[1].max_bytes_at_use, ir[0]),
    )
    return ranked[0][1]


def knee(all_rows: list[Row], fraction: float = KNEE_FRACTION) -> Row | None:
    """The least exposed row saving at least ``fraction`` of the maximum's saving
    (exposure: oldest secret used, then bytes at reuse, then the smaller lifetime)."""
    top = best(all_rows)
    if top is None:
        return None
    floor = fraction * top.saving
    ok = [(i, r) for i, r in enumerate(all_rows) if r.saving >= floor]
    return min(ok, key=lambda ir: (ir[1].max_age_at_use, ir[1].max_bytes_at_use,
                                   ir[1].lifetime, ir[0]))[1]


def knee_of_kind(lifetimes: F64, saving: F64, fraction: float = KNEE_FRACTION) -> int:
    """Index of the smallest lifetime of one sweep within ``fraction`` of its best."""
    if not len(saving):
        return -1
    return int(np.flatnonzero(saving >= fraction * saving.max())[0])


# Poisson(1) by table lookup on 16-bit uniforms (P(k) quantized to 1/65536; the tail
# beyond 8 has probability 1e-6 and is folded into 8): a fast, seeded resampling weight.
_POISSON_TABLE = np.searchsorted(
    np.cumsum([np.exp(-1.0) / np.prod(np.arange(1, k + 1)) for k in range(9)]) * 65536,
    np.arange(65536) + 0.5,
).clip(0, 8).astype(np.float32)


_WBLOCK = 1 << 14


class Bootstrap:
    """Seeded Poisson(1) weights of every user in every resample, drawn once per analysis
    (uint8, users x resamples bytes) so every policy is judged on the same resamples."""

    def __init__(self, visits: I64, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
                 level: float = CI_LEVEL) -> None:
        self.visits = visits
        self.resamples = resamples
        self.level = level
        n = len(visits)
        self.weights = np.empty((resamples, n), dtype=np.uint8)
        for b0 in range(0, n, _WBLOCK):
            b1 = min(n, b0 + _WBLOCK)
            rng = np.random.default_rng([seed, b0])
            draw = rng.integers(0, 65536, size=(resamples, b1 - b0), dtype=np.uint16)
            self.weights[:, b0:b1] = _POISSON_TABLE_U8[draw]
        self.sessions = self._weighted(visits[:, None])[:, 0]

    def with_visits(self, visits: I64) -> Bootstrap:
        """The same resamples (same users, same weights) for another count of sessions
        per user (the trace cut at rekeys)."""
        other = Bootstrap.__new__(Bootstrap)
        other.visits, other.resamples, other.level = visits, self.resamples, self.level
        other.weights = self.weights
        other.sessions = other._weighted(visits[:, None])[:, 0]
        return other

    def _weighted(self, per_user: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
        """Every resample's weighted sum of ``per_user`` (users x columns), float64."""
        n, cols = len(self.visits), per_user.shape[1]
        out = np.zeros((self.resamples, cols))
        step = min(n, _WBLOCK)
        # float32 blocks in buffers made once (BLAS speed without fresh pages per block)
        w = np.empty((self.resamples, step), dtype=np.float32)
        x = np.empty((step, cols), dtype=np.float32)
        part = np.empty((self.resamples, cols), dtype=np.float32)
        for u0 in range(0, n, step):
            m = min(n, u0 + step) - u0
            np.copyto(w[:, :m], self.weights[:, u0 : u0 + m])
            np.copyto(x[:m], per_user[u0 : u0 + m])
            np.matmul(w[:, :m], x[:m], out=part)
            out += part
        return out

    def ci(self, user_full: npt.NDArray[np.int32]) -> npt.NDArray[np.float64] | None:
        """Percentile interval of every policy's saving, shape (2, policies)."""
        if self.resamples <= 0 or int((self.visits > 0).sum()) < 2:
            return None
        saving = 1.0 - self._weighted(user_full) / np.maximum(self.sessions, 1.0)[:, None]
        lo, hi = (1 - self.level) / 2, 1 - (1 - self.level) / 2
        out: npt.NDArray[np.float64] = np.quantile(saving, [lo, hi], axis=0)
        return out


_POISSON_TABLE_U8 = _POISSON_TABLE.astype(np.uint8)


def bootstrap_ci(
    user_full: npt.NDArray[np.int32], visits: I64, resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CI_LEVEL, seed: int = 0,
) -> npt.NDArray[np.float64] | None:
    """Percentile interval of every policy's saving, resampling *users* (their sessions
    are not independent of each other): Poisson(1) weights per user and resample, the
    usual large-sample stand-in for drawing users with replacement.  Shape (2, policies).
    """
    if resamples <= 0:
        return None
    return Bootstrap(visits, resamples, seed, level).ci(user_full)
