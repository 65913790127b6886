"""Timestamps as VPN devices write them, turned into integer POSIX microseconds.

Integers, not float seconds: two stamps exactly an hour apart must come out exactly
3,600,000,000 us apart wherever the epoch puts them, or a session at exactly a policy's
lifetime would resume or not depending on float rounding.  Digits below the microsecond
are dropped (truncated); every stamp lies in years 1..9999 (what ``datetime`` holds), so
every time and every difference of two fits an int64 with room to spare.

Logs rarely say everything: BSD syslog has no year and no zone, FreeRADIUS writes zone
abbreviations (``WIB``), FortiGate splits date, time and offset into three fields.  A
:class:`TimeContext` carries what the operator knows (the year, the devices' zone) and
handles the year rollover of long syslog files (December followed by January).

Every function here reads untrusted text and raises only :class:`TimeFormatError` (a
:class:`~analysis.session.LineError`); the regular expressions are anchored or bounded,
so each call is linear in the length of its input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo

from analysis.session import LineError

US = 1_000_000  # microseconds per second
MIN_US = -62_135_596_800 * US  # 0001-01-01T00:00:00Z
MAX_US = 253_402_300_799 * US + (US - 1)  # 9999-12-31T23:59:59.999999Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}

# Abbreviations seen in device logs; ambiguous ones (IST, CST in Asia) take the common reading.
TZ_ABBREV: dict[str, float] = {
    "UTC": 0, "GMT": 0, "Z": 0, "UT": 0,
    "EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
    "AKST": -9, "AKDT": -8, "HST": -10,
    "WET": 0, "WEST": 1, "BST": 1, "CET": 1, "CEST": 2, "EET": 2, "EEST": 3, "MSK": 3,
    "IST": 5.5, "WIB": 7, "WITA": 8, "WIT": 9, "SGT": 8, "HKT": 8, "JST": 9, "KST": 9,
    "AEST": 10, "AEDT": 11, "ACST": 9.5, "AWST": 8, "NZST": 12, "NZDT": 13,
}


class TimeFormatError(LineError):
    """A timestamp, zone or duration we cannot read (or that lies outside years 1..9999)."""


_OFFSET = re.compile(r"([+-])(\d\d):?(\d\d)")


def parse_offset(text: str) -> tzinfo:
    """``+0200``, ``-07:00``, ``Z``, ``UTC``, ``WIB`` -> a fixed-offset zone.

    Offsets of 24 h or more do not exist (and ``timezone`` refuses them): an error."""
    t = text.strip().strip('"')
    if t.upper() in TZ_ABBREV:
        return timezone(timedelta(hours=TZ_ABBREV[t.upper()]))
    m = _OFFSET.fullmatch(t)
    if not m:
        raise TimeFormatError(f"unknown time zone {text[:40]!r}")
    hours, minutes = int(m.group(2)), int(m.group(3))
    if hours > 23 or minutes > 59:
        raise TimeFormatError(f"UTC offset out of range {text[:40]!r} (at most +-23:59)")
    sign = -1 if m.group(1) == "-" else 1
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


@dataclass
class TimeContext:
    """What the operator knows about timestamps that do not say it themselves.

    ``year``: for year-less syslog stamps (default: the year of ``now``, stepping back one
    year for stamps that would lie more than a day in the future, as rsyslog does).
    ``tz``: zone for stamps without one (default UTC).
    """

    year: int | None = None
    tz: tzinfo = UTC
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    _last_month: int = 0
    _bump: int = 0
    _days: dict[tuple[int, int, str], int] = field(default_factory=dict)
    _last_header: str = ""
    _last_value: int = 0

    def year_for(self, month: int) -> int:
        """Year of a year-less stamp; a month far below the previous one means a new year."""
        self._last_header = ""  # the fast path's one-line cache holds only between its calls
        if self._last_month and month < self._last_month - 6:
            self._bump += 1
        self._last_month = month
        if self.year is not None:
            return self.year + self._bump
        year = self.now.year
        if self._bump == 0 and month > self.now.month + 1:
            year -= 1
        return year + self._bump

    def reset_file(self) -> None:
        self._last_month = 0
        self._bump = 0
        self._last_header = ""


def epoch_us(dt: datetime, ctx: TimeContext | None = None) -> int:
    """Exact POSIX microseconds of ``dt`` (a naive ``dt`` is in the operator's zone)."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ctx.tz if ctx is not None else UTC)
    try:
        return (dt - _EPOCH) // _ONE_US
    except OverflowError as e:  # year 1 minus a positive offset
        raise TimeFormatError(f"time out of range: {e}") from e


def frac_us(digits: str) -> int:
    """``"25"`` (the digits after the point) -> 250000 us; digits past the 6th dropped."""
    return int((digits + "000000")[:6]) if digits else 0


def check_range(us: int, what: str = "timestamp") -> int:
    if not MIN_US <= us <= MAX_US:
        raise TimeFormatError(f"{what} out of range (years 1..9999)")
    return us


_ISO = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,32}+))?[ \t]{0,4}+"
    r"(Z|[+-]\d\d:?\d\d)?(?![\d])"
)
_BSD = re.compile(
    r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)\s{1,8}+)?"
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)\s{1,8}+(\d{1,2})\s{1,8}+"
    r"(?:(\d{4})\s{1,8}+)?(\d\d):(\d\d):(\d\d)(?:\.(\d{1,32}+))?(?:\s{1,8}+(\d{4}))?"
    r"(?:\s{1,8}+([A-Z]{1,5})\b)?",
    re.IGNORECASE,
)  # bounded runs of white space: a line of spaces costs each start position O(1)


def _datetime(y: int, mo: int, d: int, h: int, mi: int, s: int) -> datetime:
    try:
        return datetime(y, mo, d, h, mi, s)
    except (ValueError, OverflowError) as e:  # Jan 32, 25:00, 23:59:60, year 0
        raise TimeFormatError(f"impossible time {(y, mo, d, h, mi, s)}: {e}") from e


def parse_iso_match(m: re.Match[str], ctx: TimeContext) -> int:
    y, mo, d, h, mi, s = (int(m.group(i)) for i in range(1, 7))
    dt = _datetime(y, mo, d, h, mi, s)
    if m.group(8):
        dt = dt.replace(tzinfo=parse_offset(m.group(8)))
    return check_range(epoch_us(dt, ctx) + frac_us(m.group(7) or ""))


def parse_bsd_match(m: re.Match[str], ctx: TimeContext) -> int:
    month = MONTHS[m.group(1).lower()]
    year_s = m.group(3) or m.group(8)
    year = int(year_s) if year_s else ctx.year_for(month)
    dt = _datetime(year, month, int(m.group(2)), int(m.group(4)), int(m.group(5)),
                   int(m.group(6)))
    zone = m.group(9)
    if zone and zone.isupper() and zone in TZ_ABBREV:
        dt = dt.replace(tzinfo=parse_offset(zone))
    return check_range(epoch_us(dt, ctx) + frac_us(m.group(7) or ""))


_NUMBER = re.compile(r"(\d{1,20}+)(?:\.(\d{1,32}+))?")


def parse_epoch(text: str) -> int:
    """POSIX time as a decimal number: seconds, or (by magnitude) ms, us or ns -> us."""
    m = _NUMBER.fullmatch(text)
    if not m:
        raise TimeFormatError(f"not a POSIX time {text[:40]!r}")
    whole, frac = int(m.group(1)), m.group(2) or ""
    if whole > 10**17:  # nanoseconds (FortiGate eventtime)
        us = whole // 1000
    elif whole > 10**14:  # microseconds
        us = whole
    elif whole > 10**11:  # milliseconds
        us = whole * 1000 + int((frac + "000")[:3])
    else:
        us = whole * US + frac_us(frac)
    return check_range(us)


def parse_time(text: str, ctx: TimeContext) -> int:
    """Any single timestamp -> POSIX us: POSIX seconds, ISO 8601, ``Tue Mar 21 10:39:14
    2017``, ``Feb  1 2015 08:28:58 WIB``, year-less syslog ``Apr 27 11:11:47``."""
    t = text.strip().strip("'\"")
    if not t:
        raise TimeFormatError("empty timestamp")
    if t[0].isdigit() and _NUMBER.fullmatch(t):
        return parse_epoch(t)
    m = _ISO.fullmatch(t)
    if m:
        return parse_iso_match(m, ctx)
    m = _BSD.fullmatch(t)
    if m:
        return parse_bsd_match(m, ctx)
    raise TimeFormatError(f"unreadable timestamp {text[:60]!r}")


_MON = {m.capitalize(): i for m, i in MONTHS.items()}  # "Jan" -> 1 (case as devices write)
_HOUR_MIN = {f"{h:02d}:{m:02d}": h * 3600 + m * 60 for h in range(24) for m in range(60)}
_FAST_BSD = re.compile(
    r"(?:<\d{1,3}>)?(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) {1,2}(\d{1,2}) "
    r"(?:(\d{4}) )?(\d\d:\d\d):(\d\d) (\S*+)"
)
_SECOND_STAMP = re.compile(r"\d:\d\d:\d\d|\d{4}-\d\d-\d\d")


def _fast_bsd(text: str, ctx: TimeContext) -> int | None:
    """The common case, a single zone-less BSD stamp at the start, without datetime objects
    (day bases are cached, and so is the previous line's header: logs write many lines a
    second).

    Anything else (a zone word, a second stamp later in the header, which find_time would
    prefer, a trailing year, fractions, a zone with daylight saving, hours past 23)
    returns None and takes the general path, which gives the same value
    (tests/analysis/test_syslog_fast.py checks this).
    """
    if not isinstance(ctx.tz, timezone):
        return None
    if text == ctx._last_header:
        return ctx._last_value  # year_for(same month) would change nothing
    m = _FAST_BSD.match(text)
    if m is None or _SECOND_STAMP.search(text, m.end(5)) is not None:
        return None
    mon, day, year_s, hour_min, sec, nxt = m.groups()
    nxt = nxt.rstrip(":,")
    hms = _HOUR_MIN.get(hour_min)
    if hms is None or nxt in TZ_ABBREV or nxt.isdigit():
        return None
    month = _MON[mon]
    year = int(year_s) if year_s else ctx.year_for(month)
    key = (year, month, day)
    base = ctx._days.get(key)
    if base is None:
        try:
            base = epoch_us(datetime(year, month, int(day), tzinfo=ctx.tz))
        except (ValueError, OverflowError, TimeFormatError):
            return None  # Jan 32: the general path reports it
        ctx._days[key] = base
    s = int(sec)
    if s > 59:
        return None
    value = base + (hms + s) * US
    ctx._last_header, ctx._last_value = text, value
    return value


def find_time(text: str, ctx: TimeContext) -> int | None:
    """The most informative timestamp inside a line header (POSIX us), or None.

    Relays and collectors stack headers (``<pri>Sep 25 15:47:07 host : Sep 25 15:47:07 EDT:``,
    an ISO relay stamp before a BSD one); we prefer a stamp with an explicit zone, then one
    with a year, then the last one (closest to the device's own message).
    """
    fast = _fast_bsd(text, ctx)
    if fast is not None:
        return fast
    return find_time_general(text, ctx)


def find_time_general(text: str, ctx: TimeContext) -> int | None:
    """:func:`find_time` without the fast path (the reference it is tested against)."""
    best: tuple[int, int, re.Match[str], bool] | None = None
    for m in _ISO.finditer(text):
        score = 3 if m.group(8) else 2
        if best is None or (score, m.start()) >= best[:2]:
            best = (score, m.start(), m, True)
    for m in _BSD.finditer(text):
        zone = m.group(9)
        has_zone = bool(zone and zone.isupper() and zone in TZ_ABBREV)
        score = 3 if has_zone else (2 if (m.group(3) or m.group(8)) else 1)
        if best is None or (score, m.start()) > best[:2]:
            best = (score, m.start(), m, False)
    if best is None:
        return None
    return parse_iso_match(best[2], ctx) if best[3] else parse_bsd_match(best[2], ctx)


_DUR = re.compile(
    r"\s*+(?:(\d{1,9}+)\s*+d\s*+)?(?:(\d{1,12}+)\s*+h\s*+:?\s*+)?(?:(\d{1,12}+)\s*+m\s*+:?\s*+)?"
    r"(?:(\d{1,12}+)\s*+s)?\s*+",
    re.IGNORECASE,
)
_ASA_DUR = re.compile(r"(?:(\d{1,9}+)d )?(\d{1,12}+)h:(\d{1,12}+)m:(\d{1,12}+)s")
_HMS = re.compile(r"(\d{1,12}+):(\d\d):(\d\d)")
_SECONDS = re.compile(r"(\d{1,12}+)(?:\.(\d{1,32}+))?")
MAX_DURATION_US = MAX_US - MIN_US


def parse_session_duration(text: str) -> int:
    """Device durations -> us: ``1d 19h:41m:14s``, ``0h:32m:16s``, ``92:24:20``, ``385``,
    ``385.25``, ``2h 5m``."""
    t = text.strip()
    m = _ASA_DUR.fullmatch(t)
    if m:
        d = int(m.group(1)) if m.group(1) else 0
        s = d * 86400 + int(m.group(2)) * 3600 + int(m.group(3)) * 60 + int(m.group(4))
        return _duration(s * US)
    m = _SECONDS.fullmatch(t)
    if m:
        return _duration(int(m.group(1)) * US + frac_us(m.group(2) or ""))
    m = _HMS.fullmatch(t)
    if m:
        return _duration((int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3))) * US)
    m = _DUR.fullmatch(t)
    if not m or not any(m.groups()):
        raise TimeFormatError(f"unreadable duration {text[:40]!r}")
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    return _duration((d * 86400 + h * 3600 + mi * 60 + s) * US)


def _duration(us: int) -> int:
    if us > MAX_DURATION_US:
        raise TimeFormatError("duration out of range (longer than years 1..9999)")
    return us
