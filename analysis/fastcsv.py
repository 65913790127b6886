"""Columnar fast path for the generic CSV format (the bulk export operators replay).

Turning every row into a :class:`Session` object costs microseconds per row; here a chunk
of lines becomes numpy columns directly: first at byte level (:mod:`analysis.bytecsv`,
plain numbers), else from strings (``csv`` module in C, exact decimal and numpy ISO time
conversion: quoting, ISO times).  Any chunk with something unusual in it (short rows,
blank user, non-numeric bytes, a stop before a start, a repeated session id, an over-long
line, a bare CR) is handed to the row parser instead, so problems are still reported
with file:line and nothing is lost.  Times are integer microseconds throughout.
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta, timezone
from pathlib import Path

import numpy as np

from analysis import bytecsv
from analysis.account import FileAccount
from analysis.parsers import generic
from analysis.session import Issue, LineError, Session
from analysis.textin import MAX_LINE, OVERLONG, StreamError, read_text_chunks
from analysis.timeparse import MAX_US, MIN_US, TimeContext
from analysis.trace import Trace

CHUNK_CHARS = 2 << 20


def _chunk_columns(
    text: str, lines: list[str], delim: str, cols: dict[str, int], width: int,
    names: dict[str, int], seen: set[str], counter: Iterator[int], ctx: TimeContext,
) -> tuple[np.ndarray, ...] | None:
    n = len(lines)
    c: list[Sequence[str]]
    if '"' not in text and "\r" not in text and set(
        map(str.count, lines, itertools.repeat(delim))
    ) == {width - 1}:
        # no quoting, every row has exactly the header's fields: one C-level split
        flat = text.replace("\n", delim).split(delim)
        c = [flat[i : n * width : width] for i in range(width)]
    else:
        if "\r" in text:
            return None  # a bare CR inside a field: the row parser reports it
        try:
            rows = list(csv.reader(lines, delimiter=delim))
        except csv.Error:
            return None
        if not rows or min(map(len, rows)) < width or len(rows) != n:
            return None
        c = list(zip(*rows, strict=False))
    users = c[cols["user"]]
    if not all(users):
        return None
    if (" " in text or "\t" in text) and any(u != u.strip() for u in users):
        return None
    if any(u.strip().lower() in generic.ALIASES["user"] for u in set(users)):
        return None  # a repeated header: the row parser skips it
    start = _times(c[cols["start"]], ctx)
    end = _times(c[cols["end"]], ctx) if "end" in cols else None
    dur = _decimals(c[cols["duration"]]) if "end" not in cols else None
    zeros = np.zeros(n, dtype=np.int64)
    b_in = _counts(c[cols["bytes_in"]]) if "bytes_in" in cols else zeros
    b_out = _counts(c[cols["bytes_out"]]) if "bytes_out" in cols else zeros
    if start is None or b_in is None or b_out is None:
        return None
    if end is None:
        if dur is None:
            return None
        end = start + dur
        if n and int(end.max()) > MAX_US:
            return None
    if (end < start).any():
        return None
    if "session_id" in cols:
        sids = [s for s in c[cols["session_id"]] if s]
        if len(set(sids)) != len(sids) or seen.intersection(sids):
            return None
        seen.update(sids)
    # new names get distinct (non-contiguous) numbers here; read_csv_trace renumbers
    uid = np.fromiter(map(names.setdefault, users, counter), dtype=np.int64, count=n)
    return uid, start, end, b_in, b_out


_ISO_PLAIN = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(\.\d{1,6})?Z?")


def _decimals(col: Sequence[str]) -> np.ndarray | None:
    """Decimal seconds -> exact integer us (as the row parser reads them), or None."""
    try:
        return np.fromiter(map(generic.decimal_us, col), dtype=np.int64, count=len(col))
    except (LineError, OverflowError):
        return None


def _times(col: Sequence[str], ctx: TimeContext) -> np.ndarray | None:
    """POSIX seconds, or ISO 8601 stamps that are UTC (``Z``) or zone-less (operator's zone,
    when that is a fixed offset); anything else goes row by row (same values, slower)."""
    if not col:
        return np.zeros(0, dtype=np.int64)
    if col[0][:1].isdigit() and "-" not in col[0]:
        nums = _decimals(col)
        if nums is None or int(nums.max()) > MAX_US:
            return None
        return nums
    if not isinstance(ctx.tz, timezone):
        return None
    zulu = col[0].endswith("Z")
    if not all(_ISO_PLAIN.fullmatch(v) and v.endswith("Z") == zulu and v[:4] != "0000"
               for v in col):
        return None
    vals = [v[:-1] for v in col] if zulu else list(col)
    try:
        us = np.array(vals, dtype="datetime64[us]").astype(np.int64)
    except ValueError:
        return None
    off = ctx.tz.utcoffset(None)
    off_us = 0 if zulu or off is None else off // timedelta(microseconds=1)
    out: np.ndarray = us - off_us  # what epoch_us(datetime) gives, exactly
    if int(out.min()) < MIN_US or int(out.max()) > MAX_US:
        return None
    return out


def _counts(col: Sequence[str]) -> np.ndarray | None:
    """Byte counts of plain ASCII digits (at most 18), else None (the row parser decides)."""
    if max(map(len, col), default=0) > 18 or not all(v.isascii() and v.isdigit() for v in col):
        return None
    return np.fromiter(map(int, col), dtype=np.int64, count=len(col))


def read_csv_trace(
    path: Path, ctx: TimeContext, on_issue: Callable[[Issue], None], acct: FileAccount,
) -> Trace | None:
    """The whole CSV file as a trace (slow-path sessions and issues as the row parser
    gives them), or None when the file does not start with a CSV header line.  Lines
    that are not CSV rows at all go to ``on_issue`` as foreign issues (the caller offers
    them to format detection again)."""

    names: dict[str, int] = {}  # name -> increasing (not contiguous) number
    counter = itertools.count()
    seen: set[str] = set()
    parts: list[tuple[np.ndarray, ...]] = []
    slow: list[Session] = []
    chunks = read_text_chunks(path, CHUNK_CHARS)
    carry = ""
    try:
        while "\n" not in carry and len(carry) <= MAX_LINE:
            piece = next(chunks, None)
            if piece is None:
                break
            carry += piece
    except StreamError:
        return None
    nl = carry.find("\n")
    header = (carry if nl < 0 else carry[:nl]).rstrip("\r")
    got = generic.header_columns(header) if len(header) <= MAX_LINE else None
    if got is None:
        return None
    carry = "" if nl < 0 else carry[nl + 1 :]
    acct.skip("CSV header")
    delim, cols = got
    width = len(next(csv.reader([header], delimiter=delim), []))
    line_no = 2  # number of the next line
    skipping = False

    def run(text: str) -> None:
        nonlocal line_no
        line_no = _chunk(text, line_no, header, str(path), delim, cols, width, names, seen,
                         counter, ctx, parts, slow, on_issue, acct)

    def blocks() -> Iterator[str]:
        if carry:
            yield carry
        yield from chunks

    try:
        pending = ""
        for block in blocks():
            cut = block.rfind("\n") + 1
            if skipping:
                if not cut:
                    continue
                on_issue(Issue(f"{path}:{line_no}", OVERLONG))
                line_no += 1
                skipping = False
                block = block[block.find("\n") + 1 :]
                cut = block.rfind("\n") + 1
            if not cut:
                pending += block
            else:
                run(pending + block[:cut])
                pending = block[cut:]
            if len(pending) > MAX_LINE:
                skipping, pending = True, ""
        if skipping:
            on_issue(Issue(f"{path}:{line_no}", OVERLONG))
            line_no += 1
        elif pending:
            run(pending + "\n")
    except StreamError as e:
        on_issue(Issue(f"{path}:{line_no}", str(e)))
        line_no += 1
    acct.lines = line_no - 1
    if slow:
        parts.append((
            np.array([names.setdefault(s.user, next(counter)) for s in slow], dtype=np.int64),
            np.array([s.start for s in slow], dtype=np.int64),
            np.array([s.end for s in slow], dtype=np.int64),
            np.array([s.bytes_in for s in slow], dtype=np.int64),
            np.array([s.bytes_out for s in slow], dtype=np.int64),
        ))
    if not parts:
        return Trace.from_sessions([])
    # column by column, each chunk's piece released as soon as its column is joined
    columns = [list(c) for c in zip(*parts, strict=True)]
    parts.clear()
    joined = []
    for pieces in columns:
        joined.append(np.concatenate(pieces))
        pieces.clear()
    u, st, en, bi, bo = joined
    del joined
    keys = np.fromiter(names.values(), dtype=np.int64, count=len(names))
    order = np.argsort(keys)
    dense = np.searchsorted(keys[order], u)  # names' numbers -> 0..len-1 in insertion order
    user = order[dense].astype(np.int32) if len(order) else dense.astype(np.int32)
    return Trace.from_columns(user, st, en, bi, bo, names)


def _chunk(
    text: str, line_no: int, header: str, path: str, delim: str, cols: dict[str, int],
    width: int, names: dict[str, int], seen: set[str], counter: Iterator[int],
    ctx: TimeContext, parts: list[tuple[np.ndarray, ...]], slow: list[Session],
    on_issue: Callable[[Issue], None], acct: FileAccount,
) -> int:
    """One chunk of whole lines (ending in a newline): the fastest path that accepts it.
    Returns the number of the line after it."""
    n_lines = text.count("\n")
    got = bytecsv.chunk_columns(text, delim, cols, width, names, seen, counter, MAX_LINE)
    if got is not None:
        parts.append(got)
        acct.use(n_lines)
        return line_no + n_lines
    lines = text.split("\n")
    lines.pop()  # the text ends in a newline
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    if max(map(len, lines), default=0) <= MAX_LINE:
        got = _chunk_columns("\n".join(lines), lines, delim, cols, width, names, seen,
                             counter, ctx)
        if got is not None:
            parts.append(got)
            acct.use(n_lines)
            return line_no + n_lines
    numbered = []
    for i, ln in enumerate(lines, line_no):
        if len(ln) > MAX_LINE:
            on_issue(Issue(f"{path}:{i}", OVERLONG))
        else:
            numbered.append((i, ln))
    for item in generic.parse_csv(numbered, path, ctx, acct, seen=seen, header=header):
        if isinstance(item, Issue):
            on_issue(item)
        else:
            slow.append(item)
    return line_no + n_lines
