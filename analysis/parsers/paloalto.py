"""Palo Alto GlobalProtect system logs (CSV after a syslog header).

Session records are ``gateway-connected`` (start) and ``gateway-logout`` (stop); the
other GlobalProtect events (prelogin, auth, getconfig, hip-check, tunnel-latency,
config-release) describe steps of a login, not connections, and are ignored.  The column
layout differs between PAN-OS versions, so fields are located by content: the event name
is the column after the virtual system, the user a few columns later.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

from analysis.parsers.base import Event
from analysis.session import Issue
from analysis.timeparse import TimeContext, TimeFormatError, parse_time

NAME = "paloalto"
_EVENTS = {"gateway-connected": "start", "gateway-logout": "stop"}


def sniff(lines: list[str]) -> int:
    hits = sum(1 for ln in lines if ",GLOBALPROTECT," in ln)
    return 90 if hits and hits * 2 >= len(lines) else 0


def parse(lines: Iterable[str], path: str, ctx: TimeContext) -> Iterator[Event | Issue]:
    for no, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        src = f"{path}:{no}"
        if ",GLOBALPROTECT," not in line:
            yield Issue(src, "not a GlobalProtect log line")
            continue
        row = next(csv.reader([line]))
        try:
            i = row.index("GLOBALPROTECT")
            vsys = next(j for j in range(i, len(row)) if row[j].startswith("vsys"))
            event = row[vsys + 1]
        except (ValueError, StopIteration, IndexError):
            yield Issue(src, "GlobalProtect line without vsys/event columns")
            continue
        kind = _EVENTS.get(event)
        if kind is None:
            continue
        try:
            t = parse_time(row[i + 3].replace("/", "-"), ctx)
            user = row[vsys + 5]
            peer = row[vsys + 9]
        except (IndexError, TimeFormatError) as e:
            yield Issue(src, f"{event}: {e}")
            continue
        if not user:
            yield Issue(src, f"{event} without a user")
            continue
        yield Event(kind, f"gp:{user}@{peer}", user, t, src)  # type: ignore[arg-type]
