"""Calibrated synthetic traces reproducing Table II of the 2007 study (seeded).

The study replayed 30 days of a campus VPN.  Table II gives, per population:

============  ===========  ======  ==============  ==========  ===========
population    connections  users   mean duration   mean in     mean out
============  ===========  ======  ==============  ==========  ===========
wireless         149,564   11,250       1.05 h       3.09 MB     6.91 MB
remote           241,291   15,579       3.14 h       8.52 MB    20.82 MB
============  ===========  ======  ==============  ==========  ===========

How the generator is built and calibrated:

* visits per user: every user has at least one; the rest of the connections are shared
  out by a multinomial draw over log-normal user weights (sigma 1.5: a few heavy users,
  many occasional ones).  Connection and user counts are therefore exact.
* durations: log-normal (sigma 1.8); a user's sessions are laid end to end over the 30
  days with uniformly random idle gaps (users busier than 90% of the period have their
  sessions shortened), then time is warped by a diurnal/weekly intensity (office hours
  busy, nights and weekends quiet) so connections per day and per minute look like a
  real gateway's.  The warp changes durations, so the log-normal scale is calibrated by
  fixed-point iteration on the measured mean (same seed, same draws, only the scale moves).
* bytes: duration times a log-normal rate (sigma 1.2; out correlated with in), then scaled
  so the mean matches Table II.

How close it comes: counts exact; mean bytes within rounding; mean duration within 1%
(``tests/analysis/test_synth.py`` asserts 2% at scale 0.1 and reports the figures).  The
study does not publish distributions or per-user statistics, so shapes beyond the means
(sigmas, diurnal profile) are our assumptions, stated here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.trace import F64, Trace

DAY = 86400.0


@dataclass(frozen=True)
class Profile:
    name: str
    connections: int
    users: int
    mean_duration_s: float
    mean_in: float
    mean_out: float
    days: int = 30


PROFILES = {
    "wireless": Profile("wireless", 149_564, 11_250, 1.05 * 3600, 3.09e6, 6.91e6),
    "remote": Profile("remote", 241_291, 15_579, 3.14 * 3600, 8.52e6, 20.82e6),
}

_HOURLY = np.array(
    [0.15, 0.1, 0.08, 0.07, 0.07, 0.1, 0.25, 0.6, 1.2, 1.6, 1.7, 1.6,
     1.4, 1.6, 1.7, 1.6, 1.4, 1.1, 0.9, 0.9, 0.85, 0.7, 0.45, 0.25]
)
_WEEKDAY = np.array([1.0, 1.05, 1.05, 1.0, 0.9, 0.45, 0.4])
ORIGIN = 1_167_609_600.0  # 2007-01-01T00:00:00Z, a Monday


def _warp(days: int) -> tuple[F64, F64]:
    """Cumulative diurnal/weekly intensity at hour knots, scaled to the period's length."""
    w = np.tile(_HOURLY, days) * np.repeat(_WEEKDAY[np.arange(days) % 7], 24)
    raw = np.concatenate(([0.0], np.cumsum(w)))
    cdf: F64 = (raw / raw[-1] * (days * DAY)).astype(np.float64)
    knots: F64 = np.arange(days * 24 + 1, dtype=np.float64) * 3600.0
    return cdf, knots


def generate(
    profile: str | Profile = "wireless",
    seed: int = 0,
    scale: float = 1.0,
    *,
    duration_sigma: float = 1.8,
    rate_sigma: float = 1.2,
    user_sigma: float = 1.5,
) -> Trace:
    """A seeded synthetic trace; ``scale`` shrinks users and connections alike."""
    p = PROFILES[profile] if isinstance(profile, str) else profile
    n_users = max(1, round(p.users * scale))
    n_conn = max(n_users, round(p.connections * scale))
    span = p.days * DAY
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(0.0, user_sigma, n_users)
    counts = 1 + rng.multinomial(n_conn - n_users, weights / weights.sum())
    user = np.repeat(np.arange(n_users, dtype=np.int32), counts)
    z_dur = rng.standard_normal(n_conn)
    gaps_raw = rng.exponential(1.0, n_conn + n_users)  # c+1 gaps per user
    z_rate = rng.standard_normal(n_conn)
    z_out = rng.standard_normal(n_conn)
    offset_u = np.cumsum(counts) - counts
    cdf, knots = _warp(p.days)
    sigma = duration_sigma

    def build(mean_target: float) -> tuple[F64, F64]:
        mu = np.log(mean_target) - sigma**2 / 2
        dur = np.exp(mu + sigma * z_dur)
        busy = np.add.reduceat(dur, offset_u)
        shrink = np.minimum(1.0, 0.9 * span / busy)
        dur = dur * shrink[user]
        idle = span - busy * shrink
        # c+1 gaps per user, normalised to the user's idle time (Dirichlet(1,...,1))
        g_user = np.repeat(np.arange(n_users), counts + 1)
        g_off = np.cumsum(counts + 1) - (counts + 1)
        gsum = np.add.reduceat(gaps_raw, g_off)
        gaps = gaps_raw / gsum[g_user] * idle[g_user]
        keep = np.ones(len(gaps), dtype=bool)
        keep[g_off + counts] = False  # drop each user's trailing gap
        lead = gaps[keep]
        step = lead + dur
        csum = np.cumsum(step)
        base = np.repeat(csum[offset_u] - step[offset_u], counts)
        start_u = csum - step + lead - base
        end_u = start_u + dur
        # inverse of the cumulative intensity: busy hours get more of the sessions
        start: F64 = ORIGIN + np.interp(start_u, cdf, knots)
        end: F64 = np.maximum(ORIGIN + np.interp(end_u, cdf, knots), start)
        return start, end

    scale_d = p.mean_duration_s
    for _ in range(6):
        start, end = build(scale_d)
        measured = float((end - start).mean())
        scale_d *= p.mean_duration_s / measured
    start, end = build(scale_d)
    dur = end - start
    rate_in = np.exp(rate_sigma * z_rate)
    rate_out = rate_in * np.exp(0.5 * z_out)
    b_in = dur * rate_in
    b_out = dur * rate_out
    b_in = np.rint(b_in * (p.mean_in / b_in.mean())).astype(np.int64)
    b_out = np.rint(b_out * (p.mean_out / b_out.mean())).astype(np.int64)
    names = tuple(f"{p.name[0]}{i:06d}" for i in range(n_users))
    # integer microseconds, on whole milliseconds (what write_csv's three decimals hold)
    start_us = np.rint(start * 1e3).astype(np.int64) * 1000
    end_us = np.maximum(np.rint(end * 1e3).astype(np.int64) * 1000, start_us)
    return Trace.from_columns(user, start_us, end_us, b_in, b_out, names)


def write_csv(trace: Trace, path: str) -> int:
    """Write a trace in the generic CSV format the analyzer reads back (times to the
    millisecond, exactly as generated)."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("user,start,end,bytes_in,bytes_out\n")
        names = trace.user_names
        for u, s, e, bi, bo in zip(
            trace.user.tolist(), trace.start.tolist(), trace.end.tolist(),
            trace.bytes_in.tolist(), trace.bytes_out.tolist(), strict=True,
        ):
            fh.write(f"{names[u]},{s // 1_000_000}.{s % 1_000_000 // 1000:03d},"
                     f"{e // 1_000_000}.{e % 1_000_000 // 1000:03d},{bi},{bo}\n")
    return len(trace)
