"""Cisco ASA / FTD syslog: AnyConnect and IKE remote-access sessions.

Which messages make sessions (Cisco's syslog reference):

* 113019 ``Session disconnected ... Duration: 1d 19h:41m:14s, Bytes xmt: N, Bytes rcv: N``:
  a whole session on one line (xmt = sent by the ASA = ``bytes_out``);
* 113039 ``AnyConnect parent session started`` and 751025 (IKEv2 address assigned): starts;
* 716002 ``WebVPN session terminated``: a stop without counters.

Failover replication (721016/721018), per-SA (602303/602304), reconnect notices
(716058/716059, 722028/722032) and firewall teardowns (302016) are not connections: they
are counted as skipped lines, by message id.  A line without ``%ASA-``/``%FTD-`` is not
an ASA line (offered to the other formats, else reported).

Every message pattern is matched once, at the first occurrence of its leading literal,
with atomic groups and bounded white space: linear in the line's length.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from analysis.account import FileAccount
from analysis.parsers.base import LogEvent, peer_host, to_int
from analysis.session import Issue, LineError
from analysis.timeparse import US, TimeContext, find_time, parse_session_duration

NAME = "asa"
EXPECTS = ("113039 (AnyConnect parent session started) or 751025 starts, 113019 "
           "(Session disconnected, with duration and bytes), 716002 stops")
_TAG = re.compile(r"%(?:ASA|FTD)-(?:[a-z]{1,20}+-)?\d-(\d{6}):[ \t]*+")
_113019 = re.compile(
    r"Group = (?>(.*?), Username = )(?>(.*?), IP = )(?>(\S+?), Session disconnected\.)"
    r"(?>.*?Duration: )(?:(?:(\d{1,9})d )?(\d{1,12})h:(\d{1,12})m:(\d{1,12})s|([^,]{1,64}+)), "
    r"Bytes xmt: (\d{1,20}+), Bytes rcv: (\d{1,20}+)"
)  # the usual ``1d 19h:41m:14s`` is taken apart here, anything else by parse_session_duration
_V = r"<?+(?>([^<>]*?)>?\s{1,8}+"
_GUI = re.compile(
    r"Group\s{1,8}+" + _V + r"User\s{1,8}+)" + _V + r"IP\s{1,8}+)" + r"<?+(?>([^<>]*?)>?\s)"
)
# "Group <g> User <u> IP <a> ...": the atomic _GUI gives the same fields when g holds no
# "User", u no "IP" and a no white space (checked); _GUI_PLAIN is the common case, faster
_GUI_PLAIN = re.compile(r"Group <([^<>]*+)> User <([^<>]*+)> IP <([^<>\s]*+)>\s")
_751025 = re.compile(r"Local:\S*+ Remote:(\S++) Username:(\S++)")

START_IDS = {"113039", "751025"}
STOP_IDS = {"716002"}
WANTED = START_IDS | STOP_IDS | {"113019"}


def sniff(lines: list[str]) -> int:
    hits = sum(1 for ln in lines if "%ASA-" in ln or "%FTD-" in ln)
    return 90 if hits and hits * 2 >= len(lines) else (40 if hits else 0)


def _fields(msg: str) -> tuple[str, str] | None:
    p = _GUI_PLAIN.match(msg + " ")
    if p and "User" not in p.group(1) and "IP" not in p.group(2) and p.group(3).isprintable():
        return p.group(2).strip(), p.group(3)
    at = msg.find("Group")
    m = _GUI.match(msg + " ", at) if at >= 0 else None
    if m:
        return m.group(2).strip(), m.group(3).strip()
    return None


def _disconnect(msg: str, src: str, t: int) -> LogEvent:
    at = msg.find("Group = ")
    d = _113019.match(msg, at) if at >= 0 else None
    if not d:
        raise LineError("113019 without Username/IP/Duration/Bytes fields")
    days, hours, mins, secs, other, xmt, rcv = d.group(4, 5, 6, 7, 8, 9, 10)
    if other is None:
        dur = ((int(days) if days else 0) * 86400 + int(hours) * 3600 + int(mins) * 60
               + int(secs)) * US
    else:
        dur = parse_session_duration(other)
    out_b, in_b = to_int(xmt, "Bytes xmt"), to_int(rcv, "Bytes rcv")
    user, ip = d.group(2).strip(), peer_host(d.group(3))  # LineError for a broken peer
    return LogEvent("stop", "asa:" + user + "@" + ip, user, t, src, dur, in_b, out_b)


_SKIP: dict[str, str] = {}  # message id -> the skip reason (formatted once)


def _skip_reason(msg_id: str) -> str:
    why = _SKIP.get(msg_id)
    if why is None:
        why = _SKIP[msg_id] = f"%ASA-{msg_id}: not a session event"
    return why


def parse(
    lines: Iterable[tuple[int, str]], path: str, ctx: TimeContext, acct: FileAccount
) -> Iterator[LogEvent | Issue]:
    skip = acct.skipped
    for no, line in lines:
        if not line or line.isspace():
            skip["blank line"] += 1
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
                skip[_SKIP.get(msg_id) or _skip_reason(msg_id)] += 1
                continue
            msg = line[at + 14 :].lstrip()
        else:
            m = _TAG.match(line, at) if at >= 0 else None
            if not m:
                yield Issue(f"{path}:{no}", "not a Cisco ASA/FTD syslog line (no "
                            "%ASA-n-nnnnnn tag)", foreign=True)
                continue
            msg_id = m.group(1)
            if msg_id not in WANTED:
                skip[_skip_reason(msg_id)] += 1
                continue
            msg = line[m.end() :]
        src = f"{path}:{no}"
        try:
            t = find_time(line[:at], ctx)
            if t is None:
                raise LineError(f"%ASA-{msg_id} without a timestamp")
            if msg_id == "113019":
                ev = _disconnect(msg, src, t)
            else:
                if msg_id == "751025":
                    at_l = msg.find("Local:")
                    d = _751025.match(msg, at_l) if at_l >= 0 else None
                    if not d:
                        raise LineError("751025 without Remote:/Username: fields")
                    user, ip = d.group(2), peer_host(d.group(1))
                else:
                    f = _fields(msg)
                    if f is None or not f[0]:
                        raise LineError(f"{msg_id} without Group/User/IP fields")
                    user, ip = f[0], peer_host(f[1])
                ev = LogEvent("start" if msg_id in START_IDS else "stop", f"asa:{user}@{ip}",
                           user, t, src)
        except LineError as e:
            yield Issue(src, str(e))
            continue
        acct.used += 1
        yield ev
