"""Columnar fast path for the generic CSV format (the bulk export operators replay).

Turning every row into a :class:`Session` object costs microseconds per row; here a chunk
of lines becomes numpy columns directly: first at byte level (:mod:`analysis.bytecsv`,
plain numbers), else from strings (``csv`` module in C, numpy string conversion: quoting,
ISO times).
Any chunk with something unusual in it (short rows, blank user, non-numeric bytes, a
stop before a start, a repeated session id, ISO timestamps) is handed to the row-by-row
parser instead, so problems are still reported with file:line and nothing is lost.
"""

from __future__ import annotations

import csv
import itertools
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta, timezone
from typing import IO

import numpy as np

from analysis import bytecsv
from analysis.parsers import generic
from analysis.session import Issue, Session
from analysis.timeparse import TimeContext
from analysis.trace import Trace

CHUNK_CHARS = 8 << 20


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
        rows = list(csv.reader(lines, delimiter=delim))
        if not rows or min(map(len, rows)) < width:
            return None
        c = list(zip(*rows, strict=False))
    users = c[cols["user"]]
    if not all(users):
        return None
    if (" " in text or "\t" in text) and any(u != u.strip() for u in users):
        return None
    start = _times(c[cols["start"]], ctx)
    end = _times(c[cols["end"]], ctx) if "end" in cols else None
    dur = _numbers(c[cols["duration"]], np.float64) if "end" not in cols else None
    zeros = np.zeros(n, dtype=np.int64)
    b_in = _numbers(c[cols["bytes_in"]], np.int64) if "bytes_in" in cols else zeros
    b_out = _numbers(c[cols["bytes_out"]], np.int64) if "bytes_out" in cols else zeros
    if start is None or b_in is None or b_out is None:
        return None
    if end is None:
        if dur is None:
            return None
        end = start + dur
    if not (np.isfinite(start).all() and np.isfinite(end).all()):
        return None
    if (end < start).any() or (b_in < 0).any() or (b_out < 0).any():
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


def _times(col: Sequence[str], ctx: TimeContext) -> np.ndarray | None:
    """POSIX seconds, or ISO 8601 stamps that are UTC (``Z``) or zone-less (operator's zone,
    when that is a fixed offset); anything else goes row by row (same values, slower)."""
    nums = _numbers(col, np.float64)
    if nums is not None or not col:
        return nums
    if not isinstance(ctx.tz, timezone):
        return None
    zulu = col[0].endswith("Z")
    if not all(_ISO_PLAIN.fullmatch(v) and v.endswith("Z") == zulu for v in col):
        return None
    vals = [v[:-1] for v in col] if zulu else list(col)
    try:
        us = np.array(vals, dtype="datetime64[us]").astype(np.int64)
    except ValueError:
        return None
    off = ctx.tz.utcoffset(None)
    off_us = 0 if zulu or off is None else off // timedelta(microseconds=1)
    out: np.ndarray = (us - off_us) / 1e6  # datetime.timestamp() does exactly this
    return out


def _numbers(col: Sequence[str], dtype: type[np.float64] | type[np.int64]) -> np.ndarray | None:
    """Parse a column of decimal strings in C; None if any value is not a plain number.

    numpy saturates integers beyond int64 silently: such columns go row by row."""
    if dtype is np.int64 and max(map(len, col), default=0) > 18:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # older numpy warns and stops at the bad value
        try:
            arr = np.fromstring(" ".join(col), dtype=dtype, sep=" ")
        except ValueError:  # newer numpy raises instead
            return None
    return arr if len(arr) == len(col) else None


def read_csv_trace(
    head: list[str], fh: IO[str], path: str, ctx: TimeContext, on_issue: Callable[[Issue], None],
) -> Trace:
    """The whole CSV file as a trace; slow-path sessions and issues as the row parser gives.

    ``head`` are the lines already read for format detection, ``fh`` the rest of the file.
    """
    header = head[0] if head else ""
    delim = max((",", "\t", ";"), key=header.count)
    cols = generic._columns(next(csv.reader([header], delimiter=delim)))
    names: dict[str, int] = {}  # name -> increasing (not contiguous) number
    counter = itertools.count()
    seen: set[str] = set()
    parts: list[tuple[np.ndarray, ...]] = []
    slow: list[Session] = []
    if "user" not in cols or "start" not in cols or not ({"end", "duration"} & cols.keys()):
        on_issue(Issue(f"{path}:1", "CSV header needs user, start and end or duration columns"))
        return Trace.from_sessions([])
    width = len(header.split(delim))
    line_no = 2
    carry = "".join(head[1:])
    while True:
        block = fh.read(CHUNK_CHARS)
        text = carry + block
        if not block:
            carry = ""
        else:
            cut = text.rfind("\n") + 1
            text, carry = text[:cut], text[cut:]
        if not text:
            if not block:
                break
            continue
        got = bytecsv.chunk_columns(text, delim, cols, width, names, seen, counter)
        if got is not None:
            parts.append(got)
            line_no += text.count("\n") + (not text.endswith("\n"))
        else:
            line_no += _string_chunk(text, line_no, header, path, delim, cols, width, names,
                                     seen, counter, ctx, parts, slow, on_issue)
        if not block:
            break
    for s in slow:
        parts.append((
            np.array([names.setdefault(s.user, next(counter))], dtype=np.int64),
            np.array([s.start]), np.array([s.end]), np.array([s.bytes_in], dtype=np.int64),
            np.array([s.bytes_out], dtype=np.int64),
        ))
    if not parts:
        return Trace.from_sessions([])
    u, st, en, bi, bo = (np.concatenate([p[i] for p in parts]) for i in range(5))
    keys = np.fromiter(names.values(), dtype=np.int64, count=len(names))
    order = np.argsort(keys)
    dense = np.searchsorted(keys[order], u)  # names' numbers -> 0..len-1 in insertion order
    user = order[dense].astype(np.int32) if len(order) else dense.astype(np.int32)
    return Trace.from_columns(user, st, en, bi, bo, names)


def _string_chunk(
    text: str, line_no: int, header: str, path: str, delim: str, cols: dict[str, int],
    width: int, names: dict[str, int], seen: set[str], counter: Iterator[int],
    ctx: TimeContext, parts: list[tuple[np.ndarray, ...]], slow: list[Session],
    on_issue: Callable[[Issue], None],
) -> int:
    """A chunk the byte path declined: string columns, else row by row.  Returns its lines."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
        body = text[:-1]
    else:
        body = text
    got = _chunk_columns(body, lines, delim, cols, width, names, seen, counter, ctx)
    if got is not None:
        parts.append(got)
    else:
        for item in _slow([ln + "\n" for ln in lines], line_no, header, path, ctx, seen):
            if isinstance(item, Issue):
                on_issue(item)
            else:
                slow.append(item)
    return len(lines)


def _slow(
    lines: list[str], first_no: int, header: str, path: str, ctx: TimeContext, seen: set[str]
) -> Iterator[Session | Issue]:
    """Row-by-row parse of one chunk, line numbers kept (sessions ids shared with fast path)."""
    yield from generic.parse_csv(
        itertools.chain([header], lines), path, ctx, seen=seen, first_line=first_no
    )
