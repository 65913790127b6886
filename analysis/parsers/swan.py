"""libreswan (pluto) and strongSwan (charon) daemon logs.

pluto: ``#N: ... IPsec SA established`` / ``established Child SA`` start state N,
``ipsec trafficstatus`` rows (``username=``, ``add_time=``, cumulative bytes) are interim
records, and ``#N: ESP traffic information: in=84B out=84B [XAUTHuser=u]`` is the stop
with the final counters.  The user is the XAUTH user, else the peer id, else the
connection name.  charon: ``IKE_SA name[N] established between me[id]...peer[id]`` and
``deleting IKE_SA name[N]``; ``closing CHILD_SA ... (N bytes)`` gives counters.

Console transcripts (libreswan's test suite) carry no timestamps: a line takes the last
time seen in the file (syslog prefix or ``add_time``); a session never timed is reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from analysis.parsers.base import Event
from analysis.session import Issue
from analysis.timeparse import TimeContext, TimeFormatError, find_time

NAME = "swan"
_STATE = re.compile(r'^(?:.*?\s)?"([^"]+)"(?:\[\d+\])?(?: (\S+))? #(\d+): (.*)$')
_TRAFFIC = re.compile(
    r'^#(\d+): "([^"]+)"(?:\[\d+\])?(?: ([^,\s]+))?, (?:username=([^,]+), )?type=ESP, '
    r"add_time=(\d+), inBytes=(\d+), outBytes=(\d+)(?:.*?id='([^']*)')?"
)
_ESP = re.compile(r"ESP traffic information: in=(\d+)B out=(\d+)B(?: XAUTHuser=(\S+))?")
_EST = re.compile(r"IPsec SA established|established Child SA")
_C_UP = re.compile(
    r"IKE_SA (\S+?)\[(\d+)\] established between \S+?\[[^\]]*\]\.\.\.(\S+?)\[([^\]]*)\]"
)
_C_DOWN = re.compile(r"deleting IKE_SA (\S+?)\[(\d+)\] between \S+?\.\.\.(\S+?)\[([^\]]*)\]")
_C_BYTES = re.compile(
    r"closing CHILD_SA (\S+?)\{\d+\} with SPIs \S+ \((\d+) bytes\) \S+ \((\d+) bytes\)"
)
_C_IKE = re.compile(r"<([^|>]+)\|(\d+)>")


def sniff(lines: list[str]) -> int:
    hits = sum(
        1
        for ln in lines
        if re.search(
            r'pluto\[|charon|"[^"]+"(\[\d+\])?( \S+)? #\d+:|IKE_SA .*(established|delet)|'
            r"add_time=|^\s*(ipsec|strongswan|swanctl) (whack|auto|up|down|add|trafficstatus)",
            ln,
        )
    )
    return 60 if hits >= 2 else 0


def parse(lines: Iterable[str], path: str, ctx: TimeContext) -> Iterator[Event | Issue]:
    last_t: float | None = None
    users: dict[str, str] = {}
    for no, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        src = f"{path}:{no}"
        body = line
        if re.match(r"^(<\d+>)?\S", line) and not line.startswith(('"', "#")):
            head = line.split('"', 1)[0].split(" IKE_SA", 1)[0][:64]
            try:
                t = find_time(head, ctx)
            except TimeFormatError:
                t = None
            if t is not None:
                last_t = t
        tm = _TRAFFIC.match(body)
        if tm:
            n, conn, peer, user, add_t, b_in, b_out, pid = tm.groups()
            last_t = max(last_t or 0.0, float(add_t))
            who = user or pid or (f"{conn}@{peer}" if peer else conn)
            key = f"swan:{conn}:{peer or ''}:#{n}"
            users[key] = who
            yield Event("start", key, who, float(add_t), src)
            yield Event("interim", key, who, last_t, src, bytes_in=int(b_in), bytes_out=int(b_out))
            continue
        sm = _STATE.match(body)
        if sm:
            conn, peer, n, msg = sm.groups()
            key = f"swan:{conn}:{peer or ''}:#{n}"
            esp = _ESP.search(msg)
            if esp:
                who = esp.group(3) or users.get(key) or (f"{conn}@{peer}" if peer else conn)
                yield Event("stop", key, who, last_t, src,
                            bytes_in=int(esp.group(1)), bytes_out=int(esp.group(2)))
            elif _EST.search(msg):
                um = re.search(r"username=([^\s}]+)", msg)
                who = um.group(1) if um else (f"{conn}@{peer}" if peer else conn)
                users[key] = who
                yield Event("start", key, who, last_t, src)
            continue
        cu = _C_UP.search(body)
        if cu:
            who = cu.group(4) or cu.group(3)
            key = f"charon:{cu.group(1)}[{cu.group(2)}]"
            users[key] = who
            yield Event("start", key, who, last_t, src)
            continue
        cd = _C_DOWN.search(body)
        if cd:
            key = f"charon:{cd.group(1)}[{cd.group(2)}]"
            yield Event("stop", key, users.get(key, cd.group(4)), last_t, src)
            continue
        cb = _C_BYTES.search(body)
        if cb:
            ike = _C_IKE.search(body)
            if ike:
                key = f"charon:{ike.group(1)}[{ike.group(2)}]"
                yield Event("usage", key, users.get(key, ike.group(1)), last_t, src,
                            bytes_in=int(cb.group(2)), bytes_out=int(cb.group(3)))
