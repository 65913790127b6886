"""Terminal report (rich tables) for an :class:`Analysis`."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table

from analysis.analyze import Analysis, summary
from analysis.logs import ReadReport
from store.policy import format_duration


def _dur(s: float) -> str:
    if s >= 86400:
        return f"{s / 86400:.1f} d"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 60:.0f} min"


def _bytes(b: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= size:
            return f"{b / size:.1f} {unit}"
    return f"{b:.0f} B"


def _life(kind: str, v: float) -> str:
    return _bytes(v) if kind == "data" else format_duration(round(v))


def print_report(a: Analysis, read: ReadReport | None, console: Console) -> None:
    s = summary(a.trace)
    if read is not None:
        t = Table(title="Inputs")
        t.add_column("file")
        t.add_column("format")
        for path, fmt in read.files.items():
            t.add_row(path, fmt)
        console.print(t)
        st = read.assembly
        console.print(
            f"sessions: {sum(read.sessions.values()):,} ({read.incomplete:,} incomplete: start or "
            f"stop missing)  problems: {read.issue_count:,}  repeated stops: "
            f"{st.repeated_stops:,}  merged starts: {st.repeated_starts:,}"
        )
        for issue in read.issues[:10]:
            console.print(f"  [yellow]{issue}[/]")
        if read.issue_count > 10:
            console.print(f"  ... {read.issue_count - 10:,} more (see --json)")
    if not s["sessions"]:
        console.print("[bold red]no sessions to replay[/]")
        return
    first = datetime.fromtimestamp(s["first"], UTC).strftime("%Y-%m-%d %H:%M")
    t = Table(title="Trace (compare with Table II of the 2007 study)")
    for col in ("sessions", "users", "days", "from", "mean duration", "mean in", "mean out",
                "visits/user p50/p90/max"):
        t.add_column(col, justify="right")
    v = s["visits_per_user"]
    t.add_row(f"{s['sessions']:,}", f"{s['users']:,}", f"{s['days']:.1f}", first,
              f"{s['mean_duration_h']:.2f} h", f"{s['mean_bytes_in_mb']:.2f} MB",
              f"{s['mean_bytes_out_mb']:.2f} MB", f"{v[0]:.0f} / {v[1]:.0f} / {v[3]:.0f}")
    console.print(t)

    t = Table(title="Full IKE exchanges left, by lifetime (no cache = 100%)")
    t.add_column("kind")
    for kind in a.sweeps:
        vals = a.lifetimes[kind]
        picks = sorted({0, len(vals) // 4, len(vals) // 2, 3 * len(vals) // 4, len(vals) - 1})
        res = a.sweeps[kind]
        rk = a.sweeps_rekey.get(kind)
        cells = []
        for i in picks:
            cell = f"{_life(kind, float(vals[i]))}: {100 * res.n_full[i] / len(a.trace):.0f}%"
            if rk is not None and rk.n_sessions:
                cell += f" ({100 * rk.n_full[i] / rk.n_sessions:.0f}% w/ rekey)"
            cells.append(cell)
        t.add_row(kind, " | ".join(cells))
    console.print(t)

    t = Table(title="Selected policies")
    for col in ("policy", "full IKE", "saved", "peak full/min warm (no cache)",
                "per-user full p50/p90",
                "peak cache", "oldest secret used", "bytes at reuse"):
        t.add_column(col, justify="right")
    for sel in a.selected:
        q = sel["per_user_full_quantiles"]
        t.add_row(
            sel["label"], f"{sel['full']:,}", f"{100 * sel['saving']:.1f}%",
            f"{sel['peak_full_per_min_warm']} ({sel['peak_full_per_min_warm_no_cache']})",
            f"{q[0]:.0f} / {q[1]:.0f}",
            f"{sel['peak_records']:,} rec, {_bytes(sel['peak_cache_bytes'])}",
            _dur(sel["max_age_at_use_s"]), _bytes(sel["max_bytes_at_use"]),
        )
    console.print(t)

    t = Table(title="Pareto front (savings vs exposure)")
    for col in ("kind", "lifetime", "saved", "oldest secret used", "bytes at reuse",
                "max bytes/chain"):
        t.add_column(col, justify="right")
    for r in a.front[:15]:
        t.add_row(r.kind, _life(r.kind, r.lifetime), f"{100 * r.saving:.1f}%",
                  _dur(r.max_age_at_use), _bytes(r.max_bytes_at_use), _bytes(r.max_chain_bytes))
    console.print(t)
    for name, rows_ in a.limit_sweeps.items():
        t = Table(title=f"Recommended policy with {name} varied")
        for col in ("value", "saved", "full IKE", "oldest secret used", "bytes at reuse"):
            t.add_column(col, justify="right")
        for lr in rows_:
            v = lr["value"]
            shown = ("none" if v is None else str(v) if name in ("max_resumptions", "capacity")
                     else format_duration(float(v)))
            t.add_row(shown, f"{100 * lr['saving']:.1f}%", f"{lr['full']:,}",
                      _dur(lr["max_age_at_use_s"]), _bytes(lr["max_bytes_at_use"]))
        console.print(t)
    if "capacity" not in a.limit_sweeps and a.best is not None:
        console.print("(capacity sweep skipped: trace too large for the reference LRU loop)")
    if a.best is not None:
        console.print("[bold]Recommended policy[/] (paste into the server config):")
        console.print(a.best.policy.to_toml(), markup=False, highlight=False)
