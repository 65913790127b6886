"""Fuzz target: the log reader as ``ikeresume analyze`` uses it, on any bytes as a file.

Format detection per block, gzip/bzip2/xz by magic, the line limit, the CSV fast paths,
session assembly: the documented outcome is sessions and problem lines, and an account
that explains every line.  Anything escaping (or a line unexplained) is a finding.

:func:`run_format` is the shared body of the per-format targets (``fuzz_log_<format>``):
one parser fed the input's lines directly, its events assembled, every line accounted.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from analysis.account import FileAccount
from analysis.logs import ReadReport, read_trace
from analysis.parsers.base import Assembler, LogEvent
from analysis.parsers.detect import FORMATS
from analysis.session import Issue, Session
from analysis.textin import MAX_LINE
from analysis.timeparse import MAX_US, MIN_US, TimeContext

_DIR = Path(tempfile.mkdtemp(prefix="ikr-fuzz-log-"))


def _check(s: Session) -> None:
    if not (MIN_US <= s.start <= s.end <= MAX_US):
        raise AssertionError(f"session times out of range: {s}")
    if not (0 <= s.bytes_in < 2**63 and 0 <= s.bytes_out < 2**63):
        raise AssertionError(f"session bytes out of range: {s}")


def run_format(fmt: str, data: bytes) -> None:
    """Feed ``data``'s lines to the parser of ``fmt`` and assemble its events."""
    text = data.decode("utf-8", errors="replace")
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
    numbered = [(i, ln) for i, ln in enumerate(lines, 1) if len(ln) <= MAX_LINE]
    acct = FileAccount("f")
    asm = Assembler()
    problem_lines = foreign = 0
    out: list[Session | Issue] = []
    for item in FORMATS[fmt].parse(numbered, "f", TimeContext(year=2024), acct):
        if type(item) is LogEvent:
            out.extend(asm.feed(item))
        elif isinstance(item, Issue):
            foreign += item.foreign
            problem_lines += 0 if item.foreign else item.lines
        else:
            out.append(item)
    out.extend(asm.finish())
    for x in out:
        if isinstance(x, Session):
            _check(x)
    explained = acct.used + sum(acct.skipped.values()) + problem_lines + foreign
    if explained != len(numbered):
        raise AssertionError(f"{fmt}: {len(numbered)} lines, {explained} explained")


def one_input(data: bytes) -> None:
    path = _DIR / "input.log"
    path.write_bytes(data)
    rep = ReadReport()
    trace = read_trace([path], ctx=TimeContext(year=2024), report=rep)
    acct = rep.accounts[str(path)]
    if acct.unexplained:
        raise AssertionError(f"{acct.unexplained} lines unexplained: {acct.to_json()}")
    if len(trace) and not (int(trace.start.min()) >= MIN_US and int(trace.end.max()) <= MAX_US):
        raise AssertionError("trace times out of range")
