"""Generic CSV and JSON-lines session exports (what an operator can always produce).

Columns (case-insensitive, first match wins): user, start, end or duration, bytes in/out,
session id.  Times are POSIX seconds or ISO 8601 (zone-less ones in the operator's zone).
One row is one finished session; a row repeating a session id already seen is a
duplicate (counted, not replayed).  This is the fast path: no assembler, no regex.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from analysis.session import Issue, Session
from analysis.timeparse import TimeContext, TimeFormatError, parse_time

CSV = "csv"
JSONL = "jsonl"
ALIASES: dict[str, tuple[str, ...]] = {
    "user": ("user", "username", "user_name", "login", "name", "common_name", "cn", "account"),
    "start": (
        "start", "start_time", "starttime", "connect_time", "connected", "begin", "login_time"
    ),
    "end": ("end", "end_time", "endtime", "stop", "stop_time", "disconnect_time", "logout_time"),
    "duration": ("duration", "duration_s", "session_time", "seconds", "acct_session_time"),
    "bytes_in": ("bytes_in", "in", "rx", "rx_bytes", "bytes_received", "input_octets", "bytesin"),
    "bytes_out": ("bytes_out", "out", "tx", "tx_bytes", "bytes_sent", "output_octets", "bytesout"),
    "session_id": ("session_id", "sid", "id", "acct_session_id", "session"),
}


def _columns(names: list[str]) -> dict[str, int]:
    low = [n.strip().lower().replace("-", "_").replace(" ", "_") for n in names]
    cols: dict[str, int] = {}
    for field, alias in ALIASES.items():
        for a in alias:
            if a in low:
                cols[field] = low.index(a)
                break
    return cols


def sniff_csv(lines: list[str]) -> int:
    if not lines:
        return 0
    for delim in (",", "\t", ";"):
        cols = _columns(lines[0].split(delim))
        if "user" in cols and "start" in cols and ("end" in cols or "duration" in cols):
            return 80
    return 0


def sniff_jsonl(lines: list[str]) -> int:
    if not lines or not lines[0].lstrip().startswith("{"):
        return 0
    try:
        obj = json.loads(lines[0])
    except ValueError:
        return 0
    return 80 if isinstance(obj, dict) and _columns(list(obj)).keys() >= {"user", "start"} else 0


def _time(v: Any, ctx: TimeContext) -> float:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    s = str(v).strip()
    try:
        return float(s)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return parse_time(s, ctx)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ctx.tz)
    return dt.timestamp()


def _count(v: Any) -> int:
    if v is None or v == "":
        return 0
    n = int(v)
    if n < 0:
        raise ValueError(f"negative byte count {v!r}")
    return n


def _row(
    get: Any, cols: dict[str, int] | dict[str, str], ctx: TimeContext, src: str, seen: set[str]
) -> Session | Issue | None:
    try:
        user = str(get(cols["user"])).strip()
        if not user:
            return Issue(src, "empty user")
        start = _time(get(cols["start"]), ctx)
        end_v = get(cols["end"]) if "end" in cols else None
        has_end = end_v not in (None, "")
        end = _time(end_v, ctx) if has_end else start + float(get(cols["duration"]))
        if not (math.isfinite(start) and math.isfinite(end)):
            return Issue(src, "bad row: time is not a finite number")
        sid = str(get(cols["session_id"])) if "session_id" in cols else ""
        if sid:
            if sid in seen:
                return None
            seen.add(sid)
        b_in = _count(get(cols["bytes_in"])) if "bytes_in" in cols else 0
        b_out = _count(get(cols["bytes_out"])) if "bytes_out" in cols else 0
        return Session(user, start, end, b_in, b_out, src, sid)
    except (ValueError, TypeError, KeyError, IndexError, TimeFormatError) as e:
        return Issue(src, f"bad row: {e}")


def parse_csv(
    lines: Iterable[str], path: str, ctx: TimeContext, seen: set[str] | None = None,
    first_line: int = 2,
) -> Iterator[Session | Issue]:
    it = iter(lines)
    header = next(it, "")
    delim = max((",", "\t", ";"), key=header.count)
    cols = _columns(next(csv.reader([header], delimiter=delim)))
    if "user" not in cols or "start" not in cols or not ({"end", "duration"} & cols.keys()):
        yield Issue(f"{path}:1", "CSV header needs user, start and end or duration columns")
        return
    seen = set() if seen is None else seen
    width = len(header.split(delim))
    for no, row in enumerate(csv.reader(it, delimiter=delim), first_line):
        if not row:
            continue
        src = f"{path}:{no}"
        if len(row) < width:
            yield Issue(src, f"{len(row)} fields, header has {width}")
            continue
        r = _row(row.__getitem__, cols, ctx, src, seen)
        if r is not None:
            yield r


def parse_jsonl(lines: Iterable[str], path: str, ctx: TimeContext) -> Iterator[Session | Issue]:
    seen: set[str] = set()
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        src = f"{path}:{no}"
        try:
            obj = json.loads(line)
        except ValueError as e:
            yield Issue(src, f"not JSON: {e}")
            continue
        if not isinstance(obj, dict):
            yield Issue(src, "JSON line is not an object")
            continue
        names = list(obj)
        idx = _columns(names)
        cols = {k: names[i] for k, i in idx.items()}
        if "user" not in cols or "start" not in cols:
            yield Issue(src, "JSON object without user/start")
            continue
        r = _row(obj.get, cols, ctx, src, seen)
        if r is not None:
            yield r
