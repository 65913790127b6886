"""OpenVPN: ``--status`` snapshots (versions 1, 2 and 3) and server logs.

A status file is a snapshot of live sessions: each CLIENT_LIST row becomes an interim
record (cumulative bytes, ``Connected Since`` as the start).  Several snapshots in one
input (an operator concatenating the file every minute) follow sessions over time; a
session that disappears from the next snapshot is closed at its last sighting.  ``Bytes
Received`` is what the server received (``bytes_in``).

Server logs give starts (``[CN] Peer Connection Initiated with ...``) and stops
(``CN/addr ... client-instance exiting`` / ``Inactivity timeout``), without byte counts.
Both are found by literal search first (each message is matched once, with possessive
patterns), so a line is read in linear time whatever it holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from analysis.account import FileAccount
from analysis.parsers.base import LogEvent, peer_host, strip_pri, to_int
from analysis.session import Issue, LineError
from analysis.timeparse import TimeContext, find_time, parse_epoch, parse_time

STATUS = "openvpn-status"
LOG = "openvpn-log"
EXPECTS_STATUS = "TIME/Updated snapshot lines and CLIENT_LIST (or v1 client section) rows"
EXPECTS_LOG = "'Peer Connection Initiated' starts and 'client-instance exiting' stops"
_STATUS_SKIP = {
    "TITLE": "status title", "HEADER": "status column header", "END": "end of snapshot",
    "ROUTING_TABLE": "routing table row (not a session)",
    "GLOBAL_STATS": "global statistics row", "OpenVPN CLIENT LIST": "v1 client list title",
    "ROUTING TABLE": "v1 routing table title", "GLOBAL STATS": "v1 global statistics title",
}


def sniff_status(lines: list[str]) -> int:
    for ln in lines[:3]:
        if ln.startswith(("TITLE,", "TITLE\t", "TIME,", "TIME\t", "HEADER,", "HEADER\t")):
            return 95
        if "OpenVPN CLIENT LIST" in ln:
            return 95
    return 0


def parse_status(
    lines: Iterable[tuple[int, str]], path: str, ctx: TimeContext, acct: FileAccount
) -> Iterator[LogEvent | Issue]:
    snap_t: int | None = None
    seen: dict[str, tuple[str, str]] = {}
    prev: dict[str, tuple[str, str]] = {}
    v1_section = ""

    def end_snapshot() -> Iterator[LogEvent]:
        nonlocal prev, seen
        for key, (user, src) in prev.items():
            if key not in seen:
                yield LogEvent("stop", key, user, None, src)
        prev, seen = seen, {}

    for no, line in lines:
        if not line.strip():
            acct.skip("blank line")
            continue
        src = f"{path}:{no}"
        sep = "\t" if "\t" in line else ","
        cells = line.split(sep)
        tag = cells[0]
        try:
            if tag == "TIME" or tag == "Updated":
                if snap_t is not None:
                    yield from end_snapshot()
                if len(cells) > 2 and cells[2].isascii() and cells[2].isdigit():
                    snap_t = parse_epoch(cells[2])
                elif len(cells) > 1:
                    snap_t = parse_time(cells[1], ctx)
                else:
                    raise LineError(f"{tag} line without a time")
                acct.use()
                continue
            if tag == "CLIENT_LIST" or (v1_section == "clients" and tag != "ROUTING TABLE"):
                if tag == "Common Name":
                    acct.skip("v1 client column header")
                    continue
                if tag == "CLIENT_LIST":
                    if len(cells) < 7:
                        raise LineError(f"CLIENT_LIST row with {len(cells)} fields (7+ needed)")
                    cn, addr, rx, tx = cells[1], cells[2], cells[4], cells[5]
                    since = cells[7] if len(cells) > 7 and cells[7].isascii() and cells[
                        7].isdigit() else cells[6]
                else:
                    if len(cells) < 5:
                        raise LineError(f"client row with {len(cells)} fields (5 needed)")
                    cn, addr, rx, tx, since = cells[0], cells[1], cells[2], cells[3], cells[4]
                if snap_t is None:
                    raise LineError("client row before the snapshot TIME line")
                start = parse_time(since, ctx)
                b_in, b_out = to_int(rx, "Bytes Received"), to_int(tx, "Bytes Sent")
                key = f"ovpn:{cn}@{addr}@{start}"
                if key in seen:
                    acct.skip("client listed twice in one snapshot")
                    continue
                seen[key] = (cn, src)
                acct.use()
                yield LogEvent("start", key, cn, start, src)
                yield LogEvent("interim", key, cn, snap_t, src, bytes_in=b_in, bytes_out=b_out)
                continue
        except LineError as e:
            yield Issue(src, f"bad status row: {e}")
            continue
        if tag == "OpenVPN CLIENT LIST":
            v1_section = "clients"
        elif tag in ("ROUTING TABLE", "GLOBAL STATS"):
            v1_section = "other"
        elif tag == "END":
            v1_section = ""
        if tag in _STATUS_SKIP:
            acct.skip(_STATUS_SKIP[tag])
        elif v1_section:
            acct.skip("v1 routing table or statistics row")
        else:
            yield Issue(src, "not an OpenVPN status row", foreign=True)
    if snap_t is not None:
        yield from end_snapshot()


_INIT = "] Peer Connection Initiated with "
_EXITS = ("client-instance exiting", "Inactivity timeout", "client-instance restarting",
          "Connection reset")
_PEER_TOKEN = re.compile(r"(?<!\S)([^\s/]++)/(\S++) ")
_NONSPACE = re.compile(r"\S++")


def sniff_log(lines: list[str]) -> int:
    hits = sum(1 for ln in lines if "openvpn:" in ln or "openvpn[" in ln or " openvpn " in ln)
    return 70 if hits and hits * 2 >= len(lines) else 0


def _init(body: str) -> tuple[int, str, str] | None:
    """``(start of the match, CN, peer)`` of ``[CN] Peer Connection Initiated with PEER``."""
    p = body.find(_INIT)
    if p < 0:
        return None
    k = body.rfind("]", 0, p)
    lb = body.find("[", k + 1, p)
    peer = _NONSPACE.match(body, p + len(_INIT))
    if lb < 0 or lb + 1 == p or peer is None:
        return None
    return lb, body[lb + 1 : p], peer.group()


def _exit(body: str) -> tuple[int, str, str] | None:
    """``(start, CN, addr)`` of ``CN/addr ... client-instance exiting`` (or the others)."""
    last = max(body.rfind(w) for w in _EXITS)
    if last < 0:
        return None
    m = _PEER_TOKEN.search(body, 0, last)
    if m is None:
        return None
    return m.start(), m.group(1), m.group(2)


def parse_log(
    lines: Iterable[tuple[int, str]], path: str, ctx: TimeContext, acct: FileAccount
) -> Iterator[LogEvent | Issue]:
    for no, line in lines:
        if not line.strip():
            acct.skip("blank line")
            continue
        src = f"{path}:{no}"
        body = strip_pri(line)
        m = _init(body)
        e = None if m else _exit(body)
        if not m and not e:
            if "openvpn" in body[:200].lower():
                acct.skip("OpenVPN message that is not a connect/disconnect")
            else:
                yield Issue(src, "not an OpenVPN log line", foreign=True)
            continue
        at, user, addr = m or e  # type: ignore[misc]
        try:
            t = find_time(body[:at], ctx)
            if t is None:
                raise LineError("OpenVPN line without a timestamp")
            host = peer_host(addr)
        except LineError as err:
            yield Issue(src, str(err))
            continue
        acct.use()
        yield LogEvent("start" if m else "stop", f"ovpn:{user}@{host}", user, t, src)
