"""OpenVPN: ``--status`` snapshots (versions 1, 2 and 3) and server logs.

A status file is a snapshot of live sessions: each CLIENT_LIST row becomes an interim
record (cumulative bytes, ``Connected Since`` as the start).  Several snapshots in one
input (an operator concatenating the file every minute) follow sessions over time; a
session that disappears from the next snapshot is closed at its last sighting.  ``Bytes
Received`` is what the server received (``bytes_in``).

Server logs give starts (``[CN] Peer Connection Initiated with ...``) and stops
(``CN/addr ... client-instance exiting`` / ``Inactivity timeout``), without byte counts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from analysis.parsers.base import Event, peer_host, strip_pri, to_int
from analysis.session import Issue
from analysis.timeparse import TimeContext, TimeFormatError, find_time, parse_time

STATUS = "openvpn-status"
LOG = "openvpn-log"


def sniff_status(lines: list[str]) -> int:
    head = " ".join(lines[:3])
    if re.search(r"^(TITLE|TIME|HEADER)[,\t]", lines[0] if lines else "") or (
        "OpenVPN CLIENT LIST" in head
    ):
        return 95
    return 0


def parse_status(lines: Iterable[str], path: str, ctx: TimeContext) -> Iterator[Event | Issue]:
    snap_t: float | None = None
    seen: dict[str, tuple[str, str]] = {}
    prev: dict[str, tuple[str, str]] = {}
    v1_section = ""

    def end_snapshot() -> Iterator[Event]:
        nonlocal prev, seen
        for key, (user, src) in prev.items():
            if key not in seen:
                yield Event("stop", key, user, None, src)
        prev, seen = seen, {}

    for no, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        src = f"{path}:{no}"
        sep = "\t" if "\t" in line else ","
        cells = line.split(sep)
        tag = cells[0]
        try:
            if tag == "TIME" or tag == "Updated":
                if snap_t is not None:
                    yield from end_snapshot()
                snap_t = float(cells[2]) if len(cells) > 2 and cells[2].isdigit() else (
                    parse_time(cells[1], ctx)
                )
                continue
            if tag == "CLIENT_LIST" or (v1_section == "clients" and tag != "ROUTING TABLE"):
                if tag == "CLIENT_LIST":
                    cn, addr, rx, tx = cells[1], cells[2], cells[4], cells[5]
                    since = cells[7] if len(cells) > 7 and cells[7].isdigit() else cells[6]
                else:
                    if tag == "Common Name":
                        continue
                    cn, addr, rx, tx, since = cells[0], cells[1], cells[2], cells[3], cells[4]
                if snap_t is None:
                    yield Issue(src, "client row before the snapshot TIME line")
                    continue
                start = parse_time(since, ctx)
                key = f"ovpn:{cn}@{addr}@{start:.0f}"
                if key in seen:
                    continue  # the same client listed twice in one snapshot
                seen[key] = (cn, src)
                yield Event("start", key, cn, start, src)
                yield Event("interim", key, cn, snap_t, src,
                            bytes_in=to_int(rx, "Bytes Received"),
                            bytes_out=to_int(tx, "Bytes Sent"))
                continue
        except (IndexError, ValueError, TimeFormatError) as e:
            yield Issue(src, f"bad status row: {e}")
            continue
        if tag == "OpenVPN CLIENT LIST":
            v1_section = "clients"
        elif tag in ("ROUTING TABLE", "GLOBAL STATS"):
            v1_section = "other"
        elif tag == "END":
            v1_section = ""
        elif tag in ("ROUTING_TABLE", "HEADER", "GLOBAL_STATS", "TITLE") or v1_section:
            pass
        else:
            yield Issue(src, "not an OpenVPN status row")
    if snap_t is not None:
        yield from end_snapshot()


_INIT = re.compile(r"\[([^\]]+)\] Peer Connection Initiated with (\S+)")
_EXIT = re.compile(
    r"(?:^|\s)([^\s/]+)/(\S+?) .*?(client-instance exiting|Inactivity timeout|"
    r"client-instance restarting|Connection reset)"
)


def sniff_log(lines: list[str]) -> int:
    hits = sum(1 for ln in lines if re.search(r"\bopenvpn(\[\d+\])?[: ]", ln))
    return 70 if hits and hits * 2 >= len(lines) else 0


def parse_log(lines: Iterable[str], path: str, ctx: TimeContext) -> Iterator[Event | Issue]:
    for no, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        src = f"{path}:{no}"
        body = strip_pri(line)
        m = _INIT.search(body)
        e = None if m else _EXIT.search(body)
        if not m and not e:
            continue
        try:
            t = find_time(body[: (m or e).start()], ctx)  # type: ignore[union-attr]
        except TimeFormatError as err:
            yield Issue(src, str(err))
            continue
        if t is None:
            yield Issue(src, "OpenVPN line without a timestamp")
            continue
        if m:
            user, host = m.group(1), peer_host(m.group(2))
            yield Event("start", f"ovpn:{user}@{host}", user, t, src)
        elif e:
            user, host = e.group(1), peer_host(e.group(2))
            yield Event("stop", f"ovpn:{user}@{host}", user, t, src)
