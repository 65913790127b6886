"""PNG figures for the report (matplotlib, headless Agg backend).

savings.png mirrors Figure 6 of the 2007 study: share of connections that still need a
full IKE exchange against the lifetime, one curve per policy kind with its 95% interval
over users (time lifetimes left, data lifetimes right, both log-scaled); the bottom row
is the same with IKE rekeying inside long sessions, as a share of all key exchanges (a
different denominator, so its own axis).  The maximum (recommended) and the knee are
marked, and so are the study's own Figure 6 statements, for reference.  Every title
states the limits in force.  Count axes have integer ticks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator, NullLocator

from analysis import metrics
from analysis.analyze import STUDY_POINTS, Analysis
from analysis.trace import US
from store.policy import format_duration

_COLORS = {"clocked": "tab:blue", "established": "tab:orange", "data": "tab:green"}
DPI = 100


def _x(kind: str, v: Any) -> Any:
    return np.asarray(v, dtype=np.float64) / (1e6 if kind == "data" else 3600.0)


def _savings(a: Analysis, out: Path) -> Path:
    with_rekey = bool(a.sweeps_rekey)
    nrows = 2 if with_rekey else 1
    fig, axes = plt.subplots(nrows, 2, figsize=(11, 4.2 * nrows), squeeze=False)
    n = max(1, len(a.trace))
    every = format_duration(a.rekey / US) if a.rekey else ""
    for row, sweeps, cis, denom_label in (
        (0, a.sweeps, a.ci, "% of connections"),
        (1, a.sweeps_rekey, a.ci_rekey, f"% of key exchanges,\nIKE rekeyed every {every}"),
    ):
        if row >= nrows:
            continue
        for kind, res in sweeps.items():
            ax = axes[row][1 if kind == "data" else 0]
            x = _x(kind, a.lifetimes[kind])
            total = max(1, res.n_sessions if row else n)
            ax.plot(x, 100.0 * res.n_full / total, color=_COLORS[kind], label=kind, lw=2)
            ci = cis.get(kind)
            if ci is not None:
                ax.fill_between(x, 100 * (1 - ci[1]), 100 * (1 - ci[0]), color=_COLORS[kind],
                                alpha=0.2, lw=0)
            k = a.knees.get(kind, -1)
            if row == 0 and k >= 0:
                ax.plot(x[k], 100.0 * res.n_full[k] / total, "o", color=_COLORS[kind], ms=6,
                        mfc="white", mew=2)
        for j, (ax, xl) in enumerate(((axes[row][0], "lifetime (hours)"),
                                      (axes[row][1], "data lifetime (MB)"))):
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(NullLocator())  # minor log ticks: most of the time
            ax.set_xlabel(xl)
            ax.set_ylim(0, 105)
            ax.grid(True, which="major", alpha=0.3)
            if j == 0:
                ax.set_ylabel(f"full IKE exchanges left\n({denom_label})")
    ax_t, ax_d = axes[0]
    for row_, label, marker, color in ((a.best, "maximum (recommended)", "*", "black"),
                                       (a.knee, "knee", "D", "tab:red")):
        if row_ is None:
            continue
        ax = ax_d if row_.kind == "data" else ax_t
        ax.plot(_x(row_.kind, row_.lifetime), 100 * (1 - row_.saving), marker, color=color,
                ms=13 if marker == "*" else 8, label=f"{label}: {row_.kind}", zorder=5)
    for i, (kind, value, statement, share) in enumerate(STUDY_POINTS):
        ax = ax_d if kind == "data" else ax_t
        xv = _x(kind, value)
        ax.errorbar(xv, 100 * share, yerr=[[0], [0]] if "about" in statement else [[8], [0]],
                    fmt="_", color="gray", ms=16, mew=2, capsize=0, uplims="below" in statement,
                    zorder=4)
        what = (f"{value / 1e6:g} MB" if kind == "data" else f"{kind} "
                f"{format_duration(value)}")
        ax.annotate(f"study, {what}: {statement}", (xv, 100 * share),
                    textcoords="offset points", xytext=(6, 5 if i % 2 else -11), fontsize=7,
                    color="dimgray")
    for ax in axes.flat:
        ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(f"Full IKE exchanges left with a resumption cache ({len(a.trace):,} sessions; "
                 f"band: 95% over users; o: knee of a kind)\n{a.limits.describe()}",
                 fontsize=10)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.08 if nrows == 2 else 0.12,
                        top=0.9 if nrows == 2 else 0.83, hspace=0.3, wspace=0.12)
    path = out / "savings.png"
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _per_day(a: Analysis, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 3.5))
    t = a.trace
    if len(t):
        t0, step = int(t.start.min()), 1 << 18
        n_days = (int(t.start.max()) - t0) // (86400 * US) + 1
        if n_days <= 100_000:
            counts = np.zeros(n_days, dtype=np.int64)
            for i in range(0, len(t), step):  # in slices: no full-length temporaries
                day = (t.start[i : i + step] - t0) // (86400 * US)
                counts += np.bincount(day[~t.rekey[i : i + step]], minlength=n_days)
            ax.bar(np.arange(n_days), counts, color="tab:blue", width=1.0)
        else:  # a trace spanning centuries: only the days that have connections
            d, c = np.unique((t.start[~t.rekey] - t0) // (86400 * US), return_counts=True)
            ax.plot(d, c, ".", color="tab:blue")
    ax.set_xlabel("day of trace")
    ax.set_ylabel("connections")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Connections per day\n{a.limits.describe()}", fontsize=10)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.14, top=0.84)
    path = out / "connections_per_day.png"
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _log_hist(lo: Any, hi: Any, unit: int, n_bins: int) -> tuple[Any, Any]:
    """Histogram of ``hi - lo`` (or ``hi``) in ``unit``, log-spaced bins, values below one
    unit counted in the first bin; computed in slices (no full-length float copies)."""
    n = len(hi)
    step = 1 << 18

    def values(i: int) -> Any:
        x = hi[i : i + step] if lo is None else hi[i : i + step] - lo[i : i + step]
        return np.maximum(x / unit, 1.0)

    vmin = min(float(values(i).min()) for i in range(0, n, step))
    vmax = max(float(values(i).max()) for i in range(0, n, step))
    edges = np.geomspace(vmin, vmax * 1.01 + 1e-9, n_bins)
    counts = sum(np.histogram(values(i), bins=edges)[0] for i in range(0, n, step))
    return counts, edges


def _distributions(a: Analysis, out: Path) -> Path:
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 3.8))
    t = a.trace
    if len(t):
        v = metrics.sessions_per_user(t)
        v = v[v > 0]
        for ax, (counts, edges), color in (
            (ax1, _log_hist(t.start, t.end, 60 * US, 50), "tab:blue"),
            (ax2, _log_hist(None, t.nbytes, 10**6, 50), "tab:green"),
            (ax3, np.histogram(v, bins=np.unique(np.geomspace(1, v.max() + 1, 40).round())),
             "tab:orange"),
        ):
            ax.stairs(counts, edges, fill=True, color=color)
    for ax, title, xl in (
        (ax1, "Session duration", "minutes"), (ax2, "Session volume (in+out)", "MB"),
        (ax3, "Visits per user", "sessions in trace"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_title(title)
        ax.set_xlabel(xl)
        ax.set_ylabel("sessions" if ax is not ax3 else "users")
    fig.suptitle(f"{len(t):,} sessions; {a.limits.describe()}", fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.14, top=0.84, wspace=0.25)
    path = out / "distributions.png"
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _occupancy(a: Analysis, out: Path) -> Path | None:
    occ = a.occupancy
    if occ is None or not len(occ.times):
        return None
    fig, ax = plt.subplots(figsize=(9, 3.5))
    days = (occ.times - occ.times[0]) / (86400 * US)
    ax.plot(days, occ.records, color="tab:purple")
    ax.set_xlabel("day of trace")
    ax.set_ylabel("cached records")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    rb = float(occ.record_bytes)

    def to_mb(r: Any) -> Any:
        return r * rb / 1e6

    def from_mb(m: Any) -> Any:
        return m * 1e6 / rb

    sec = ax.secondary_yaxis("right", functions=(to_mb, from_mb))
    sec.set_ylabel(f"MB (at {occ.record_bytes} B/record)")
    name = "" if a.best is None else (
        f" ({a.best.kind} {format_duration(a.best.lifetime)})" if a.best.kind != "data"
        else f" (data {a.best.lifetime / 1e6:g} MB)")
    ax.set_title(f"Cache occupancy under the recommended policy{name}\n{a.limits.describe()}",
                 fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.9, bottom=0.14, top=0.84)
    path = out / "occupancy.png"
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def write_trace_plots(a: Analysis, out: Path) -> list[Path]:
    """The plots that need only the trace (the CLI draws them while the sweeps run)."""
    out.mkdir(parents=True, exist_ok=True)
    return [_per_day(a, out), _distributions(a, out)]


def write_result_plots(a: Analysis, out: Path) -> list[Path]:
    """The plots of the replay's results."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [_savings(a, out)]
    occ = _occupancy(a, out)
    if occ is not None:
        paths.append(occ)
    return paths


def write_all(a: Analysis, out: Path) -> list[Path]:
    return write_result_plots(a, out) + write_trace_plots(a, out)
