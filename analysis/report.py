"""Terminal report (rich tables) for an :class:`Analysis`, and the input account's JSON."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from analysis.analyze import STUDY_POINTS, Analysis, summary
from analysis.logs import ReadReport
from analysis.recommend import Row
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


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(ci: Any) -> str:
    if ci is None:
        return ""
    lo, hi = ci
    return f"{100 * lo:.1f}..{100 * hi:.1f}%"


def inputs_json(read: ReadReport, max_line: int) -> dict[str, Any]:
    return {
        "files": {p: a.to_json() for p, a in read.accounts.items()},
        "formats": read.files,
        "sessions_by_format": dict(read.sessions),
        "incomplete": read.incomplete, "problems": read.issue_count,
        "problem_examples": [str(i) for i in read.issues[:100]],
        "assembly": asdict(read.assembly),
        "max_line_chars": max_line,
    }


def print_inputs(read: ReadReport, console: Console) -> None:
    """Every file's account: lines read, used, skipped, problems; sessions."""
    t = Table(title="Inputs: what became of every line")
    for col in ("file", "format", "lines", "used", "skipped", "problems", "sessions",
                "incomplete"):
        t.add_column(col, justify="left" if col in ("file", "format") else "right")
    for path, a in read.accounts.items():
        t.add_row(path, "+".join(a.formats) or "unknown", f"{a.lines:,}", f"{a.used:,}",
                  f"{sum(a.skipped.values()):,}", f"{sum(a.problems.values()):,}",
                  f"{a.sessions:,}", f"{a.incomplete:,}")
    console.print(t)
    for path, a in read.accounts.items():
        details = [f"{n:,} {why}" for why, n in a.skipped.most_common()]
        details += [f"{n:,} problem: {why}" for why, n in a.problems.most_common()]
        details += [f"{n:,} {what}" for what, n in a.notes.items()]
        if a.unexplained:
            details.append(f"{a.unexplained:,} UNEXPLAINED (a bug: please report)")
        if not a.sessions and a.expected:
            details += [f"no sessions: {fmt} sessions come from {exp}"
                        for fmt, exp in a.expected.items()]
        if details:
            console.print(f"[bold]{path}[/]:", highlight=False)
            for d in details:
                console.print(f"  {d}", markup=False, highlight=False)
    st = read.assembly
    console.print(
        f"sessions: {sum(read.sessions.values()):,} ({read.incomplete:,} incomplete: start or "
        f"stop missing)  problems: {read.issue_count:,}  repeated stops: "
        f"{st.repeated_stops:,}  merged starts: {st.repeated_starts:,}", highlight=False,
    )
    for issue in read.issues[:10]:
        console.print(f"  {issue}", markup=False, highlight=False, style="yellow")
    if read.issue_count > 10:
        console.print(f"  ... {read.issue_count - 10:,} more (see --json)")


def _row_cells(r: Row) -> list[str]:
    return [r.kind, _life(r.kind, r.lifetime), _pct(r.saving), _ci(r.ci),
            _dur(r.max_age_at_use), _bytes(r.max_bytes_at_use), _bytes(r.max_chain_bytes)]


def print_report(a: Analysis, console: Console) -> None:
    s = summary(a.trace)
    console.print(f"[bold]{a.limits.describe()}[/]  (rekey every "
                  f"{format_duration(a.rekey / 1e6) if a.rekey else 'never'}; knee = least "
                  f"exposed candidate saving >= {100 * a.settings.knee_fraction:g}% of the "
                  "maximum's saving)", highlight=False)
    for w in a.warnings:
        console.print(f"[bold yellow]warning:[/] {w}", highlight=False)
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

    t = Table(title="Full IKE exchanges left, by lifetime (no cache = 100%; * = knee of the "
              "kind; with rekeying: % of all key exchanges)")
    t.add_column("kind")
    for kind in a.sweeps:
        vals = a.lifetimes[kind]
        k = a.knees.get(kind, -1)
        picks = sorted({0, len(vals) // 4, len(vals) // 2, 3 * len(vals) // 4, len(vals) - 1}
                       | ({k} if k >= 0 else set()))
        res = a.sweeps[kind]
        rk = a.sweeps_rekey.get(kind)
        cells = []
        for i in picks:
            mark = "*" if i == k else ""
            cell = f"{mark}{_life(kind, float(vals[i]))}: {100 * res.n_full[i] / len(a.trace):.0f}%"
            if rk is not None and rk.n_sessions:
                cell += f" ({100 * rk.n_full[i] / rk.n_sessions:.0f}% w/ rekey)"
            cells.append(cell)
        t.add_row(kind, " | ".join(cells))
    console.print(t)

    t = Table(title="Selected policies (saved: share of connections resumed; interval: "
              "95% over users)")
    for col in ("policy", "full IKE", "saved", "interval", "peak full/min warm (no cache)",
                "per-user full p50/p90", "peak cache", "oldest secret used", "bytes at reuse"):
        t.add_column(col, justify="right")
    for sel in a.selected:
        q = sel["per_user_full_quantiles"]
        t.add_row(
            sel["label"], f"{sel['full']:,}", _pct(sel["saving"]), _ci(sel["saving_ci"]),
            f"{sel['peak_full_per_min_warm']} ({sel['peak_full_per_min_warm_no_cache']})",
            f"{q[0]:.0f} / {q[1]:.0f}",
            f"{sel['peak_records']:,} rec, {_bytes(sel['peak_cache_bytes'])}",
            _dur(sel["max_age_at_use_s"]), _bytes(sel["max_bytes_at_use"]),
        )
    console.print(t)
    study = {f"study: {k} {_life(k, v)}": s_ for k, v, s_, _x in STUDY_POINTS}
    shown = [f"{label.removeprefix('study: ')} leaves {100 * (1 - sel['saving']):.1f}% "
             f"(study: {study[label]})"
             for sel in a.selected for label in [sel["label"]] if label in study]
    if shown:
        console.print("Figure 6 of the study: " + "; ".join(shown), highlight=False)

    t = Table(title="Pareto front (savings vs exposure)")
    for col in ("kind", "lifetime", "saved", "interval", "oldest secret used",
                "bytes at reuse", "max bytes/chain"):
        t.add_column(col, justify="right")
    for r in a.front[:15]:
        t.add_row(*_row_cells(r))
    console.print(t)
    for name, rows_ in a.limit_sweeps.items():
        t = Table(title=f"Recommended policy with {name} varied")
        for col in ("value", "saved", "full IKE", "oldest secret used", "bytes at reuse"):
            t.add_column(col, justify="right")
        for lr in rows_:
            v = lr["value"]
            shown_v = ("none" if v is None else f"{v:,}" if name in ("max_resumptions",
                                                                    "capacity")
                       else format_duration(float(v)))
            t.add_row(shown_v, _pct(lr["saving"]), f"{lr['full']:,}",
                      _dur(lr["max_age_at_use_s"]), _bytes(lr["max_bytes_at_use"]))
        console.print(t)
    if a.best is not None:
        console.print(f"[bold]Maximum (recommended)[/]: {a.best.kind} "
                      f"{_life(a.best.kind, a.best.lifetime)} saves {_pct(a.best.saving)} "
                      f"({_ci(a.best.ci)}); paste into the server config:", highlight=False)
        console.print(a.best.policy.to_toml(), markup=False, highlight=False)
    if a.knee is not None and a.best is not None and a.knee.policy != a.best.policy:
        console.print(f"[bold]Knee[/]: {a.knee.kind} {_life(a.knee.kind, a.knee.lifetime)} "
                      f"saves {_pct(a.knee.saving)} ({_ci(a.knee.ci)}) with secrets at most "
                      f"{_dur(a.knee.max_age_at_use)} old at reuse:", highlight=False)
        console.print(a.knee.policy.to_toml(), markup=False, highlight=False)
