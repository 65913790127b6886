"""Format registry and auto-detection from a file's first lines.

Detection scores every known format on the first non-blank lines and picks the best; an
operator can always force one (``--format``).  A file no format claims is reported, not
guessed at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from analysis.parsers import asa, fortigate, generic, openvpn, paloalto, pulse, radius, swan
from analysis.parsers.base import Event
from analysis.session import Issue, Session
from analysis.timeparse import TimeContext

ParseFn = Callable[[Iterable[str], str, TimeContext], Iterator[Event | Issue | Session]]


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    sniff: Callable[[list[str]], int]
    parse: ParseFn


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(generic.CSV, "CSV sessions (user,start,end|duration,bytes_in,bytes_out)",
               generic.sniff_csv, generic.parse_csv),
        Format(generic.JSONL, "JSON lines sessions (same fields)", generic.sniff_jsonl,
               generic.parse_jsonl),
        Format(radius.DETAIL, "FreeRADIUS detail / attribute-list accounting",
               radius.sniff_detail, radius.parse_detail),
        Format(radius.ISE, "Cisco ISE RADIUS accounting syslog", radius.sniff_ise,
               radius.parse_ise),
        Format(asa.NAME, "Cisco ASA/FTD syslog (113019, 113039, 751025, 716002)", asa.sniff,
               asa.parse),
        Format(fortigate.NAME, "FortiGate VPN event log (tunnel-up/stats/down)",
               fortigate.sniff, fortigate.parse),
        Format(openvpn.STATUS, "OpenVPN status file v1/v2/v3", openvpn.sniff_status,
               openvpn.parse_status),
        Format(openvpn.LOG, "OpenVPN server log", openvpn.sniff_log, openvpn.parse_log),
        Format(pulse.NAME, "Pulse/Ivanti Connect Secure events", pulse.sniff, pulse.parse),
        Format(paloalto.NAME, "Palo Alto GlobalProtect (connected/logout)", paloalto.sniff,
               paloalto.parse),
        Format(swan.NAME, "libreswan pluto / strongSwan charon logs", swan.sniff, swan.parse),
    )
}


def detect(lines: list[str]) -> Format | None:
    """Best-scoring format for these first lines, or None if nothing claims them."""
    sample = [ln.rstrip("\r\n") for ln in lines if ln.strip()][:60]
    if not sample:
        return None
    best = max(FORMATS.values(), key=lambda f: f.sniff(sample))
    return best if best.sniff(sample) > 0 else None
