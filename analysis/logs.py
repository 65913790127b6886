"""Reading logs: detect each file's format, stream it through its parser, assemble sessions.

Streaming: files are read line by line (gzip transparently), sessions are yielded as soon
as they are known, so a month of logs never sits in memory as text.  Problems are collected
as :class:`Issue` values (file:line, reason) and counted; with ``strict`` the first one
raises :class:`LogParseError` instead.
"""

from __future__ import annotations

import gzip
import io
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from analysis.fastcsv import read_csv_trace
from analysis.parsers.base import Assembler, AssemblyStats, Event
from analysis.parsers.detect import FORMATS, Format, detect
from analysis.session import Issue, LogParseError, Session
from analysis.timeparse import TimeContext
from analysis.trace import Trace


def read_trace(
    paths: Iterable[str | Path],
    *,
    fmt: str | None = None,
    strict: bool = False,
    ctx: TimeContext | None = None,
    report: ReadReport | None = None,
    on_session: Callable[[int], None] | None = None,
) -> Trace:
    """Every input as one trace: CSV through the columnar path, the rest via sessions."""
    rep = report if report is not None else ReadReport()
    fast: list[Trace] = []
    sessions = read_sessions(paths, fmt=fmt, strict=strict, ctx=ctx, report=rep, csv_traces=fast)
    if on_session is not None:
        sessions = _counting(sessions, on_session)
    return Trace.concat([Trace.from_sessions(sessions), *fast])


def _counting(it: Iterator[Session], cb: Callable[[int], None]) -> Iterator[Session]:
    for i, s in enumerate(it, 1):
        if i % 10000 == 0:
            cb(i)
        yield s

MAX_KEPT_ISSUES = 1000


@dataclass
class ReadReport:
    """What reading produced besides sessions (for the report and ``--json``)."""

    files: dict[str, str] = field(default_factory=dict)  # path -> format name
    sessions: Counter[str] = field(default_factory=Counter)  # format -> sessions
    incomplete: int = 0
    issues: list[Issue] = field(default_factory=list)
    issue_count: int = 0
    assembly: AssemblyStats = field(default_factory=AssemblyStats)

    def add_issue(self, issue: Issue, strict: bool) -> None:
        if strict:
            raise LogParseError(issue)
        self.issue_count += 1
        if len(self.issues) < MAX_KEPT_ISSUES:
            self.issues.append(issue)


def _open_text(path: Path) -> IO[str]:
    raw = path.open("rb")
    head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    if head == b"\x1f\x8b":
        raw.close()
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")


def read_sessions(
    paths: Iterable[str | Path],
    *,
    fmt: str | None = None,
    strict: bool = False,
    ctx: TimeContext | None = None,
    report: ReadReport | None = None,
    csv_traces: list[Trace] | None = None,
) -> Iterator[Session]:
    """Sessions from every file, in file order (the replay sorts them itself).

    With ``csv_traces``, generic CSV files take the columnar fast path and land there as
    traces instead of being yielded session by session (see :func:`read_trace`).
    """
    ctx = ctx or TimeContext()
    rep = report if report is not None else ReadReport()
    assembler = Assembler(stats=rep.assembly)
    forced = FORMATS[fmt] if fmt else None
    last_format: Format | None = None

    def take(out: Iterable[Session | Issue], name: str) -> Iterator[Session]:
        for x in out:
            if isinstance(x, Issue):
                rep.add_issue(x, strict)
            else:
                rep.sessions[name] += 1
                rep.incomplete += not x.complete
                yield x

    for p in paths:
        path = Path(p)
        try:
            fh = _open_text(path)
        except OSError as e:
            raise LogParseError(Issue(str(path), f"cannot read: {e.strerror or e}")) from e
        with fh:
            head = list(itertools.islice(fh, 60))
            f = forced or detect(head)
            if f is None:
                rep.files[str(path)] = "unknown"
                rep.add_issue(Issue(f"{path}:1", "no known log format (use --format)"), strict)
                continue
            rep.files[str(path)] = f.name
            last_format = f
            ctx.reset_file()
            if csv_traces is not None and f.name == "csv":
                tr = read_csv_trace(head, fh, str(path), ctx, lambda i: rep.add_issue(i, strict))
                rep.sessions[f.name] += len(tr)
                csv_traces.append(tr)
                continue
            lines = itertools.chain(head, fh)
            feed = assembler.feed
            for item in f.parse(lines, str(path), ctx):
                if type(item) is Event:
                    done = feed(item)
                    if done:  # most events complete nothing
                        yield from take(done, f.name)
                else:
                    yield from take((item,), f.name)  # type: ignore[arg-type]
    for item in assembler.finish():
        # sessions left open are attributed to the format of the file that opened them
        src = item.source.rsplit(":", 1)[0]
        yield from take((item,), rep.files.get(src, last_format.name if last_format else "?"))


def format_names() -> list[str]:
    return sorted(FORMATS)
