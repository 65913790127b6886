"""Format registry and auto-detection from a block of lines.

Detection scores every known format on a window of non-blank lines and picks the best;
an operator can always force one (``--format``).  The reader (:mod:`analysis.logs`)
calls it on successive windows, so leading junk does not hide a format, and again on the
lines a format rejected, so a file mixing formats loses neither.  A block no format
claims is reported, not guessed at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from analysis.account import FileAccount
from analysis.parsers import asa, fortigate, generic, openvpn, paloalto, pulse, radius, swan
from analysis.parsers.base import LogEvent
from analysis.session import Issue, Session
from analysis.timeparse import TimeContext

Lines = Iterable[tuple[int, str]]
ParseFn = Callable[[Lines, str, TimeContext, FileAccount], Iterator[LogEvent | Issue | Session]]


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    sniff: Callable[[list[str]], int]
    parse: ParseFn
    expects: str  # the records its sessions come from (said when a file yields none)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(generic.CSV, "CSV sessions (user,start,end|duration,bytes_in,bytes_out)",
               generic.sniff_csv, generic.parse_csv, generic.EXPECTS_CSV),
        Format(generic.JSONL, "JSON lines sessions (same fields)", generic.sniff_jsonl,
               generic.parse_jsonl, generic.EXPECTS_JSONL),
        Format(radius.DETAIL, "FreeRADIUS detail / attribute-list accounting",
               radius.sniff_detail, radius.parse_detail, radius.EXPECTS_DETAIL),
        Format(radius.ISE, "Cisco ISE RADIUS accounting syslog", radius.sniff_ise,
               radius.parse_ise, radius.EXPECTS_ISE),
        Format(asa.NAME, "Cisco ASA/FTD syslog (113019, 113039, 751025, 716002)", asa.sniff,
               asa.parse, asa.EXPECTS),
        Format(fortigate.NAME, "FortiGate VPN event log (tunnel-up/stats/down)",
               fortigate.sniff, fortigate.parse, fortigate.EXPECTS),
        Format(openvpn.STATUS, "OpenVPN status file v1/v2/v3", openvpn.sniff_status,
               openvpn.parse_status, openvpn.EXPECTS_STATUS),
        Format(openvpn.LOG, "OpenVPN server log", openvpn.sniff_log, openvpn.parse_log,
               openvpn.EXPECTS_LOG),
        Format(pulse.NAME, "Pulse/Ivanti Connect Secure events", pulse.sniff, pulse.parse,
               pulse.EXPECTS),
        Format(paloalto.NAME, "Palo Alto GlobalProtect (connected/logout)", paloalto.sniff,
               paloalto.parse, paloalto.EXPECTS),
        Format(swan.NAME, "libreswan pluto / strongSwan charon logs", swan.sniff, swan.parse,
               swan.EXPECTS),
    )
}


def detect(lines: list[str], exclude: Iterable[str] = ()) -> Format | None:
    """Best-scoring format for this block of lines (not one of ``exclude``), or None."""
    sample = [ln.rstrip("\r\n") for ln in lines if ln.strip()][:60]
    if not sample:
        return None
    skip = set(exclude)
    scored = [(f.sniff(sample), f) for f in FORMATS.values() if f.name not in skip]
    if not scored:
        return None
    score, best = max(scored, key=lambda sf: sf[0])
    return best if score > 0 else None
