"""RADIUS accounting: FreeRADIUS ``detail`` files, v4 attribute lists, Cisco ISE syslog.

Counters are 32-bit on the wire: the true byte count is ``Gigawords * 2**32 + Octets``.
The event time is ``Event-Timestamp`` (set by the NAS when the event happened); without
it, the server's receipt ``Timestamp`` minus ``Acct-Delay-Time``; without that, the record
header.  ``Acct-Input-Octets`` are octets the NAS received from the user (``bytes_in``).
Start/Interim-Update/Stop map to start/interim/stop; Accounting-On/Off are counted as
skipped records.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from analysis.account import FileAccount
from analysis.parsers.base import LogEvent, to_int
from analysis.session import MAX_BYTES, Issue, LineError
from analysis.timeparse import (
    US,
    TimeContext,
    find_time,
    parse_session_duration,
    parse_time,
)

DETAIL = "radius-detail"
ISE = "ise"
EXPECTS_DETAIL = "records with Acct-Status-Type Start, Interim-Update or Stop and a User-Name"
EXPECTS_ISE = "CISE_RADIUS_Accounting start/interim/stop requests with User-Name"
_STATUS = {"start": "start", "stop": "stop", "interim-update": "interim", "alive": "interim"}
_HEADER = re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\s*+")
_ATTR = re.compile(r"\s*+([A-Za-z][\w\-.]*+)\s*+(==|:=|\+=|=)\s*+(.*)")


def _unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        return v[1:-1]
    return v.removeprefix("::")


def record_to_event(
    attrs: dict[str, str], header_t: int | None, ctx: TimeContext, src: str, ns: str
) -> LogEvent | None:
    """The record's event; None for a record that is not about a session (Accounting-On);
    :class:`LineError` for a session record we cannot use."""
    status = _STATUS.get(attrs.get("Acct-Status-Type", "").lower())
    if status is None:
        if "Acct-Status-Type" in attrs:
            return None
        raise LineError("record without Acct-Status-Type")
    user = attrs.get("User-Name", "")
    if not user:
        raise LineError(f"{status} record without User-Name")
    if attrs.get("Event-Timestamp"):
        t: int | None = parse_time(attrs["Event-Timestamp"], ctx)
    elif attrs.get("Timestamp"):
        delay = to_int(attrs.get("Acct-Delay-Time", "0") or "0", "Acct-Delay-Time")
        if delay > 10**9:
            raise LineError(f"Acct-Delay-Time out of range: {delay}")
        t = parse_time(attrs["Timestamp"], ctx) - delay * US
    else:
        t = header_t
    if t is None:
        raise LineError("record without any time")

    def octets(name: str) -> int | None:
        if f"Acct-{name}-Octets" not in attrs:
            return None
        low = to_int(attrs[f"Acct-{name}-Octets"], f"Acct-{name}-Octets")
        high = to_int(attrs.get(f"Acct-{name}-Gigawords", "0") or "0", "Gigawords")
        total = (high << 32) + low
        if total > MAX_BYTES:
            raise LineError(f"Acct-{name} Gigawords/Octets over 2**63-1")
        return total

    dur_s = attrs.get("Acct-Session-Time")
    dur = parse_session_duration(dur_s) if dur_s not in (None, "") else None
    b_in, b_out = octets("Input"), octets("Output")
    sid = attrs.get("Acct-Unique-Session-Id") or attrs.get("Acct-Session-Id") or user
    key = f"{ns}:{attrs.get('NAS-IP-Address', '')}:{sid}"
    if status == "start":
        return LogEvent("start", key, user, t, src)
    return LogEvent(status, key, user, t, src, duration=dur, bytes_in=b_in, bytes_out=b_out)  # type: ignore[arg-type]


def sniff_detail(lines: list[str]) -> int:
    if any(_HEADER.match(ln) for ln in lines[:3]) and any("Acct-" in ln for ln in lines):
        return 90
    attrs = [ln for ln in lines if _ATTR.match(ln)]
    if any(ln.startswith("Acct-Status-Type") for ln in attrs) and len(attrs) * 2 >= len(
        [ln for ln in lines if ln.strip() and not ln.startswith("#")]
    ):
        return 80
    return 0


def parse_detail(
    lines: Iterable[tuple[int, str]], path: str, ctx: TimeContext, acct: FileAccount
) -> Iterator[LogEvent | Issue]:
    """Records are separated by blank lines (detail) or fill the file (attribute lists);
    ``#`` comments and ``==`` (expected-answer) lines are skipped."""
    attrs: dict[str, str] = {}
    header_t: int | None = None
    first = 0
    n_rec = 0  # lines of the current record

    def flush() -> Iterator[LogEvent | Issue]:
        nonlocal attrs, header_t, n_rec
        if attrs:
            src = f"{path}:{first}"
            try:
                r = record_to_event(attrs, header_t, ctx, src, "rad")
            except LineError as e:
                yield Issue(src, str(e), lines=n_rec)
            else:
                if r is None:
                    acct.skip(f"Acct-Status-Type {attrs['Acct-Status-Type'][:30]} record "
                              "(not a session)", n_rec)
                else:
                    acct.use(n_rec)
                    yield r
        elif n_rec:
            acct.skip("record header without attributes", n_rec)
        attrs, header_t, n_rec = {}, None, 0

    for no, line in lines:
        if not line.strip():
            yield from flush()
            acct.skip("blank line")
            continue
        if line.lstrip().startswith("#"):
            acct.skip("comment")
            continue
        if _HEADER.fullmatch(line):
            yield from flush()
            first = no
            n_rec = 1
            try:
                header_t = parse_time(line, ctx)
            except LineError as e:
                n_rec = 0
                yield Issue(f"{path}:{no}", str(e))
            continue
        m = _ATTR.fullmatch(line)
        if not m:
            yield Issue(f"{path}:{no}", "not an attribute line (Name = value)", foreign=True)
            continue
        if m.group(2) == "==":
            acct.skip("expected-answer line (==)")
            continue
        if not attrs and header_t is None:
            first = no
        n_rec += 1
        attrs[m.group(1)] = _unquote(m.group(3))
    yield from flush()


_ISE_HEAD = re.compile(r"CISE_RADIUS_Accounting\s{1,8}+(\d{1,20}+)\s{1,8}+(\d{1,9}+)\s{1,8}+"
                       r"(\d{1,9}+)\s{1,8}+")
_ISE_KV = re.compile(r"(?:^|,\s)([A-Za-z][\w\-. ]*?)=(.*?)(?=,\s[A-Za-z][\w\-. ]*?=|$)")


def sniff_ise(lines: list[str]) -> int:
    hits = sum(1 for ln in lines if "CISE_RADIUS_Accounting" in ln)
    return 95 if hits and hits * 2 >= len(lines) else (30 if hits else 0)


def parse_ise(
    lines: Iterable[tuple[int, str]], path: str, ctx: TimeContext, acct: FileAccount
) -> Iterator[LogEvent | Issue]:
    """Each syslog segment is parsed on its own; a continuation segment that repeats a
    stop is recognised by the assembler (same key, same counters)."""
    for no, line in lines:
        if not line.strip():
            acct.skip("blank line")
            continue
        src = f"{path}:{no}"
        at = line.find("CISE_RADIUS_Accounting")
        m = _ISE_HEAD.match(line, at) if at >= 0 else None
        if not m:
            if at >= 0:
                yield Issue(src, "CISE_RADIUS_Accounting without message id and segments")
            else:
                yield Issue(src, "not a Cisco ISE CISE_RADIUS_Accounting line", foreign=True)
            continue
        rest = line[m.end() :]
        ra = rest.find("Radius-Accounting:")
        if ra >= 0:
            colon = rest.find(": ", ra)
            body = rest[colon + 2 :] if colon >= 0 else rest[ra + len("Radius-Accounting:") :]
        else:
            body = rest
        if body.startswith("RADIUS Accounting"):
            body = body.split(",", 1)[1] if "," in body else ""
        attrs = {k.strip(): v.strip() for k, v in _ISE_KV.findall(body.strip())}
        try:
            header_t = find_time(rest[:ra] if ra >= 0 else rest, ctx)
            if header_t is None:  # continuation segments carry only the syslog header
                header_t = find_time(line[:at], ctx)
            r = record_to_event(attrs, header_t, ctx, src, "ise")
        except LineError as e:
            yield Issue(src, str(e))
            continue
        if r is None:
            acct.skip(f"Acct-Status-Type {attrs['Acct-Status-Type'][:30]} (not a session)")
            continue
        acct.use()
        yield r
