"""Generic CSV and JSON-lines session exports (what an operator can always produce).

Columns (case-insensitive, first match wins): user, start, end or duration, bytes in/out,
session id.  Times are POSIX seconds (a decimal number, read exactly to the microsecond)
or ISO 8601 (zone-less ones in the operator's zone).  One row is one finished session; a
row repeating a session id already seen is a duplicate (counted as a skipped line, not
replayed).  No assembler, no regex: the columnar fast path (:mod:`analysis.fastcsv`) must
give exactly what :func:`parse_csv` gives.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from analysis.account import FileAccount
from analysis.session import Issue, LineError, Session
from analysis.timeparse import (
    US,
    TimeContext,
    TimeFormatError,
    check_range,
    epoch_us,
    frac_us,
    parse_time,
)

CSV = "csv"
JSONL = "jsonl"
EXPECTS_CSV = "a header naming user, start and end (or duration) columns, then one row per session"
EXPECTS_JSONL = "one JSON object per line with user and start (and end or duration) fields"
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
MAX_INT = 2**63 - 1
_DECIMAL = re.compile(r"(\d{1,32}+)(?:\.(\d{0,32}+))?|\.(\d{1,32}+)")


def _columns(names: list[str]) -> dict[str, int]:
    low = [n.strip().lower().replace("-", "_").replace(" ", "_") for n in names]
    cols: dict[str, int] = {}
    for field, alias in ALIASES.items():
        for a in alias:
            if a in low:
                cols[field] = low.index(a)
                break
    return cols


def header_columns(line: str) -> tuple[str, dict[str, int]] | None:
    """``(delimiter, columns)`` if ``line`` is a usable CSV header, else None."""
    if len(line) > 4096:
        return None
    for delim in (",", "\t", ";"):
        if delim not in line and not line.strip():
            continue
        try:
            names = next(csv.reader([line], delimiter=delim), [])
        except csv.Error:
            continue
        cols = _columns(names)
        if "user" in cols and "start" in cols and ("end" in cols or "duration" in cols):
            return delim, cols
    return None


def sniff_csv(lines: list[str]) -> int:
    return 80 if any(header_columns(ln) for ln in lines) else 0


def _json_object(line: str) -> Any:
    try:
        return json.loads(line, parse_float=str, parse_constant=_no_constant)
    except RecursionError as e:
        raise LineError("JSON nested too deeply") from e
    except ValueError as e:  # JSONDecodeError, or a constant refused below
        raise LineError(f"not JSON: {str(e)[:80]}") from e


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number here")


def sniff_jsonl(lines: list[str]) -> int:
    hits = 0
    for ln in lines:
        if not ln.lstrip().startswith("{"):
            continue
        try:
            obj = _json_object(ln)
        except LineError:
            continue
        if isinstance(obj, dict) and _columns(list(obj)).keys() >= {"user", "start"}:
            hits += 1
    return 80 if hits and hits * 2 >= len(lines) else (30 if hits else 0)


def decimal_us(text: str) -> int:
    """``"1704103200.25"`` -> 1704103200250000 exactly (digits past the us truncated)."""
    m = _DECIMAL.fullmatch(text)
    if not m:
        raise TimeFormatError(f"not a decimal number of seconds {text[:40]!r}")
    if m.group(3) is not None:
        return frac_us(m.group(3))
    return int(m.group(1)) * US + frac_us(m.group(2) or "")


def _scalar(v: Any, what: str) -> Any:
    if isinstance(v, dict | list | bool):
        raise LineError(f"{what} is a JSON {type(v).__name__}, not a value")
    return v


def _time(v: Any, ctx: TimeContext) -> int:
    v = _scalar(v, "time")
    if isinstance(v, int):
        if v < 0 or v > 10**15:
            raise TimeFormatError(f"POSIX time out of range: {v}")
        return v * US
    s = str(v).strip()
    if s[:1].isdigit() or s[:1] == ".":
        try:
            return check_range(decimal_us(s))
        except TimeFormatError:
            if "-" not in s and ":" not in s:
                raise
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return parse_time(s, ctx)
    return check_range(epoch_us(dt, ctx))


def _duration(v: Any) -> int:
    v = _scalar(v, "duration")
    if isinstance(v, int):
        if not 0 <= v <= 10**12:
            raise LineError(f"duration out of range: {v}")
        return v * US
    return decimal_us(str(v).strip())


def _count(v: Any) -> int:
    if v is None or v == "":
        return 0
    v = _scalar(v, "byte count")
    if isinstance(v, int):
        n = v
    else:
        t = str(v).strip()
        if len(t) > 20 or not t.isascii() or not t.isdigit():
            raise LineError(f"not a byte count: {t[:40]!r}")
        n = int(t)
    if n < 0:
        raise LineError(f"negative byte count {v!r}")
    if n > MAX_INT:
        raise LineError(f"byte count over 2**63-1: {n}")
    return n


def _row(
    get: Any, cols: dict[str, int] | dict[str, str], ctx: TimeContext, src: str, seen: set[str]
) -> Session | None:
    """One row's session; None for a repeated session id; LineError for a bad row."""
    try:
        user_v = get(cols["user"])
    except (IndexError, KeyError) as e:
        raise LineError("no user field") from e
    user = "" if user_v is None else str(_scalar(user_v, "user")).strip()
    if not user:
        raise LineError("empty user")
    start = _time(get(cols["start"]), ctx)
    end_v = get(cols["end"]) if "end" in cols else None
    if end_v not in (None, ""):
        end = _time(end_v, ctx)
    elif "duration" in cols:
        end = check_range(start + _duration(get(cols["duration"])))
    else:
        raise LineError("no end or duration")
    if end < start:
        raise LineError("session ends before it starts")
    sid_v = get(cols["session_id"]) if "session_id" in cols else ""
    sid = "" if sid_v is None else str(_scalar(sid_v, "session id"))
    if sid:
        if sid in seen:
            return None
        seen.add(sid)
    b_in = _count(get(cols["bytes_in"])) if "bytes_in" in cols else 0
    b_out = _count(get(cols["bytes_out"])) if "bytes_out" in cols else 0
    return Session(user, start, end, b_in, b_out, src, sid)


def parse_csv(
    lines: Iterable[tuple[int, str]], path: str, ctx: TimeContext, acct: FileAccount,
    seen: set[str] | None = None, header: str | None = None,
) -> Iterator[Session | Issue]:
    """Rows after the first header line (lines before it are not CSV: foreign).

    ``header``: the header when ``lines`` start after it (the columnar path's fallback)."""
    seen = set() if seen is None else seen
    got = header_columns(header) if header is not None else None
    delim, cols = got if got is not None else (",", {})
    width = len(next(csv.reader([header], delimiter=delim), [])) if header is not None else 0
    for no, line in lines:
        if not line.strip():
            acct.skip("blank line")
            continue
        src = f"{path}:{no}"
        if got is None:
            got = header_columns(line)
            if got is None:
                yield Issue(src, "not a CSV session row (no header before it)", foreign=True)
                continue
            delim, cols = got
            width = len(next(csv.reader([line], delimiter=delim), []))
            acct.skip("CSV header")
            continue
        try:
            row = next(csv.reader([line], delimiter=delim), [])
        except csv.Error as e:
            yield Issue(src, f"bad CSV row: {e}")
            continue
        if (len(row) == width and row[cols["user"]].strip().lower() in ALIASES["user"]
                and header_columns(line) == got):
            acct.skip("repeated CSV header")
            continue
        if len(row) < width:
            yield Issue(src, f"{len(row)} fields, header has {width}", foreign=len(row) == 1)
            continue
        try:
            r = _row(row.__getitem__, cols, ctx, src, seen)
        except LineError as e:
            yield Issue(src, f"bad row: {e}")
            continue
        if r is None:
            acct.skip("repeated session id")
            continue
        acct.use()
        yield r


def parse_jsonl(
    lines: Iterable[tuple[int, str]], path: str, ctx: TimeContext, acct: FileAccount
) -> Iterator[Session | Issue]:
    seen: set[str] = set()
    for no, line in lines:
        if not line.strip():
            acct.skip("blank line")
            continue
        src = f"{path}:{no}"
        if not line.lstrip().startswith(("{", "[")):
            yield Issue(src, "not a JSON line", foreign=True)
            continue
        try:
            obj = _json_object(line)
            if not isinstance(obj, dict):
                raise LineError("JSON line is not an object")
            names = list(obj)
            idx = _columns(names)
            cols = {k: names[i] for k, i in idx.items()}
            if "user" not in cols or "start" not in cols:
                raise LineError("JSON object without user/start")
            r = _row(obj.get, cols, ctx, src, seen)
        except LineError as e:
            yield Issue(src, str(e) if str(e).startswith(("JSON", "not JSON")) else f"bad row: {e}")
            continue
        if r is None:
            acct.skip("repeated session id")
            continue
        acct.use()
        yield r
