"""Subcommands of the ``analysis`` package: ``ikeresume analyze`` and ``ikeresume synth``.

Output contract: the human report goes to stdout (never cut at 80 columns when piped);
with ``--json`` stdout holds exactly one JSON document (also on failure: then it has an
``error`` key) and problem lines go to stderr; progress bars go to stderr, only on a
terminal.  Exit status: 0 with sessions replayed, 1 when no session could be read or
``--strict`` met a bad line (reported as ``file:line: reason``), 2 for bad options.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

#: ``--format`` choices: the keys of :data:`analysis.parsers.detect.FORMATS`, spelled out
#: because importing every parser costs ~70 ms on each ``ikeresume`` start, whatever the
#: subcommand (tests/test_startup.py checks the two stay equal).
FORMAT_NAMES = (
    "asa",
    "csv",
    "fortigate",
    "ise",
    "jsonl",
    "openvpn-log",
    "openvpn-status",
    "paloalto",
    "pulse",
    "radius-detail",
    "swan",
)
NONE_WORDS = ("none", "off", "no")
PIPE_WIDTH = 1000  # columns of the report when stdout is not a terminal (no wrapping)


def register(sub: Any) -> None:
    """Add this package's subcommands to the ``ikeresume`` parser."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser(
        "analyze",
        help="replay VPN session logs through cache policies and recommend one",
        description="Parse VPN session logs (format auto-detected per block of lines), "
        "replay clocked, established and data lifetimes under your exposure limits, and "
        "print every input line's account, the savings with confidence intervals, the "
        "maximum and the knee, exposure, a Pareto table and [policy] tables to paste into "
        "the server config.  Limits accept 'none'.",
        formatter_class=fmt,
    )
    p.add_argument("logs", nargs="+", metavar="LOG", help="log files (gzip/bzip2/xz are fine)")
    p.add_argument("--out", default="analysis-out", help="directory for PNGs and analysis.json")
    p.add_argument("--strict", action="store_true", help="stop at the first unusable line")
    p.add_argument("--json", action="store_true",
                   help="print the JSON report (only it) to stdout; problems to stderr")
    p.add_argument("--format", choices=FORMAT_NAMES, help="skip auto-detection; unset: "
                   "detected per block of lines")
    p.add_argument("--year", type=int, help="year for syslog stamps without one; unset: "
                   "this year, or last year for months still to come")
    p.add_argument("--tz", default="UTC", help="zone for stamps without one (+0200, CET)")
    p.add_argument("--max-secret-age", default="7d",
                   help="exposure limit on every candidate: oldest cached secret a "
                   "resumption may use (e.g. 1d, or none)")
    p.add_argument("--max-chain-bytes", default="none",
                   help="exposure limit: bytes under one chain (e.g. 1GB, or none)")
    p.add_argument("--idle", default="none",
                   help="idle expiry applied to every candidate (e.g. 12h, or none)")
    p.add_argument("--capacity", default="none",
                   help="cache capacity (LRU) for every candidate (records, or none)")
    p.add_argument("--max-resumptions", default="none",
                   help="resumptions allowed per full IKE for every candidate (or none)")
    p.add_argument("--rekey", default="4h", help="IKE rekey interval inside long sessions "
                   "(or none)")
    p.add_argument("--lifetimes", type=int, help="log-spaced lifetimes per sweep; unset: "
                   "26 round durations, 13 round sizes")
    p.add_argument("--knee", type=float, default=0.95,
                   help="knee: the least exposed candidate saving at least this fraction "
                   "of the maximum's saving")
    p.add_argument("--bootstrap", type=int, default=200,
                   help="resamples of users for the confidence intervals (0: none)")
    p.add_argument("--record-bytes", type=int, default=512, help="store bytes per record")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(func=cmd_analyze)

    s = sub.add_parser(
        "synth",
        help="write a synthetic session trace calibrated on the 2007 study (Table II)",
        formatter_class=fmt,
    )
    s.add_argument("--profile", choices=("wireless", "remote"), default="wireless",
                   help="population of the study")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--scale", type=float, default=1.0, help="fraction of users/connections")
    s.add_argument("--out", required=True, help="CSV file to write")
    s.add_argument("--json", action="store_true", help="print the trace summary as JSON")
    s.set_defaults(func=cmd_synth)


def _tz(name: str) -> Any:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from analysis.timeparse import parse_offset

    try:
        return parse_offset(name)
    except ValueError:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown time zone {name!r}") from e


def _missing_analysis_extra(command: str) -> bool:
    """Report (and say so) when the ``analysis`` extra (numpy, matplotlib) is missing."""
    from resume.extras import MissingExtraError, require

    try:
        require("analysis", f"ikeresume {command}")
    except MissingExtraError as e:
        print(f"ikeresume {command}: {e}", file=sys.stderr)
        return True
    return False


def _opt(value: str | None, conv: Any, option: str) -> Any:
    """An option's value, or None for 'none'; ValueError names the option."""
    if value is None or value.strip().lower() in NONE_WORDS:
        return None
    try:
        return conv(value)
    except ValueError as e:
        raise ValueError(f"{option}: {e}") from e


def _count(value: str) -> int:
    v = int(value)
    if v < 0:
        raise ValueError(f"not a count: {value!r}")
    return v


def parse_limits(args: argparse.Namespace) -> Any:
    from analysis.recommend import Limits
    from store.policy import parse_duration, parse_size

    lim = Limits(
        max_secret_age=_opt(args.max_secret_age, parse_duration, "--max-secret-age"),
        max_chain_bytes=_opt(args.max_chain_bytes, parse_size, "--max-chain-bytes"),
        idle=_opt(args.idle, parse_duration, "--idle"),
        capacity=_opt(args.capacity, _count, "--capacity"),
        max_resumptions=_opt(args.max_resumptions, _count, "--max-resumptions"),
        sources={
            name: ("default" if getattr(args, name) == default else "option")
            for name, default in (("max_secret_age", "7d"), ("max_chain_bytes", "none"),
                                  ("idle", "none"), ("capacity", "none"),
                                  ("max_resumptions", "none"))
        },
    )
    return lim


def _return_freed_arrays_to_the_os() -> None:
    """Make glibc serve every allocation of 1 MiB and more by mmap (returned to the OS on
    free).  By default glibc raises that threshold each time such a block is freed, after
    which numpy's freed arrays stay in the heap, fragmented: an analysis then holds the
    peak of every stage at once (about 40 MB more on a million sessions).  Smaller blocks
    (the sweep's per-block temporaries) stay in the heap, reused without system calls."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD; glibc only (ignored elsewhere)
        libc.mallopt(-8, 2)  # M_ARENA_MAX: the analysis threads share two heaps
    except (OSError, AttributeError):
        return


def cmd_analyze(args: argparse.Namespace) -> int:
    import os

    from resume.exitcodes import EXIT_CONFIG

    if _missing_analysis_extra("analyze"):
        return EXIT_CONFIG

    # Our matrix products are small (bootstrap blocks): OpenBLAS's own threads would spin
    # beside the analysis threads for nothing.  Set before numpy is first imported.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from concurrent.futures import ThreadPoolExecutor

    from rich.console import Console

    _return_freed_arrays_to_the_os()
    from analysis.analyze import Settings, analyze, to_json
    from analysis.logs import ReadReport, read_trace
    from analysis.report import inputs_json, print_inputs, print_report
    from analysis.session import LogParseError
    from analysis.textin import MAX_LINE
    from analysis.timeparse import US, TimeContext
    from resume.exitcodes import EXIT_ERROR, EXIT_USAGE
    from store.policy import parse_duration

    err = Console(stderr=True, highlight=False)
    try:
        ctx = TimeContext(year=args.year, tz=_tz(args.tz))
        limits = parse_limits(args)
        rekey = _opt(args.rekey, parse_duration, "--rekey")
        if rekey is not None and rekey <= 0:
            rekey = None
        if not 0 < args.knee <= 1:
            raise ValueError("--knee must be in (0, 1]")
        if args.bootstrap < 0:
            raise ValueError("--bootstrap must be >= 0")
        settings = Settings(
            rekey_us=None if rekey is None else round(rekey * US), n_lifetimes=args.lifetimes,
            record_bytes=args.record_bytes, knee_fraction=args.knee, resamples=args.bootstrap,
        )
    except ValueError as e:
        err.print(f"[red]error:[/] {e}")
        return EXIT_USAGE
    out_console = Console(width=None if sys.stdout.isatty() else PIPE_WIDTH, highlight=False,
                          soft_wrap=not sys.stdout.isatty())
    out = Path(args.out)
    read = ReadReport()
    progress = _progress(err)
    with progress as prog:
        task = prog.add_task("reading logs (sessions)", total=None)
        try:
            trace = read_trace(
                args.logs, fmt=args.format, strict=args.strict, ctx=ctx, report=read,
                on_session=lambda i: prog.update(task, completed=i),
            )
        except LogParseError as e:
            err.print(f"[red]error:[/] {e}", soft_wrap=True)
            if args.json:
                doc = {"error": str(e), "exit_status": EXIT_ERROR,
                       "inputs": inputs_json(read, MAX_LINE)}
                sys.stdout.write(json.dumps(doc, indent=1) + "\n")
            return EXIT_ERROR
        prog.update(task, completed=len(trace), total=len(trace))
        stage = prog.add_task("replaying policies", total=9 if settings.rekey_us else 6)
        drawing = not args.no_plots and len(trace) > 0
        with ThreadPoolExecutor(max_workers=1) as pool:
            # the trace-only plots are drawn beside the last sweeps (numpy leaves the
            # GIL), once the rekey segments are freed (matplotlib costs ~45 MB)
            early: list[Any] = []

            def draw_early() -> None:
                if drawing and not early:
                    early.append(pool.submit(_trace_plots, trace, limits, settings, out))

            a = analyze(trace, limits, settings, progress=lambda _m: prog.advance(stage),
                        when_lighter=draw_early)
            draw_early()
            doc = to_json(a)
            doc["inputs"] = inputs_json(read, MAX_LINE)
            plots: list[str] = []
            if drawing:
                plots = [str(p) for p in _result_plots(a, out) + early[0].result()]
    doc["plots"] = plots
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=1)
    (out / "analysis.json").write_text(text)
    if args.json:
        sys.stdout.write(text + "\n")
        _problems_to(err, read)
    else:
        print_inputs(read, out_console)
        print_report(a, out_console)
        out_console.print(f"plots and analysis.json in {out}/")
    if not len(trace):
        err.print("[bold red]no sessions to replay[/] (the input account above says what "
                  "each file held and which events its format needs)", soft_wrap=True)
        return EXIT_ERROR
    return 0


def _progress(err: Any) -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}"),
        TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal,
    )


def _problems_to(err: Any, read: Any) -> None:
    if not read.issue_count:
        return
    err.print(f"{read.issue_count:,} problem line(s):", soft_wrap=True)
    for issue in read.issues[:20]:
        err.print(f"  {issue}", markup=False, soft_wrap=True)
    if read.issue_count > 20:
        err.print(f"  ... {read.issue_count - 20:,} more in the JSON (inputs.problem_examples)",
                  soft_wrap=True)


def _trace_plots(trace: Any, limits: Any, settings: Any, out: Path) -> list[Path]:
    from analysis.analyze import Analysis
    from analysis.plots import write_trace_plots

    return write_trace_plots(Analysis(trace, limits, settings), out)


def _result_plots(a: Any, out: Path) -> list[Path]:
    from analysis.plots import write_result_plots

    return write_result_plots(a, out)


def cmd_synth(args: argparse.Namespace) -> int:
    from resume.exitcodes import EXIT_CONFIG

    if _missing_analysis_extra("synth"):
        return EXIT_CONFIG
    from analysis.analyze import summary
    from analysis.synth import generate, write_csv

    trace = generate(args.profile, seed=args.seed, scale=args.scale)
    write_csv(trace, args.out)
    if args.json:
        sys.stdout.write(json.dumps(summary(trace), indent=1) + "\n")
    else:
        print(f"wrote {len(trace):,} sessions of {trace.n_users:,} users to {args.out}")
    return 0
