"""Subcommands of the ``analysis`` package: ``ikeresume analyze`` and ``ikeresume synth``."""

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


def register(sub: Any) -> None:
    """Add this package's subcommands to the ``ikeresume`` parser."""
    p = sub.add_parser(
        "analyze",
        help="replay VPN session logs through cache policies and recommend one",
        description="Parse VPN session logs (format auto-detected), replay clocked, "
        "established and data lifetimes, and print the savings, exposure, a Pareto table "
        "and a [policy] table to paste into the server config.",
    )
    p.add_argument("logs", nargs="+", metavar="LOG", help="log files (gzip is fine)")
    p.add_argument("--out", default="analysis-out", help="directory for PNGs and JSON")
    p.add_argument("--strict", action="store_true", help="stop at the first bad line")
    p.add_argument("--json", action="store_true", help="print the JSON report to stdout")
    p.add_argument("--format", choices=FORMAT_NAMES, help="skip auto-detection")
    p.add_argument("--year", type=int, help="year for syslog stamps without one")
    p.add_argument("--tz", default="UTC", help="zone for stamps without one (+0200, CET)")
    p.add_argument("--max-secret-age", help="exposure limit: oldest cached secret (e.g. 1d)")
    p.add_argument("--max-chain-bytes", help="exposure limit: bytes under one chain (1GB)")
    p.add_argument("--idle", help="idle expiry applied to every candidate (e.g. 12h)")
    p.add_argument("--capacity", type=int, help="cache capacity (LRU) for every candidate")
    p.add_argument("--rekey", default="4h", help="IKE rekey interval inside long sessions "
                   "(or 'none')")
    p.add_argument("--lifetimes", type=int, help="log-spaced lifetimes per sweep "
                   "(default: 26 round durations, 13 round sizes)")
    p.add_argument("--record-bytes", type=int, default=512, help="store bytes per record")
    p.add_argument("--no-plots", action="store_true")
    p.set_defaults(func=cmd_analyze)

    s = sub.add_parser(
        "synth",
        help="write a synthetic session trace calibrated on the 2007 study (Table II)",
    )
    s.add_argument("--profile", choices=("wireless", "remote"), default="wireless")
    s.add_argument("--seed", type=int, default=0)
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


def cmd_analyze(args: argparse.Namespace) -> int:
    from resume.exitcodes import EXIT_CONFIG

    if _missing_analysis_extra("analyze"):
        return EXIT_CONFIG
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from analysis.analyze import analyze, to_json
    from analysis.logs import ReadReport, read_trace
    from analysis.recommend import Limits
    from analysis.report import print_report
    from analysis.session import LogParseError
    from analysis.timeparse import TimeContext
    from resume.exitcodes import EXIT_ERROR, EXIT_USAGE
    from store.policy import parse_duration, parse_size

    err = Console(stderr=True)
    try:
        ctx = TimeContext(year=args.year, tz=_tz(args.tz))
        limits = Limits(
            max_secret_age=parse_duration(args.max_secret_age) if args.max_secret_age else None,
            max_chain_bytes=parse_size(args.max_chain_bytes) if args.max_chain_bytes else None,
            idle=parse_duration(args.idle) if args.idle else None,
            capacity=args.capacity,
        )
        rekey = None if args.rekey.lower() in ("none", "0", "off") else parse_duration(args.rekey)
    except ValueError as e:
        err.print(f"[red]error:[/] {e}")
        return EXIT_USAGE
    out = Path(args.out)
    read = ReadReport()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,.0f}"),
        TimeElapsedColumn(), console=err, transient=True,
    ) as prog:
        task = prog.add_task("reading logs (sessions)", total=None)
        try:
            trace = read_trace(
                args.logs, fmt=args.format, strict=args.strict, ctx=ctx, report=read,
                on_session=lambda i: prog.update(task, completed=i),
            )
        except LogParseError as e:
            err.print(f"[red]error:[/] {e}")
            return EXIT_ERROR
        prog.update(task, completed=len(trace), total=len(trace))
        stage = prog.add_task("replaying policies", total=9 if rekey else 5)
        a = analyze(trace, limits, rekey=rekey, n_lifetimes=args.lifetimes,
                    record_bytes=args.record_bytes,
                    progress=lambda _m: prog.advance(stage))
    doc = to_json(a)
    doc["inputs"] = {
        "files": read.files, "sessions_by_format": dict(read.sessions),
        "incomplete": read.incomplete, "problems": read.issue_count,
        "problem_examples": [str(i) for i in read.issues[:100]],
        "assembly": read.assembly.__dict__,
    }
    out.mkdir(parents=True, exist_ok=True)
    plots = [] if args.no_plots or not len(trace) else [str(p) for p in _plots(a, out)]
    doc["plots"] = plots
    (out / "analysis.json").write_text(json.dumps(doc, indent=1))
    if args.json:
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
    else:
        con = Console()
        print_report(a, read, con)
        con.print(f"plots and analysis.json in {out}/")
    return 0 if len(trace) else EXIT_ERROR


def _plots(a: Any, out: Path) -> list[Path]:
    from analysis.plots import write_all

    return write_all(a, out)


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
