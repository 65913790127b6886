"""FortiGate (FortiOS) event logs, ``subtype=vpn``: tunnel-up, tunnel-stats, tunnel-down.

``user=`` holds the peer IP for IPsec dial-up; the human is in ``xauthuser``/``eapuser``.
The time is ``date``+``time`` in the device zone ``tz`` (else the operator's zone); a relay
prefix (ISO stamp of the collector) is ignored.  ``sentbyte`` is what the FortiGate sent,
so it is ``bytes_out``.  ``tunnel-stats`` are cumulative interim counters (every
``nextstat`` seconds), ``tunnel-down`` the final ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from analysis.parsers.base import Event, parse_kv, to_int
from analysis.session import Issue
from analysis.timeparse import TimeContext, TimeFormatError, parse_offset

NAME = "fortigate"
_KINDS = {"tunnel-up": "start", "tunnel-stats": "interim", "tunnel-down": "stop"}
_NONE = {"", "N/A", "n/a"}


def sniff(lines: list[str]) -> int:
    hits = sum(1 for ln in lines if "logid=" in ln and "date=" in ln and "devname=" in ln)
    return 85 if hits and hits * 2 >= len(lines) else (30 if hits else 0)


def _time(kv: dict[str, str], ctx: TimeContext) -> float:
    if "date" in kv and "time" in kv:
        dt = datetime.fromisoformat(f"{kv['date']}T{kv['time']}")
        tz = parse_offset(kv["tz"]) if kv.get("tz") else ctx.tz
        return dt.replace(tzinfo=tz).timestamp()
    if "eventtime" in kv:
        v = int(kv["eventtime"])
        return v / 1e9 if v > 10**17 else (v / 1e6 if v > 10**14 else float(v))
    raise TimeFormatError("no date/time or eventtime")


def _user(kv: dict[str, str]) -> str | None:
    for k in ("xauthuser", "eapuser", "user"):
        v = kv.get(k, "")
        if v not in _NONE:
            return v
    v = kv.get("remip", "")
    return None if v in _NONE else v


def parse(lines: Iterable[str], path: str, ctx: TimeContext) -> Iterator[Event | Issue]:
    for no, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n").rstrip("|")
        if not line.strip():
            continue
        src = f"{path}:{no}"
        kv = parse_kv(line)
        if "logid" not in kv or "type" not in kv:
            yield Issue(src, "not a FortiGate log line (no logid=/type= fields)")
            continue
        kind = _KINDS.get(kv.get("action", ""))
        if kv.get("subtype") != "vpn" or kind is None:
            continue
        user = _user(kv)
        if user is None:
            yield Issue(src, f"{kv['action']} without user or remip")
            continue
        try:
            t = _time(kv, ctx)
            dur = float(kv["duration"]) if kv.get("duration", "") not in _NONE else None
            b_out = to_int(kv["sentbyte"], "sentbyte") if "sentbyte" in kv else None
            b_in = to_int(kv["rcvdbyte"], "rcvdbyte") if "rcvdbyte" in kv else None
        except (ValueError, KeyError) as e:
            yield Issue(src, f"{kv['action']}: {e}")
            continue
        tid = kv.get("tunnelid") or f"{user}@{kv.get('remip', '')}"
        key = f"fgt:{kv.get('devid', '')}:{kv.get('vd', '')}:{tid}"
        yield Event(kind, key, user, t, src, duration=dur, bytes_in=b_in, bytes_out=b_out)  # type: ignore[arg-type]
