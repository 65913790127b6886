"""Pulse / Ivanti Connect Secure event logs.

The body is ``... - [peer] user(realm)[roles][short id] - message``.  The session key is
the short id in the header when present (newer releases), else the ``sid...`` in the
message, else user@peer: the same session is then recognised across "session ended",
"logout" and "timed out" lines.  Starts: agent login, VPN tunnel session started, session
created/resumed.  Stops: session ended, logout, timed out, deleted (with "Bandwidth
consumed [N] bytes": a total without direction, attributed to ``bytes_in``).  "Closed
connection ... after N seconds, with A bytes read and B bytes written" is one transport
connection of the session: its bytes add up (read by the gateway = ``bytes_in``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from analysis.parsers.base import Event
from analysis.session import Issue
from analysis.timeparse import TimeContext, TimeFormatError, find_time

NAME = "pulse"
_HEAD = re.compile(
    r"PulseSecure:.*? - \[([^\]]*)\] (.*?)\(([^)]*)\)((?:\[[^\]]*\])*) - (.*)$"
)
_SID = re.compile(r"session:\s*(sid[0-9a-f]+)")
_START = re.compile(
    r"Agent login succeeded|VPN Tunneling: Session started|Session created for user|"
    r"Session resumed from user agent"
)
_STOP = re.compile(
    r"VPN Tunneling: Session ended|Logout from|Session timed out|Session:\[\w+\] for user.*deleted"
)
_CLOSED = re.compile(
    r"Closed connection to .*? after (\d+) seconds, "
    r"with (\d+) bytes read.*? and (\d+) bytes written"
)
_BW = re.compile(r"Bandwidth consumed \[(\d*)\] bytes")


def sniff(lines: list[str]) -> int:
    hits = sum(1 for ln in lines if "PulseSecure:" in ln)
    return 95 if hits and hits * 2 >= len(lines) else 0


def parse(lines: Iterable[str], path: str, ctx: TimeContext) -> Iterator[Event | Issue]:
    for no, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        src = f"{path}:{no}"
        m = _HEAD.search(line)
        if not m:
            yield Issue(src, "not a Pulse Connect Secure event line")
            continue
        peer, roles, msg = m.group(1), m.group(4), m.group(5)
        user = m.group(2).split("::")[-1].strip()  # drop the network-zone prefix
        if not user or user == "System":
            continue
        is_start, is_stop, closed = _START.search(msg), _STOP.search(msg), _CLOSED.search(msg)
        if not (is_start or is_stop or closed):
            continue
        try:
            t = find_time(line[: m.start(5)], ctx)
        except TimeFormatError as e:
            yield Issue(src, str(e))
            continue
        if t is None:
            yield Issue(src, "Pulse line without a timestamp")
            continue
        ids = re.findall(r"\[([0-9a-f]{8,})\]", roles)
        sid = _SID.search(msg)
        key = "pcs:" + (ids[-1] if ids else sid.group(1) if sid else f"{user}@{peer}")
        if closed:
            yield Event("usage", key, user, t, src, duration=float(closed.group(1)),
                        bytes_in=int(closed.group(2)), bytes_out=int(closed.group(3)))
        elif is_start:
            yield Event("start", key, user, t, src)
        else:
            bw = _BW.search(msg)
            total = int(bw.group(1)) if bw and bw.group(1) else None
            yield Event("stop", key, user, t, src, bytes_total=total)
