"""Pulse / Ivanti Connect Secure event logs.

The body is ``... - [peer] user(realm)[roles][short id] - message``.  The session key is
the short id in the header when present (newer releases), else the ``sid...`` in the
message, else user@peer: the same session is then recognised across "session ended",
"logout" and "timed out" lines.  Starts: agent login, VPN tunnel session started, session
created/resumed.  Stops: session ended, logout, timed out, deleted (with "Bandwidth
consumed [N] bytes": a total without direction, attributed to ``bytes_in``).  "Closed
connection ... after N seconds, with A bytes read and B bytes written" is one transport
connection of the session: its bytes add up (read by the gateway = ``bytes_in``).

Patterns are matched once at the first occurrence of their literal, with atomic groups.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from analysis.account import FileAccount
from analysis.parsers.base import LogEvent, to_int
from analysis.session import Issue, LineError
from analysis.timeparse import US, TimeContext, find_time

NAME = "pulse"
EXPECTS = ("session started/created/resumed, session ended/logout/timed out/deleted, and "
           "'Closed connection ... bytes read ... bytes written' events")
_HEAD = re.compile(
    r"PulseSecure:(?>.*? - \[)([^\]]*+)\] (?>(.*?)\()([^)]*+)\)((?:\[[^\]]*+\])*+) - (.*+)"
)
_SID = re.compile(r"session:\s*+(sid[0-9a-f]++)")
_STARTS = ("Agent login succeeded", "VPN Tunneling: Session started", "Session created for user",
           "Session resumed from user agent")
_STOPS = ("VPN Tunneling: Session ended", "Logout from", "Session timed out")
_CLOSED = re.compile(
    r"Closed connection to (?>.*? after (\d{1,12}) seconds, with (\d{1,20}) bytes read)"
    r"(?>.*? and (\d{1,20}) bytes written)"
)
_BW = re.compile(r"Bandwidth consumed \[(\d{0,20}+)\] bytes")
_SHORT_ID = re.compile(r"\[([0-9a-f]{8,64}+)\]")


def sniff(lines: list[str]) -> int:
    hits = sum(1 for ln in lines if "PulseSecure:" in ln)
    return 95 if hits and hits * 2 >= len(lines) else (30 if hits else 0)


def _is_stop(msg: str) -> bool:
    if any(w in msg for w in _STOPS):
        return True
    at = msg.find("Session:[")
    return at >= 0 and msg.find(" for user", at) >= 0 and msg.find("deleted", at) >= 0


def parse(
    lines: Iterable[tuple[int, str]], path: str, ctx: TimeContext, acct: FileAccount
) -> Iterator[LogEvent | Issue]:
    for no, line in lines:
        if not line.strip():
            acct.skip("blank line")
            continue
        src = f"{path}:{no}"
        at = line.find("PulseSecure:")
        if at < 0:
            yield Issue(src, "not a Pulse Connect Secure line", foreign=True)
            continue
        m = _HEAD.match(line, at)
        if not m:
            yield Issue(src, "Pulse line without '- [peer] user(realm)[roles] - message'")
            continue
        peer, roles, msg = m.group(1), m.group(4), m.group(5)
        user = m.group(2).split("::")[-1].strip()  # drop the network-zone prefix
        if not user or user == "System":
            acct.skip("system message (no user)")
            continue
        is_start = any(w in msg for w in _STARTS)
        is_stop = not is_start and _is_stop(msg)
        c_at = msg.find("Closed connection to ")
        closed = _CLOSED.match(msg, c_at) if c_at >= 0 else None
        if not (is_start or is_stop or closed):
            acct.skip("user event that is not a session start/stop/connection")
            continue
        try:
            t = find_time(line[: m.start(5)], ctx)
            if t is None:
                raise LineError("Pulse line without a timestamp")
            ids = _SHORT_ID.findall(roles)
            sid = _SID.search(msg)
            key = "pcs:" + (ids[-1] if ids else sid.group(1) if sid else f"{user}@{peer}")
            if closed:
                ev = LogEvent("usage", key, user, t, src, duration=int(closed.group(1)) * US,
                           bytes_in=to_int(closed.group(2), "bytes read"),
                           bytes_out=to_int(closed.group(3), "bytes written"))
            elif is_start:
                ev = LogEvent("start", key, user, t, src)
            else:
                bw = _BW.search(msg)
                total = to_int(bw.group(1), "Bandwidth consumed") if bw and bw.group(1) else None
                ev = LogEvent("stop", key, user, t, src, bytes_total=total)
        except LineError as e:
            yield Issue(src, str(e))
            continue
        acct.use()
        yield ev
