"""libreswan (pluto) and strongSwan (charon) daemon logs: one session per IKE SA.

The unit of a session is the IKE SA (the ISAKMP SA of IKEv1): it is what a full IKE
exchange creates and what a resumption would replace.  Child SAs (IPsec SAs) created or
rekeyed under it are not connections: their bytes add up to the IKE SA's session, and
they are counted separately (``Child SAs``, ``Child SA rekeys`` in the file's account).

pluto: ``#N: ... ISAKMP SA established`` / ``established IKE SA`` start IKE SA N;
``#M: ... established Child SA using #N``, ``rekeyed Child SA #K using #N``, ``initiating
Quick Mode ... using isakmp#N`` and showstates' ``ISAKMP SA #N`` tie a Child SA to it (an
IKEv1 IPsec SA with no such tie goes to the newest IKE SA of its connection instance);
``ESP traffic information: in=84B out=84B`` gives a Child SA's final counters and
``ipsec trafficstatus``/showstates rows its running ones; ``deleting ISAKMP SA``/``deleting
IKE SA`` ends the session.  The user is the XAUTH user, else the peer id, else the
connection name.  charon: ``IKE_SA name[N] established between me[id]...peer[id]`` and
``deleting IKE_SA name[N]``; ``closing CHILD_SA ... (N bytes)`` adds a Child SA's counters.

Console transcripts (libreswan's test suite) carry no timestamps: a line takes the last
time seen in the file (syslog prefix or ``add_time``); a session never timed is reported.
A line with a syslog header from another program is not a swan line (offered to the
other formats); other lines of a transcript (prompts, commands, tool output) are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from analysis.account import FileAccount
from analysis.parsers.base import LogEvent, to_int
from analysis.session import Issue, LineError
from analysis.timeparse import US, TimeContext, check_range, find_time

NAME = "swan"
EXPECTS = ("pluto 'ISAKMP SA established'/'established IKE SA' and 'deleting ISAKMP/IKE SA', "
           "or charon 'IKE_SA ... established'/'deleting IKE_SA' lines")
CHILD_SAS = "Child SAs (counted in their IKE SA's session)"
CHILD_REKEYS = "Child SA rekeys (counted in their IKE SA's session)"
IKE_REKEYS = "IKE SA rekeys (the session continues)"

_A_STATE = re.compile(r" #(\d{1,10}+): ")  # "conn"[1] peer #N: message
_B_STATE = re.compile(r'#(\d{1,10}+): "([^"]{0,256}+)"')  # #N: "conn" ... (listings)
_USING = re.compile(r"(?:using|using isakmp|ISAKMP SA|IKE SA) ?#(\d{1,10}+)")
_REKEYED = re.compile(r"rekeyed (Child|IKE) SA #(\d{1,10}+)")
_ESP = re.compile(r"ESP traffic information: in=(\d{1,20}+)B out=(\d{1,20}+)B"
                  r"(?: XAUTHuser=(\S{1,256}+))?")
_XAUTH_USER = re.compile(r"XAUTH: (?:Answering XAUTH challenge with user='([^']{1,256}+)'|"
                         r"User:? '?([^':\s]{1,256}+)'?:? [Aa]uthentication [Ss]uccessful)")
_PEER_ID = re.compile(r"(?:FQDN|ID_FQDN|USER_FQDN|IPV4_ADDR|DER_ASN1_DN|ID_DER_ASN1_DN) "
                      r"'([^']{1,256}+)'")
_ADD_TIME = re.compile(r"add_time=(\d{1,20}+)")
_IN_OUT = re.compile(r"inBytes=(\d{1,20}+), outBytes=(\d{1,20}+)")
_ESP_IN_OUT = re.compile(r"ESPin=(\d{1,20}+)B ESPout=(\d{1,20}+)B")
_USERNAME = re.compile(r"username=([^,\s}]{1,256}+)")
_ID = re.compile(r"id='([^']{0,256}+)'")
_C_UP = re.compile(
    r"IKE_SA (\S{1,256}?)\[(\d{1,10}+)\] established between \S{0,512}?\[[^\]]{0,256}+\]"
    r"\.\.\.(\S{0,512}?)\[([^\]]{0,256}+)\]"
)
_C_DOWN = re.compile(r"deleting IKE_SA (\S{1,256}?)\[(\d{1,10}+)\] between \S{0,512}?\.\.\."
                     r"(\S{0,512}?)\[([^\]]{0,256}+)\]")
_C_BYTES = re.compile(r"closing CHILD_SA (\S{1,256}?)\{\d{1,10}+\} with SPIs \S{1,64}+ "
                      r"\((\d{1,20}+) bytes\) \S{1,64}+ \((\d{1,20}+) bytes\)")
_C_IKE = re.compile(r"<([^|>]{1,256}+)\|(\d{1,10}+)>")
_SWAN_WORDS = ("pluto", "charon", "ipsec", "swan", "IKE", "CHILD_SA", "ISAKMP")


def sniff(lines: list[str]) -> int:
    hits = 0
    for ln in lines:
        if ("pluto[" in ln or "charon" in ln or "add_time=" in ln or " IKE_SA " in ln
                or ln.startswith("IKE_SA ") or _A_STATE.search(ln) is not None
                or ln.lstrip().startswith(("ipsec ", "swanctl ", "strongswan "))):
            hits += 1
    return 60 if hits >= 2 else 0


@dataclass
class _IkeSa:
    key: str
    user: str
    conn: str
    children: dict[int, tuple[int, int]] = field(default_factory=dict)
    open: bool = True
    timed: bool = False  # a start time was given (else a Child SA's add_time may give one)

    def totals(self) -> tuple[int, int]:
        return (sum(b[0] for b in self.children.values()),
                sum(b[1] for b in self.children.values()))


@dataclass
class _Pluto:
    """What the parser knows about pluto's states while reading one file."""

    path: str
    ike: dict[int, _IkeSa] = field(default_factory=dict)  # IKE SA state -> session
    parent: dict[int, int] = field(default_factory=dict)  # Child SA state -> IKE SA state
    newest: dict[str, int] = field(default_factory=dict)  # connection instance -> IKE SA
    users: dict[int, str] = field(default_factory=dict)  # IKE SA state -> user seen early

    def start(self, n: int, conn: str, who: str, t: int | None, src: str) -> LogEvent:
        sa = _IkeSa(f"pluto:{conn.split('[', 1)[0]}:#{n}", who, conn, timed=t is not None)
        self.ike[n] = sa
        self.newest[conn] = n
        self.newest[conn.split("[", 1)[0]] = n
        return LogEvent("start", sa.key, sa.user, t, src)

    def ike_of(self, child: int, conn: str) -> int | None:
        p = self.parent.get(child)
        if p is None and child in self.ike:
            return child
        if p is None:
            p = self.newest.get(conn)
            if p is not None:
                self.parent[child] = p
        return p


def _user_of(sa: _IkeSa | None, *names: str | None) -> str | None:
    for n in names:
        if n:
            return n
    return sa.user if sa is not None else None


def parse(
    lines: Iterable[tuple[int, str]], path: str, ctx: TimeContext, acct: FileAccount
) -> Iterator[LogEvent | Issue]:
    last_t: int | None = None
    pl = _Pluto(path)
    charon_users: dict[str, str] = {}
    for no, line in lines:
        src = f"{path}:{no}"
        if not line.strip():
            acct.skip("blank line")
            continue
        stamped = False
        if line[:1] not in ('"', "#", " ", "|"):
            head = line.split('"', 1)[0].split(" IKE_SA", 1)[0][:64]
            try:
                t = find_time(head, ctx)
            except LineError as e:  # a stamp that is there but wrong: the line is unusable
                yield Issue(src, str(e))
                continue
            if t is not None:
                last_t, stamped = t, True
        try:
            out = _pluto_line(line, src, last_t, pl, acct)
            if out is None:
                out = _charon_line(line, src, last_t, charon_users, acct)
        except LineError as e:
            yield Issue(src, str(e))
            continue
        if out is None:
            if stamped and not any(w in line[:160] for w in _SWAN_WORDS):
                yield Issue(src, "a syslog line of another program (not pluto/charon)",
                            foreign=True)
            else:
                acct.skip("pluto/charon or console line that is not an SA event")
            continue
        new_t, events = out
        if new_t is not None:
            last_t = new_t if last_t is None else max(last_t, new_t)
        if events:
            acct.use()
        else:
            acct.skip("SA message that changes no session (repeat, deletion of a Child SA)")
        yield from events


def _pluto_line(
    line: str, src: str, last_t: int | None, pl: _Pluto, acct: FileAccount
) -> tuple[int | None, list[LogEvent]] | None:
    """Events of one pluto line (``(a time it teaches, events)``), or None if not pluto's."""
    b = _B_STATE.match(line)
    if b is not None:
        return _listing(line, int(b.group(1)), b.group(2), src, last_t, pl, acct)
    a = _A_STATE.search(line)
    if a is None:
        return None
    prefix, msg = line[: a.start()], line[a.end() :]
    cq = prefix.rfind('"')
    oq = prefix.rfind('"', 0, cq) if cq > 0 else -1
    if oq < 0:
        return None
    conn = prefix[oq + 1 : cq]
    inst = prefix[cq + 1 :].split(" ", 1)
    peer = inst[1].strip() if len(inst) > 1 else ""
    conn_i = conn + (inst[0] if inst[0].startswith("[") else "")
    n = int(a.group(1))
    ev: list[LogEvent] = []
    if "ISAKMP SA established" in msg or "established IKE SA" in msg:
        if n in pl.ike and pl.ike[n].open:
            return None, []  # established again after XAUTH/mode-config: the same SA
        who = pl.users.get(n) or _peer_id(msg) or (f"{conn}@{peer}" if peer else conn)
        return None, [pl.start(n, conn_i, who, last_t, src)]
    rk = _REKEYED.search(msg)
    if rk is not None and rk.group(1) == "IKE":
        old = int(rk.group(2))
        if old in pl.ike:
            pl.ike[n] = pl.ike[old]
            pl.newest[conn_i] = n
        acct.note(IKE_REKEYS)
        return None, []
    xu = _XAUTH_USER.search(msg)
    if xu is not None:
        who = xu.group(1) or xu.group(2)
        pl.users[n] = who
        sa = pl.ike.get(n)
        if sa is None:
            return None, []
        sa.user = who
        return None, [LogEvent("interim", sa.key, who, last_t, src)]
    using = _USING.search(msg)
    if using is not None and ("initiating Quick Mode" in msg or "established Child SA" in msg
                              or rk is not None or "deleting IPsec SA" in msg):
        pl.parent[n] = int(using.group(1))
    if "IPsec SA established" in msg or "established Child SA" in msg or rk is not None:
        if rk is not None:
            acct.note(CHILD_REKEYS)
        else:
            acct.note(CHILD_SAS)
        p = pl.ike_of(n, conn_i)
        um = _USERNAME.search(msg)
        if p is None:  # a Child SA of an IKE SA this log never showed: its own session
            ev.append(pl.start(n, conn_i, um.group(1) if um else f"{conn}@{peer}" if peer
                               else conn, last_t, src))
            pl.parent[n] = n
            return None, ev
        sa = pl.ike.get(p)
        if sa is None:
            ev.append(pl.start(p, conn_i, um.group(1) if um else conn, last_t, src))
            sa = pl.ike[p]
        if um:
            sa.user = um.group(1)
            ev.append(LogEvent("interim", sa.key, sa.user, last_t, src))
        return None, ev
    esp = _ESP.search(msg)
    if esp is not None:
        p = pl.ike_of(n, conn_i)
        if p is None:
            ev.append(pl.start(n, conn_i, esp.group(3) or conn, last_t, src))
            p = n
        sa = pl.ike.get(p)
        if sa is None:
            ev.append(pl.start(p, conn_i, esp.group(3) or conn, last_t, src))
            sa = pl.ike[p]
        sa.children[n] = (to_int(esp.group(1), "in"), to_int(esp.group(2), "out"))
        if esp.group(3):
            sa.user = esp.group(3)
        b_in, b_out = sa.totals()
        ev.append(LogEvent("interim" if sa.open else "stop", sa.key, sa.user, last_t, src,
                        bytes_in=b_in, bytes_out=b_out))
        return None, ev
    if "deleting ISAKMP SA" in msg or "deleting IKE SA" in msg or (
        "deleting state" in msg and n in pl.ike
    ):
        sa = pl.ike.get(n)
        if sa is None or not sa.open:
            return None, []
        sa.open = False
        b_in, b_out = sa.totals()
        return None, [LogEvent("stop", sa.key, sa.user, last_t, src, bytes_in=b_in,
                            bytes_out=b_out)]
    return None


def _peer_id(msg: str) -> str | None:
    m = _PEER_ID.search(msg)
    return m.group(1) if m else None


def _listing(
    line: str, n: int, conn: str, src: str, last_t: int | None, pl: _Pluto, acct: FileAccount
) -> tuple[int | None, list[LogEvent]]:
    """``ipsec trafficstatus`` and showstates rows: running counters of a Child SA."""
    ev: list[LogEvent] = []
    add = _ADD_TIME.search(line)
    t_add = check_range(to_int(add.group(1), "add_time") * US) if add else None
    now = last_t if t_add is None else max(last_t or t_add, t_add)
    if "established IKE SA" in line or "ISAKMP SA established" in line:
        if n not in pl.ike:
            return None, [pl.start(n, conn, conn, now, src)]
        return None, []
    using = _USING.search(line)
    if using is not None:
        pl.parent[n] = int(using.group(1))
    counters = _IN_OUT.search(line) or _ESP_IN_OUT.search(line)
    if counters is None:
        return None, []
    um, im = _USERNAME.search(line), _ID.search(line)
    p = pl.ike_of(n, conn)
    if p is None:
        p = n
        pl.parent[n] = n
    sa = pl.ike.get(p)
    if sa is None:
        ev.append(pl.start(p, conn, (um.group(1) if um else None) or (im.group(1) if im
                           else None) or conn, t_add if t_add is not None else now, src))
        sa = pl.ike[p]
    elif t_add is not None and not sa.timed:
        sa.timed = True
        ev.append(LogEvent("start", sa.key, sa.user, t_add, src))  # the first time it shows
    who = _user_of(None, um.group(1) if um else None, im.group(1) if im else None)
    if who is not None and (sa.user == sa.conn or um is not None):
        sa.user = who
    sa.children[n] = (to_int(counters.group(1), "inBytes"), to_int(counters.group(2),
                      "outBytes"))
    b_in, b_out = sa.totals()
    ev.append(LogEvent("interim", sa.key, sa.user, now, src, bytes_in=b_in, bytes_out=b_out))
    return t_add, ev


def _charon_line(
    line: str, src: str, last_t: int | None, users: dict[str, str], acct: FileAccount
) -> tuple[int | None, list[LogEvent]] | None:
    at = line.find("IKE_SA ")
    if at >= 0:
        cu = _C_UP.match(line, at)
        if cu is not None:
            who = cu.group(4) or cu.group(3)
            key = f"charon:{cu.group(1)}[{cu.group(2)}]"
            users[key] = who
            return None, [LogEvent("start", key, who, last_t, src)]
        dat = line.find("deleting IKE_SA ")
        cd = _C_DOWN.match(line, dat) if dat >= 0 else None
        if cd is not None:
            key = f"charon:{cd.group(1)}[{cd.group(2)}]"
            return None, [LogEvent("stop", key, users.get(key, cd.group(4)), last_t, src)]
        if "rekeyed" in line or "rekeying IKE_SA" in line:
            acct.note(IKE_REKEYS)
            return None, []
    cat = line.find("closing CHILD_SA ")
    cb = _C_BYTES.match(line, cat) if cat >= 0 else None
    if cb is not None:
        ike = _C_IKE.search(line)
        if ike is None:
            raise LineError("closing CHILD_SA without its <name|N> IKE_SA tag")
        key = f"charon:{ike.group(1)}[{ike.group(2)}]"
        return None, [LogEvent("usage", key, users.get(key, ike.group(1)), last_t, src,
                            bytes_in=to_int(cb.group(2), "bytes in"),
                            bytes_out=to_int(cb.group(3), "bytes out"))]
    if "CHILD_SA " in line and " established with SPIs" in line:
        acct.note(CHILD_SAS)
        return None, []
    if "CHILD_SA " in line and ("rekeyed" in line or "rekeying CHILD_SA" in line):
        acct.note(CHILD_REKEYS)
        return None, []
    return None
