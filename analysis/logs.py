"""Reading logs: open each file, detect its format per block of lines, stream it through
its parser, assemble sessions, and account for every line.

Streaming: files are read in chunks (gzip, bzip2 and xz transparently), split into lines
at ``\\n`` only (a trailing ``\\r`` is dropped; a bare ``\\r`` stays inside its line), and
sessions are yielded as soon as they are known, so a month of logs never sits in memory
as text.  A line longer than :data:`MAX_LINE` characters is skipped and reported without
being held in memory; corrupt or truncated compressed data ends the file with a problem
line (what was read before it is kept).

Detection per block: a file's format is detected on the first block of lines any format
claims (leading junk does not hide it); the lines that format's parser rejects as not
its own (``Issue.foreign``) are offered to detection again and parsed by the next format
claiming them, up to :data:`MAX_FORMATS_PER_FILE` formats, so a file mixing two formats
loses neither.  What no format claims is reported line by line.

Problems are collected as :class:`Issue` values (file:line, reason) and counted; with
``strict`` the first one raises :class:`LogParseError` instead.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from analysis.account import FileAccount
from analysis.parsers.base import Assembler, AssemblyStats, LogEvent
from analysis.parsers.detect import FORMATS, Format, detect
from analysis.session import Issue, LogParseError, Session
from analysis.textin import MAX_LINE, OVERLONG, StreamError, read_text_chunks
from analysis.timeparse import TimeContext
from analysis.trace import Trace

CHUNK = 1 << 20  # characters read at a time
DETECT_WINDOW = 60  # non-blank lines scored together by format detection
MAX_FORMATS_PER_FILE = 4
MAX_KEPT_ISSUES = 1000


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


@dataclass
class ReadReport:
    """What reading produced besides sessions (for the report and ``--json``)."""

    files: dict[str, str] = field(default_factory=dict)  # path -> format name(s)
    accounts: dict[str, FileAccount] = field(default_factory=dict)
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

    def account(self, path: str) -> FileAccount:
        acct = self.accounts.get(path)
        if acct is None:
            acct = self.accounts[path] = FileAccount(path)
        return acct


def iter_lines(
    path: Path,
    *,
    select: bytearray | None = None,
    acct: FileAccount | None = None,
    on_issue: Callable[[Issue], None] | None = None,
) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of one file, text without its line end.

    ``select``: a bitmap of line numbers; only those lines are yielded (a later detection
    pass).  ``acct``/``on_issue`` (the first pass only): count every line and report
    over-long lines and unreadable data, so each is reported once.
    """
    path_s = str(path)
    no = 0
    carry = ""
    skipping = False  # inside an over-long line, dropping characters until its end

    def overlong(n: int) -> None:
        if acct is not None and on_issue is not None:
            on_issue(Issue(f"{path_s}:{n}", OVERLONG))

    chunks = read_text_chunks(path, CHUNK)
    try:
        for text in chunks:
            parts = text.split("\n")
            last = parts.pop()
            if parts:
                if skipping:
                    no += 1
                    overlong(no)
                    skipping = False
                    parts[0] = ""
                    first = 1
                else:
                    parts[0] = carry + parts[0]
                    first = 0
                long_ = max(map(len, parts)) > MAX_LINE
                if select is None and not long_ and "\r" not in text and not parts[0].endswith(
                    "\r"
                ):
                    # the common chunk: numbered in C, no per-line Python work
                    yield from zip(itertools.count(no + 1), parts[first:] if first else parts)
                    no += len(parts) - first
                    carry = last
                    continue
                for i in range(first, len(parts)):
                    no += 1
                    line = parts[i]
                    if select is not None and not _has(select, no):
                        continue
                    if long_ and len(line) > MAX_LINE:
                        overlong(no)
                        continue
                    yield no, line[:-1] if line.endswith("\r") else line
                carry = last
            elif not skipping:
                carry += last
            if not skipping and len(carry) > MAX_LINE:
                skipping, carry = True, ""
        if skipping:
            no += 1
            overlong(no)
        elif carry:
            no += 1
            if select is None or _has(select, no):
                yield no, carry[:-1] if carry.endswith("\r") else carry
    except StreamError as e:
        no += 1  # the rest of the file (from the partial line on) counts as one line
        if acct is not None and on_issue is not None:
            on_issue(Issue(f"{path_s}:{no}", str(e)))
    if acct is not None:
        acct.lines = no


def _has(bits: bytearray, n: int) -> bool:
    i = n >> 3
    return i < len(bits) and bool(bits[i] >> (n & 7) & 1)


def _bit(bits: bytearray, n: int) -> None:
    i = n >> 3
    if i >= len(bits):
        bits.extend(bytes(i + 1 - len(bits) + len(bits) // 2))
    bits[i] |= 1 << (n & 7)


def _detect_in(path: Path, select: bytearray | None, exclude: set[str]) -> Format | None:
    """The first format that claims a window of the (selected) lines of ``path``."""
    window: list[str] = []
    try:
        for _no, line in iter_lines(path, select=select):
            if line.strip():
                window.append(line)
                if len(window) == DETECT_WINDOW:
                    f = detect(window, exclude)
                    if f is not None:
                        return f
                    window = []
    except LogParseError:
        return None
    return detect(window, exclude) if window else None


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

    With ``csv_traces``, CSV files take the columnar fast path and land there as traces
    instead of being yielded session by session (see :func:`read_trace`).
    """
    ctx = ctx or TimeContext()
    rep = report if report is not None else ReadReport()
    assembler = Assembler(stats=rep.assembly)
    forced = FORMATS[fmt] if fmt else None

    def take(out: Iterable[Session | Issue], name: str) -> Iterator[Session]:
        for x in out:
            if isinstance(x, Issue):
                _issue(x)
            else:
                rep.sessions[name] += 1
                rep.incomplete += not x.complete
                a = rep.accounts.get(x.source.rpartition(":")[0])
                if a is not None:
                    a.sessions += 1
                    a.incomplete += not x.complete
                yield x

    def _issue(x: Issue) -> None:
        a = rep.accounts.get(x.source.rpartition(":")[0]) or rep.accounts.get(x.source)
        if a is not None and x.lines:
            a.problem(x.reason, x.lines)
        rep.add_issue(x, strict)

    for p in paths:
        path = Path(p)
        yield from _read_file(path, forced, ctx, rep, assembler, take, _issue, csv_traces)
    for item in assembler.finish():
        # sessions left open are attributed to the format of the file that opened them
        src = item.source.rpartition(":")[0]
        name = rep.files.get(src, "?").split("+")[0]
        yield from take((item,), name)


def _read_file(
    path: Path,
    forced: Format | None,
    ctx: TimeContext,
    rep: ReadReport,
    assembler: Assembler,
    take: Callable[[Iterable[Session | Issue], str], Iterator[Session]],
    on_issue: Callable[[Issue], None],
    csv_traces: list[Trace] | None,
) -> Iterator[Session]:
    name = str(path)
    acct = rep.account(name)
    if not path.is_file():
        try:
            path.open("rb").close()
        except OSError as e:
            raise LogParseError(Issue(name, f"cannot read: {e.strerror or e}")) from e
    pending: bytearray | None = None  # None: every line (the first pass)
    tried: set[str] = set()
    first = True
    rejected = ""  # why the file's main format rejected a line (its foreign reason)
    while len(tried) < MAX_FORMATS_PER_FILE:
        f = forced if forced is not None and first else (
            None if forced is not None else _detect_in(path, pending, tried)
        )
        if f is None:
            break
        tried.add(f.name)
        acct.formats.append(f.name)
        acct.expected[f.name] = f.expects
        ctx.reset_file()
        foreign = bytearray()
        n_foreign = 0
        if first and csv_traces is not None and f.name == "csv":
            from analysis.fastcsv import read_csv_trace

            def csv_issue(x: Issue, bits: bytearray = foreign) -> None:
                nonlocal n_foreign, rejected
                if x.foreign:
                    _bit(bits, int(x.source.rpartition(":")[2]))
                    n_foreign += 1
                    rejected = rejected or x.reason
                else:
                    on_issue(x)

            tr = read_csv_trace(path, ctx, csv_issue, acct)
            if tr is not None:
                rep.sessions[f.name] += len(tr)
                acct.sessions += len(tr)
                csv_traces.append(tr)
                first = False
                pending = foreign if n_foreign else None
                if not n_foreign:
                    break
                continue
        lines = iter_lines(
            path, select=pending, acct=acct if first else None,
            on_issue=on_issue if first else None,
        )
        feed = assembler.feed
        for item in f.parse(lines, name, ctx, acct):
            if type(item) is LogEvent:
                done = feed(item)
                if done:  # most events complete nothing
                    yield from take(done, f.name)
            elif type(item) is Issue and item.foreign:
                _bit(foreign, int(item.source.rpartition(":")[2]))
                n_foreign += 1
                rejected = rejected or item.reason
            else:
                yield from take((item,), f.name)  # type: ignore[arg-type]
        first = False
        pending = foreign
        if not n_foreign:
            pending = None
            break
    if first:  # nothing claimed any block of the file: count its lines, report them all
        pending = None
        for no, line in iter_lines(path, acct=acct, on_issue=on_issue):
            if line.strip():
                on_issue(Issue(f"{name}:{no}", "no known log format (use --format)"))
            else:
                acct.skip("blank line")
    elif pending is not None:
        why = f"{rejected}; no other known format claims it"
        for no, _line in iter_lines(path, select=pending):
            on_issue(Issue(f"{name}:{no}", why))
    rep.files[name] = "+".join(acct.formats) if acct.formats else "unknown"


def format_names() -> list[str]:
    return sorted(FORMATS)
