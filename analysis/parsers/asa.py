"""Cisco ASA / FTD syslog: AnyConnect and IKE remote-access sessions.

Which messages make sessions (Cisco's syslog reference):

* 113019 ``Session disconnected ... Duration: 1d 19h:41m:14s, Bytes xmt: N, Bytes rcv: N``:
  a whole session on one line (xmt = sent by the ASA = ``bytes_out``);
* 113039 ``AnyConnect parent session started`` and 751025 (IKEv2 address assigned): starts;
* 716002 ``WebVPN session terminated``: a stop without counters.

Failover replication (721016/721018), per-SA (602303/602304), reconnect notices
(716058/716059, 722028/722032) and firewall teardowns (302016) are not connections and
are ignored.  Any line without ``%ASA-``/``%FTD-`` is reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from analysis.parsers.base import Event, peer_host
from analysis.session import Issue
from analysis.timeparse import TimeContext, TimeFormatError, find_time, parse_session_duration

NAME = "asa"
_TAG = re.compile(r"%(?:ASA|FTD)-(?:[a-z]+-)?\d-(\d{6}):\s*(.*)$")
_V = r"<?([^<>]*?)>?"
_113019 = re.compile(
    r"Group = (.*?), Username = (.*?), IP = (\S+?), Session disconnected\."
    r".*?Duration: (?:(?:(\d+)d )?(\d+)h:(\d+)m:(\d+)s|([^,]+)), Bytes xmt: (\d+), "
    r"Bytes rcv: (\d+)"
)  # the usual ``1d 19h:41m:14s`` is taken apart here, anything else by parse_session_duration
_GUI = re.compile(r"Group\s+" + _V + r"\s+User\s+" + _V + r"\s+IP\s+" + _V + r"\s")
# "Group <g> User <u> IP <a> ...": the lazy _GUI gives the same fields when g holds no
# "User", u no "IP" and a no white space (checked); _GUI's backtracking costs microseconds
_GUI_PLAIN = re.compile(r"Group <([^<>]*)> User <([^<>]*)> IP <([^<>\s]*)>\s")
_751025 = re.compile(r"Local:\S+ Remote:(\S+) Username:(\S+)")

START_IDS = {"113039", "751025"}
STOP_IDS = {"716002"}
WANTED = START_IDS | STOP_IDS | {"113019"}


def sniff(lines: list[str]) -> int:
    hits = sum(1 for ln in lines if _TAG.search(ln))
    return 90 if hits and hits * 2 >= len(lines) else (40 if hits else 0)


def _fields(msg: str) -> tuple[str, str] | None:
    p = _GUI_PLAIN.match(msg + " ")
    if p and "User" not in p.group(1) and "IP" not in p.group(2) and p.group(3).isprintable():
        return p.group(2).strip(), p.group(3)
    m = _GUI.search(msg + " ")
    if m:
        return m.group(2).strip(), m.group(3).strip()
    return None


def parse(lines: Iterable[str], path: str, ctx: TimeContext) -> Iterator[Event | Issue]:
    for no, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line or line.isspace():
            continue
        at = line.find("%ASA-")
        if at < 0:
            at = line.find("%FTD-")
        # the usual "%ASA-6-302013:" without a regex: most lines of a real ASA log are
        # firewall messages we skip, so this test decides the parser's speed
        msg_id = line[at + 7 : at + 13]
        if (
            at >= 0 and line[at + 13 : at + 14] == ":" and line[at + 6] == "-"
            and line[at + 5].isdecimal() and msg_id.isdecimal()
        ):
            if msg_id not in WANTED:
                continue
            msg = line[at + 14 :].lstrip()
        else:
            m = _TAG.match(line, at) if at >= 0 else None
            if not m:
                yield Issue(f"{path}:{no}",
                            "not a Cisco ASA/FTD syslog line (no %ASA-n-nnnnnn tag)")
                continue
            msg_id = m.group(1)
            if msg_id not in WANTED:
                continue
            msg = m.group(2)
        src = f"{path}:{no}"
        try:
            t = find_time(line[:at], ctx)
        except TimeFormatError as e:
            yield Issue(src, str(e))
            continue
        if t is None:
            yield Issue(src, f"%ASA-{msg_id} without a timestamp")
            continue
        if msg_id == "113019":
            d = _113019.search(msg)
            if not d:
                yield Issue(src, "113019 without Username/IP/Duration/Bytes fields")
                continue
            days, hours, mins, secs, other, xmt, rcv = d.group(4, 5, 6, 7, 8, 9, 10)
            if other is None:
                dur = (int(days) if days else 0) * 86400.0 + int(hours) * 3600 + int(
                    mins) * 60 + int(secs)
            else:
                try:
                    dur = parse_session_duration(other)
                except ValueError as e:
                    yield Issue(src, str(e))
                    continue
            out_b, in_b = int(xmt), int(rcv)  # (\d+): what to_int accepts
            user, ip = d.group(2).strip(), peer_host(d.group(3))
            yield Event("stop", "asa:" + user + "@" + ip, user, t, src, dur, in_b, out_b)
            continue
        if msg_id == "751025":
            d = _751025.search(msg)
            if not d:
                yield Issue(src, "751025 without Remote:/Username: fields")
                continue
            user, ip = d.group(2), peer_host(d.group(1))
        else:
            f = _fields(msg)
            if f is None or not f[0]:
                yield Issue(src, f"{msg_id} without Group/User/IP fields")
                continue
            user, ip = f[0], peer_host(f[1])
        if msg_id in START_IDS:
            yield Event("start", f"asa:{user}@{ip}", user, t, src)
        else:
            yield Event("stop", f"asa:{user}@{ip}", user, t, src)
