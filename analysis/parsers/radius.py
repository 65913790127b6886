"""RADIUS accounting: FreeRADIUS ``detail`` files, v4 attribute lists, Cisco ISE syslog.

Counters are 32-bit on the wire: the true byte count is ``Gigawords * 2**32 + Octets``.
The event time is ``Event-Timestamp`` (set by the NAS when the event happened); without
it, the server's receipt ``Timestamp`` minus ``Acct-Delay-Time``; without that, the record
header.  ``Acct-Input-Octets`` are octets the NAS received from the user (``bytes_in``).
Start/Interim-Update/Stop map to start/interim/stop; Accounting-On/Off are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from analysis.parsers.base import Event, to_int
from analysis.session import Issue
from analysis.timeparse import TimeContext, TimeFormatError, find_time, parse_time

DETAIL = "radius-detail"
ISE = "ise"
_STATUS = {"start": "start", "stop": "stop", "interim-update": "interim", "alive": "interim"}
_HEADER = re.compile(r"^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\s*$")
_ATTR = re.compile(r"^\s*([A-Za-z][\w\-.]*)\s*(==|:=|\+=|=)\s*(.*?)\s*$")


def _unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        return v[1:-1]
    return v.removeprefix("::")


def record_to_event(
    attrs: dict[str, str], header_t: float | None, ctx: TimeContext, src: str, ns: str
) -> Event | Issue | None:
    status = _STATUS.get(attrs.get("Acct-Status-Type", "").lower())
    if status is None:
        if "Acct-Status-Type" in attrs:
            return None
        return Issue(src, "record without Acct-Status-Type")
    user = attrs.get("User-Name", "")
    if not user:
        return Issue(src, f"{status} record without User-Name")
    try:
        if attrs.get("Event-Timestamp"):
            t: float | None = parse_time(attrs["Event-Timestamp"], ctx)
        elif attrs.get("Timestamp"):
            t = parse_time(attrs["Timestamp"], ctx) - float(attrs.get("Acct-Delay-Time", "0"))
        else:
            t = header_t
        if t is None:
            return Issue(src, "record without any time")

        def octets(name: str) -> int | None:
            if f"Acct-{name}-Octets" not in attrs:
                return None
            low = to_int(attrs[f"Acct-{name}-Octets"], f"Acct-{name}-Octets")
            high = to_int(attrs.get(f"Acct-{name}-Gigawords", "0") or "0", "Gigawords")
            return (high << 32) + low

        dur_s = attrs.get("Acct-Session-Time")
        dur = float(dur_s) if dur_s not in (None, "") else None
        b_in, b_out = octets("Input"), octets("Output")
    except (ValueError, TimeFormatError) as e:
        return Issue(src, str(e))
    sid = attrs.get("Acct-Unique-Session-Id") or attrs.get("Acct-Session-Id") or user
    key = f"{ns}:{attrs.get('NAS-IP-Address', '')}:{sid}"
    if status == "start":
        return Event("start", key, user, t, src)
    return Event(status, key, user, t, src, duration=dur, bytes_in=b_in, bytes_out=b_out)  # type: ignore[arg-type]


def sniff_detail(lines: list[str]) -> int:
    if any(_HEADER.match(ln) for ln in lines[:3]) and any("Acct-" in ln for ln in lines):
        return 90
    attrs = [ln for ln in lines if _ATTR.match(ln)]
    if any(ln.startswith("Acct-Status-Type") for ln in attrs) and len(attrs) * 2 >= len(
        [ln for ln in lines if ln.strip() and not ln.startswith("#")]
    ):
        return 80
    return 0


def parse_detail(lines: Iterable[str], path: str, ctx: TimeContext) -> Iterator[Event | Issue]:
    """Records are separated by blank lines (detail) or fill the file (attribute lists);
    ``#`` comments and ``==`` (expected-answer) lines are ignored."""
    attrs: dict[str, str] = {}
    header_t: float | None = None
    first = 0

    def flush() -> Iterator[Event | Issue]:
        nonlocal attrs, header_t
        if attrs:
            r = record_to_event(attrs, header_t, ctx, f"{path}:{first}", "rad")
            if r is not None:
                yield r
        attrs, header_t = {}, None

    for no, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            yield from flush()
            continue
        if line.lstrip().startswith("#"):
            continue
        if _HEADER.match(line):
            yield from flush()
            first = no
            try:
                header_t = parse_time(line, ctx)
            except TimeFormatError as e:
                yield Issue(f"{path}:{no}", str(e))
            continue
        m = _ATTR.match(line)
        if not m:
            yield Issue(f"{path}:{no}", "not an attribute line (Name = value)")
            continue
        if m.group(2) == "==":
            continue
        if not attrs and header_t is None:
            first = no
        attrs[m.group(1)] = _unquote(m.group(3))
    yield from flush()


_ISE_HEAD = re.compile(r"CISE_RADIUS_Accounting\s+(\d+)\s+(\d+)\s+(\d+)\s+")
_ISE_KV = re.compile(r"(?:^|,\s)([A-Za-z][\w\-. ]*?)=(.*?)(?=,\s[A-Za-z][\w\-. ]*?=|$)")


def sniff_ise(lines: list[str]) -> int:
    hits = sum(1 for ln in lines if "CISE_RADIUS_Accounting" in ln)
    return 95 if hits and hits * 2 >= len(lines) else 0


def parse_ise(lines: Iterable[str], path: str, ctx: TimeContext) -> Iterator[Event | Issue]:
    """Each syslog segment is parsed on its own; a continuation segment that repeats a
    stop is recognised by the assembler (same key, same counters)."""
    for no, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        src = f"{path}:{no}"
        m = _ISE_HEAD.search(line)
        if not m:
            yield Issue(src, "not a Cisco ISE CISE_RADIUS_Accounting line")
            continue
        rest = line[m.end() :]
        body = rest.split(": ", 1)[1] if "Radius-Accounting:" in rest else rest
        if body.startswith("RADIUS Accounting"):
            body = body.split(",", 1)[1] if "," in body else ""
        attrs = {k.strip(): v.strip() for k, v in _ISE_KV.findall(body.strip())}
        try:
            header_t = find_time(rest.split("Radius-Accounting:")[0], ctx)
            if header_t is None:  # continuation segments carry only the syslog header
                header_t = find_time(line[: m.start()], ctx)
        except TimeFormatError as e:
            yield Issue(src, str(e))
            continue
        r = record_to_event(attrs, header_t, ctx, src, "ise")
        if r is not None:
            yield r
