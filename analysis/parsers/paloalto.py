"""Palo Alto GlobalProtect system logs (CSV after a syslog header).

Session records are ``gateway-connected`` (start) and ``gateway-logout`` (stop); the
other GlobalProtect events (prelogin, auth, getconfig, hip-check, tunnel-latency,
config-release) describe steps of a login, not connections: they are counted as skipped
lines, by event name, so a file holding only those says so.  The column layout differs
between PAN-OS versions, so fields are located by content: the event name is the column
after the virtual system, the user a few columns later.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

from analysis.account import FileAccount
from analysis.parsers.base import LogEvent
from analysis.session import Issue, LineError
from analysis.timeparse import TimeContext, parse_time

NAME = "paloalto"
EXPECTS = "GLOBALPROTECT gateway-connected (start) and gateway-logout (stop) events"
_EVENTS = {"gateway-connected": "start", "gateway-logout": "stop"}


def sniff(lines: list[str]) -> int:
    hits = sum(1 for ln in lines if ",GLOBALPROTECT," in ln)
    return 90 if hits and hits * 2 >= len(lines) else (30 if hits else 0)


def parse(
    lines: Iterable[tuple[int, str]], path: str, ctx: TimeContext, acct: FileAccount
) -> Iterator[LogEvent | Issue]:
    for no, line in lines:
        if not line.strip():
            acct.skip("blank line")
            continue
        src = f"{path}:{no}"
        if ",GLOBALPROTECT," not in line:
            yield Issue(src, "not a GlobalProtect log line", foreign=True)
            continue
        try:
            row = next(csv.reader([line]), [])
        except csv.Error as e:
            yield Issue(src, f"bad CSV: {e}")
            continue
        try:
            if "GLOBALPROTECT" not in row:
                raise LineError("no GLOBALPROTECT column")
            i = row.index("GLOBALPROTECT")
            vsys = next((j for j in range(i, len(row)) if row[j].startswith("vsys")), -1)
            if vsys < 0 or vsys + 1 >= len(row):
                raise LineError("GlobalProtect line without vsys/event columns")
            event = row[vsys + 1]
            kind = _EVENTS.get(event)
            if kind is None:
                acct.skip(f"GlobalProtect {event[:40]}: a step of a login, not a connection")
                continue
            if vsys + 9 >= len(row) or i + 3 >= len(row):
                raise LineError(f"{event} with {len(row)} columns (user/peer missing)")
            t = parse_time(row[i + 3].replace("/", "-"), ctx)
            user, peer = row[vsys + 5], row[vsys + 9]
            if not user:
                raise LineError(f"{event} without a user")
        except LineError as e:
            yield Issue(src, str(e))
            continue
        acct.use()
        yield LogEvent(kind, f"gp:{user}@{peer}", user, t, src)  # type: ignore[arg-type]
