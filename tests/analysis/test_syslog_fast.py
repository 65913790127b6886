"""Syslog fast paths give what the general code gives (or step aside), on hostile headers.

The ASA parser takes shortcuts for the common shapes: a regex-only BSD stamp with cached
day bases and a one-line header cache, a bracketed Group/User/IP match instead of the lazy
one, the usual duration taken apart inside the 113019 regex.  Each is checked here against
the general code it short-cuts.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.account import FileAccount
from analysis.logs import ReadReport, read_sessions
from analysis.parsers import asa
from analysis.timeparse import (
    TimeContext,
    TimeFormatError,
    find_time,
    find_time_general,
    parse_offset,
    parse_session_duration,
)

PARTS: list[tuple[list[str], list[str]]] = [  # (well-formed, odd) choices per header part
    (["", "<166>", "<1>"], ["<1234>", "<x>"]),
    (["Jan", "Feb", "Dec"], ["jan", "Foo"]),
    ([" ", "  "], ["   "]),
    (["1", "01", "9", "28"], ["31", "32", "0", "٣"]),
    ([" "], [" x "]),
    (["", "", "2024 "], ["1999 ", "0000 "]),
    (["00", "09", "23"], ["24", "99"]),
    ([":"], ["."]),
    (["00", "59"], ["60"]),
    ([":"], [":"]),
    (["00", "59"], ["60", "07.250"]),
    ([" "], ["", "\t"]),
    (["asa-01", "host,", ""], ["EDT", "UTC:", "2024", "12", "WIB"]),
    (["", " : "], [" : Sep 25 15:47:07 EDT: ", " 2024-03-01T10:00:00Z ", " 10:00:00 ",
                   "\t: ", " : Sep 25 15:47:07: ", " : Jan  2 2024 10:00:00 : "]),
]


@st.composite
def header(draw: st.DrawFn) -> str:
    """Mostly well-formed parts (whole valid stamps are common), sometimes odd ones."""
    return "".join(draw(st.sampled_from(ok if draw(st.integers(0, 5)) else odd))
                   for ok, odd in PARTS)


def outcome(fn: object, text: str, ctx: TimeContext) -> object:
    try:
        return fn(text, ctx)  # type: ignore[operator]
    except TimeFormatError:
        return "error"


@given(st.lists(header(), min_size=1, max_size=8),
       st.sampled_from([None, 2007]), st.sampled_from(["UTC", "+0530", "-07:00"]))
def test_fast_stamp_equals_general_path(headers: list[str], year: int | None, zone: str) -> None:
    """Same values, same errors, same year rollover state, line after line (a repeated
    header included: the one-line cache must not skip a rollover)."""
    fast = TimeContext(year=year, tz=parse_offset(zone))
    slow = TimeContext(year=year, tz=parse_offset(zone), now=fast.now)
    for h in [*headers, headers[0], *headers]:
        assert outcome(find_time, h, fast) == outcome(find_time_general, h, slow), h
        assert (fast._last_month, fast._bump) == (slow._last_month, slow._bump)


def test_fast_stamp_equals_general_path_on_20000_headers() -> None:
    rnd = random.Random(6)
    for zone in ("UTC", "+0530"):
        fast = TimeContext(tz=parse_offset(zone))
        slow = TimeContext(tz=parse_offset(zone), now=fast.now)
        for _ in range(10000):
            h = "".join(rnd.choice(ok if rnd.random() < 0.85 else odd) for ok, odd in PARTS)
            assert outcome(find_time, h, fast) == outcome(find_time_general, h, slow), h


def test_header_cache_does_not_hide_a_rollover() -> None:
    ctx = TimeContext(year=2023)
    dec = "<166>Dec 31 23:59:59 fw : "
    first = find_time(dec, ctx)
    find_time("Jan  1 00:00:01 UTC fw : ", ctx)  # a zone word: general path, new year
    again = find_time(dec, ctx)
    assert first is not None and again == first + 366 * 86400 * 10**6  # Dec 31 2024


names = st.text(st.sampled_from("ab <>User IP.:@'\t"), max_size=12)


@given(names, names, names, st.sampled_from(["", " AnyConnect parent session started.", "x"]))
def test_plain_group_user_ip_equals_general_regex(g: str, u: str, ip: str, rest: str) -> None:
    msg = f"Group <{g}> User <{u}> IP <{ip}>{rest}"
    at = msg.find("Group")
    ref = asa._GUI.match(msg + " ", at)
    want = (ref.group(2).strip(), ref.group(3).strip()) if ref else None
    got = asa._fields(msg)
    assert ((got[0], got[1].strip()) if got else None) == want


@given(st.integers(0, 400), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99),
       st.sampled_from(["{d}d {h}h:{m}m:{s}s", "{h}h:{m}m:{s}s", "{h}:{m:02d}:{s:02d}",
                        " {h}h:{m}m:{s}s", "{s}"]))
def test_113019_duration_shortcut_equals_parse_session_duration(
    d: int, h: int, m: int, s: int, form: str
) -> None:
    text = form.format(d=d, h=h, m=m, s=s)
    msg = (f"Group = G, Username = u, IP = 1.2.3.4, Session disconnected. Session Type: SSL, "
           f"Duration: {text}, Bytes xmt: 5, Bytes rcv: 6, Reason: Idle Timeout")
    line = f"<166>Jan 01 00:10:00 asa : %ASA-4-113019: {msg}"
    ev = next(iter(asa.parse([(1, line)], "f", TimeContext(year=2024), FileAccount("f"))))
    assert not isinstance(ev, str)
    assert getattr(ev, "duration", None) == parse_session_duration(text)
    assert (getattr(ev, "bytes_out", None), getattr(ev, "bytes_in", None)) == (5, 6)


@pytest.mark.parametrize("stamp", ["Jan 32 00:00:00", "Jan 01 25:00:00", "Feb 30 10:00:00",
                                   "Jan 01 23:59:60"])
def test_impossible_stamps_are_reported_not_fatal(tmp_path: Path, stamp: str) -> None:
    p = tmp_path / "asa.log"
    ok = "<166>Jan 02 00:00:00 asa : %ASA-6-113039: Group <G> User <u> IP <1.2.3.4> AnyConnect"
    p.write_text(f"{ok}\n<166>{stamp} asa : %ASA-6-113039: Group <G> User <v> IP <1.2.3.5> x\n")
    rep = ReadReport()
    got = list(read_sessions([p], fmt="asa", ctx=TimeContext(year=2023), report=rep))
    assert [s.user for s in got] == ["u"]
    assert rep.issue_count == 1 and "asa.log:2" in str(rep.issues[0])
