"""PNG figures for the report (matplotlib, headless Agg backend).

savings.png mirrors Figure 6 of the 2007 study: share of connections that still need a
full IKE exchange, against the lifetime, one curve per policy kind (time lifetimes on
one panel, data lifetimes on the other, both log-scaled), dashed with rekeying.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from analysis import metrics
from analysis.analyze import Analysis

_COLORS = {"clocked": "tab:blue", "established": "tab:orange", "data": "tab:green"}


def _savings(a: Analysis, out: Path) -> Path:
    fig, (ax_t, ax_d) = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    n = max(1, len(a.trace))
    for kind, res in a.sweeps.items():
        ax = ax_d if kind == "data" else ax_t
        x = a.lifetimes[kind] / (1e6 if kind == "data" else 3600.0)
        ax.plot(x, 100.0 * res.n_full / n, color=_COLORS[kind], label=kind, lw=2)
        rk = a.sweeps_rekey.get(kind)
        if rk is not None and rk.n_sessions:
            ax.plot(x, 100.0 * rk.n_full / rk.n_sessions, color=_COLORS[kind], ls="--", lw=1,
                    label=f"{kind}, rekey every {a.rekey / 3600 if a.rekey else 0:g} h "
                    "(% of exchanges)")
    for ax, xl in ((ax_t, "lifetime (hours)"), (ax_d, "data lifetime (MB)")):
        ax.set_xscale("log")
        ax.set_xlabel(xl)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    ax_t.set_ylabel("full IKE exchanges (% of connections)")
    ax_t.set_ylim(0, 105)
    fig.suptitle(f"Full IKE exchanges left with a resumption cache ({len(a.trace):,} sessions)")
    fig.tight_layout()
    path = out / "savings.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _per_day(a: Analysis, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(9, 3.5))
    t = a.trace
    if len(t):
        day = np.floor((t.start - t.start.min()) / 86400.0).astype(int)
        counts = np.bincount(day[~t.rekey])
        ax.bar(np.arange(len(counts)), counts, color="tab:blue")
    ax.set_xlabel("day of trace")
    ax.set_ylabel("connections")
    ax.set_title("Connections per day")
    fig.tight_layout()
    path = out / "connections_per_day.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _distributions(a: Analysis, out: Path) -> Path:
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(13, 3.8))
    t = a.trace
    if len(t):
        d = np.maximum(t.duration, 1.0) / 60.0
        ax1.hist(d, bins=np.geomspace(d.min(), d.max() * 1.01 + 1e-9, 50), color="tab:blue")
        b = np.maximum(t.nbytes, 1) / 1e6
        ax2.hist(b, bins=np.geomspace(b.min(), b.max() * 1.01 + 1e-9, 50), color="tab:green")
        v = metrics.sessions_per_user(t)
        v = v[v > 0]
        ax3.hist(v, bins=np.unique(np.geomspace(1, v.max() + 1, 40).round()), color="tab:orange")
    for ax, title, xl in (
        (ax1, "Session duration", "minutes"), (ax2, "Session volume (in+out)", "MB"),
        (ax3, "Visits per user", "sessions in trace"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel(xl)
    ax1.set_ylabel("count")
    fig.tight_layout()
    path = out / "distributions.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _occupancy(a: Analysis, out: Path) -> Path | None:
    occ = a.occupancy
    if occ is None or not len(occ.times):
        return None
    fig, ax = plt.subplots(figsize=(9, 3.5))
    days = (occ.times - occ.times[0]) / 86400.0
    ax.plot(days, occ.records, color="tab:purple")
    ax.set_xlabel("day of trace")
    ax.set_ylabel("cached records")
    rb = float(occ.record_bytes)

    def to_mb(r: Any) -> Any:
        return r * rb / 1e6

    def from_mb(m: Any) -> Any:
        return m * 1e6 / rb

    sec = ax.secondary_yaxis("right", functions=(to_mb, from_mb))
    sec.set_ylabel(f"MB (at {occ.record_bytes} B/record)")
    ax.set_title("Cache occupancy under the recommended policy")
    fig.tight_layout()
    path = out / "occupancy.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_all(a: Analysis, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [_savings(a, out), _per_day(a, out), _distributions(a, out)]
    occ = _occupancy(a, out)
    if occ is not None:
        paths.append(occ)
    return paths
