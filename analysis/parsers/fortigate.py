"""FortiGate (FortiOS) event logs, ``subtype=vpn``: tunnel-up, tunnel-stats, tunnel-down.

``user=`` holds the peer IP for IPsec dial-up; the human is in ``xauthuser``/``eapuser``.
The time is ``date``+``time`` in the device zone ``tz`` (else the operator's zone); a relay
prefix (ISO stamp of the collector) is ignored.  ``sentbyte`` is what the FortiGate sent,
so it is ``bytes_out``.  ``tunnel-stats`` are cumulative interim counters (every
``nextstat`` seconds), ``tunnel-down`` the final ones.  Other FortiOS events (negotiation,
SSL logins, traffic logs) are counted as skipped lines by subtype/action.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import datetime

from analysis.account import FileAccount
from analysis.parsers.base import LogEvent, parse_kv, to_int
from analysis.session import Issue, LineError
from analysis.timeparse import (
    TimeContext,
    TimeFormatError,
    check_range,
    epoch_us,
    parse_epoch,
    parse_offset,
    parse_session_duration,
)

NAME = "fortigate"
EXPECTS = 'subtype="vpn" events with action tunnel-up, tunnel-stats or tunnel-down'
_KINDS = {"tunnel-up": "start", "tunnel-stats": "interim", "tunnel-down": "stop"}
_NONE = {"", "N/A", "n/a"}
_DATE = re.compile(r"\d{4}-\d\d-\d\d")
_TIME = re.compile(r"\d\d:\d\d:\d\d")


def sniff(lines: list[str]) -> int:
    hits = sum(1 for ln in lines if "logid=" in ln and "date=" in ln and "devname=" in ln)
    return 85 if hits and hits * 2 >= len(lines) else (30 if hits else 0)


def _time(kv: dict[str, str], ctx: TimeContext) -> int:
    if "date" in kv and "time" in kv:
        d, t = kv["date"], kv["time"]
        if not (_DATE.fullmatch(d) and _TIME.fullmatch(t)):
            raise TimeFormatError(f"unreadable date/time {d[:20]!r} {t[:20]!r}")
        try:
            dt = datetime.fromisoformat(f"{d}T{t}")
        except ValueError as e:
            raise TimeFormatError(f"impossible date/time {d!r} {t!r}") from e
        tz = parse_offset(kv["tz"]) if kv.get("tz") else ctx.tz
        return check_range(epoch_us(dt.replace(tzinfo=tz)))
    if "eventtime" in kv:
        return parse_epoch(kv["eventtime"])
    raise TimeFormatError("no date/time or eventtime")


def _user(kv: dict[str, str]) -> str | None:
    for k in ("xauthuser", "eapuser", "user"):
        v = kv.get(k, "")
        if v not in _NONE:
            return v
    v = kv.get("remip", "")
    return None if v in _NONE else v


def parse(
    lines: Iterable[tuple[int, str]], path: str, ctx: TimeContext, acct: FileAccount
) -> Iterator[LogEvent | Issue]:
    for no, raw in lines:
        line = raw.rstrip("|")
        if not line.strip():
            acct.skip("blank line")
            continue
        src = f"{path}:{no}"
        kv = parse_kv(line)
        if "logid" not in kv or "type" not in kv:
            yield Issue(src, "not a FortiGate log line (no logid=/type= fields)", foreign=True)
            continue
        kind = _KINDS.get(kv.get("action", ""))
        if kv.get("subtype") != "vpn" or kind is None:
            acct.skip(f"type={kv['type'][:20]} subtype={kv.get('subtype', '')[:20]} "
                      f"action={kv.get('action', '')[:30]}: not a tunnel event")
            continue
        user = _user(kv)
        if user is None:
            yield Issue(src, f"{kv['action']} without user or remip")
            continue
        try:
            t = _time(kv, ctx)
            dur = (parse_session_duration(kv["duration"])
                   if kv.get("duration", "") not in _NONE else None)
            b_out = to_int(kv["sentbyte"], "sentbyte") if "sentbyte" in kv else None
            b_in = to_int(kv["rcvdbyte"], "rcvdbyte") if "rcvdbyte" in kv else None
        except LineError as e:
            yield Issue(src, f"{kv['action']}: {e}")
            continue
        tid = kv.get("tunnelid") or f"{user}@{kv.get('remip', '')}"
        key = f"fgt:{kv.get('devid', '')}:{kv.get('vd', '')}:{tid}"
        acct.use()
        yield LogEvent(kind, key, user, t, src, duration=dur, bytes_in=b_in, bytes_out=b_out)  # type: ignore[arg-type]
