"""Parser quirks, garbage and truncated input, strict mode, detection."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.logs import ReadReport, read_sessions
from analysis.parsers.base import peer_host
from analysis.parsers.detect import detect
from analysis.session import LogParseError, Session
from analysis.timeparse import TimeContext, find_time, parse_session_duration, parse_time

US = 1_000_000


def ts(text: str) -> int:
    """Exact POSIX microseconds of an ISO stamp (no float on the way)."""
    return (datetime.fromisoformat(text) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        microseconds=1)


def run(tmp_path: Path, name: str, text: str, **kw: object) -> tuple[list[Session], ReadReport]:
    p = tmp_path / name
    p.write_text(text)
    rep = ReadReport()
    ctx = TimeContext(year=2024)
    return list(read_sessions([p], ctx=ctx, report=rep, **kw)), rep  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1d 19h:41m:14s", 157274), ("0h:32m:16s", 1936), ("92:24:20", 332660), ("385", 385),
     ("2h:00m:01s", 7201)],
)
def test_device_durations(text: str, seconds: int) -> None:
    assert parse_session_duration(text) == seconds * US


def test_bad_duration_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_session_duration("soon")


def test_timestamps_zones_and_missing_year() -> None:
    ctx = TimeContext(year=2020)
    assert parse_time("Feb  1 2015 08:28:58 WIB", ctx) == ts("2015-02-01T08:28:58+07:00")
    assert parse_time("1775231926133859373", ctx) == 1775231926133859  # ns -> us, exact
    assert parse_time("1389340795.25", ctx) == 1389340795250000
    assert parse_time("Apr 27 11:11:47", ctx) == ts("2020-04-27T11:11:47+00:00")
    # a relay header followed by the device's own stamp with a zone: the zoned one wins
    t = find_time("Sep 25 15:47:07 host1.example.com : Sep 25 15:47:07 EDT: ", ctx)
    assert t == ts("2020-09-25T15:47:07-04:00")


def test_year_rollover_in_yearless_syslog() -> None:
    ctx = TimeContext(year=2023)
    assert parse_time("Dec 31 23:59:00", ctx) == ts("2023-12-31T23:59:00+00:00")
    assert parse_time("Jan  1 00:01:00", ctx) == ts("2024-01-01T00:01:00+00:00")


def test_default_year_never_in_the_future() -> None:
    ctx = TimeContext(now=datetime(2026, 2, 10, tzinfo=UTC))
    assert parse_time("Dec 20 10:00:00", ctx) == ts("2025-12-20T10:00:00+00:00")


@pytest.mark.parametrize(
    ("addr", "host"),
    [("198.51.100.25:50466", "198.51.100.25"), ("2001:db8::2:50470", "2001:db8::2"),
     ("[2001:db8::5]:4500", "2001:db8::5"), ("[AF_INET]10.1.2.3:1194", "10.1.2.3"),
     ("2001:db8::1234", "2001:db8::1234"),
     ("client-01.example.net:50469", "client-01.example.net"), (" 10.0.0.9 ", "10.0.0.9"),
     ("[192.0.2.7]", "192.0.2.7"), ("[AF_INET]10.1.2.3", "10.1.2.3"), ("vpn-gw", "vpn-gw")],
)
def test_peer_host(addr: str, host: str) -> None:
    assert peer_host(addr) == host


def test_garbage_file_is_reported_not_crashed(tmp_path: Path) -> None:
    ss, rep = run(tmp_path, "junk.log", "\x00\x01 hello\nnot a log at all\n")
    assert ss == [] and rep.files[str(tmp_path / "junk.log")] == "unknown"
    assert rep.issue_count == 2  # every line of the file, each with its number
    assert [i.source for i in rep.issues] == [f"{tmp_path}/junk.log:1", f"{tmp_path}/junk.log:2"]
    with pytest.raises(LogParseError, match=r"junk\.log:1"):
        run(tmp_path, "junk.log", "\x00\x01 hello\n", strict=True)


def test_empty_and_binary_files(tmp_path: Path) -> None:
    ss, rep = run(tmp_path, "empty.log", "")
    acct = rep.accounts[str(tmp_path / "empty.log")]
    assert ss == [] and rep.issue_count == 0 and acct.lines == 0 and acct.formats == []
    p = tmp_path / "bin.log"
    p.write_bytes(bytes(range(256)) * 10)
    rep = ReadReport()
    assert list(read_sessions([p], report=rep)) == []


ASA = (
    "<166>Jun 22 2022 13:29:11 fw : %ASA-6-113039: Group <G> User <ann> IP <192.0.2.7> "
    "AnyConnect parent session started.\n"
    "<166>Jun 22 2022 15:29:11 fw : %ASA-4-113019: Group = G, Username = ann, IP = 192.0.2.7, "
    "Session disconnected. Session Type: SSL, Duration: 2h:00m:00s, Bytes xmt: 10, "
    "Bytes rcv: 20, Reason: User Requested\n"
)


def test_asa_start_and_stop_pair(tmp_path: Path) -> None:
    ss, rep = run(tmp_path, "asa.log", ASA)
    assert len(ss) == 1 and rep.issue_count == 0
    s = ss[0]
    assert s.start == ts("2022-06-22T13:29:11+00:00") and s.duration == 7200 * US and s.complete
    assert (s.bytes_in, s.bytes_out) == (20, 10)


def test_truncated_and_malformed_lines_are_skipped_with_location(tmp_path: Path) -> None:
    text = ASA + ASA.splitlines()[1][:120] + "\n" + "garbage line\n"
    ss, rep = run(tmp_path, "asa.log", text)
    assert len(ss) == 1
    reasons = {i.source.rsplit(":", 1)[1]: i.reason for i in rep.issues}
    assert "113019" in reasons["3"] and "not a Cisco" in reasons["4"]
    with pytest.raises(LogParseError, match=r"asa\.log:3"):
        run(tmp_path, "asa.log", text, strict=True)


def test_fortigate_tunnel_up_down(tmp_path: Path) -> None:
    head = 'date=2024-05-01 time={t} devname="fg" devid="FG1" logid="0101037138" type="event" '
    text = (
        head.format(t="10:00:00") + 'subtype="vpn" vd="root" tz="+0200" action="tunnel-up" '
        'remip=203.0.113.9 user="203.0.113.9" xauthuser="zoe" tunnelid=77\n'
        + head.format(t="11:00:00") + 'subtype="vpn" vd="root" tz="+0200" action="tunnel-down" '
        'remip=203.0.113.9 user="203.0.113.9" xauthuser="zoe" tunnelid=77 duration=3600 '
        "sentbyte=5 rcvdbyte=7\n"
    )
    ss, _ = run(tmp_path, "fg.log", text)
    assert [(s.user, s.start, s.duration, s.bytes_in, s.bytes_out, s.complete) for s in ss] == [
        ("zoe", ts("2024-05-01T10:00:00+02:00"), 3600 * US, 7, 5, True)
    ]


def test_radius_detail_gigawords_and_repeated_stop(tmp_path: Path) -> None:
    rec = (
        "Mon May  6 10:00:00 2024\n\tUser-Name = \"kim\"\n\tAcct-Status-Type = Stop\n"
        "\tAcct-Session-Id = \"s1\"\n\tAcct-Session-Time = 60\n\tAcct-Input-Octets = 5\n"
        "\tAcct-Input-Gigawords = 2\n\tAcct-Output-Octets = 1\n\tEvent-Timestamp = 1714989600\n\n"
    )
    ss, rep = run(tmp_path, "detail", rec + rec)
    assert len(ss) == 1 and rep.assembly.repeated_stops == 1
    assert ss[0].bytes_in == 2 * 2**32 + 5 and ss[0].end == 1714989600 * US


def test_openvpn_status_snapshots_follow_sessions(tmp_path: Path) -> None:
    def snap(t: int, rows: list[str]) -> str:
        head = ("TITLE,OpenVPN\nTIME,x," + str(t) + "\nHEADER,CLIENT_LIST,Common Name,Real Address,"
                "Virtual Address,Bytes Received,Bytes Sent,Connected Since,"
                "Connected Since (time_t),Username\n")
        return head + "".join(rows) + "END\n"

    a = "CLIENT_LIST,al,192.0.2.1:5,10.8.0.2,{},{},x,1000,UNDEF\n"
    b = "CLIENT_LIST,bo,192.0.2.2:6,10.8.0.3,1,1,x,1500,UNDEF\n"
    text = snap(2000, [a.format(10, 20), b]) + snap(3000, [b])
    ss, rep = run(tmp_path, "status", text)
    got = {s.user: s for s in ss}
    assert got["al"].complete and (got["al"].start, got["al"].end) == (1000 * US, 2000 * US)
    assert got["al"].bytes_in == 10 and not got["bo"].complete and got["bo"].end == 3000 * US
    assert rep.issue_count == 0


def test_charon_syslog_sessions_with_bytes(tmp_path: Path) -> None:
    text = (
        "Mar  1 10:00:00 gw charon: 09[IKE] <rw|3> IKE_SA rw[3] established between "
        "198.51.100.1[gw]...203.0.113.5[carol@example.org]\n"
        "Mar  1 10:30:00 gw charon: 11[IKE] <rw|3> closing CHILD_SA rw{4} with SPIs "
        "c1a2b3c4_i (1000 bytes) d1e2f3a4_o (2000 bytes) and TS 10.0.0.0/24 === 10.1.0.1/32\n"
        "Mar  1 10:30:00 gw charon: 11[IKE] <rw|3> deleting IKE_SA rw[3] between "
        "198.51.100.1[gw]...203.0.113.5[carol@example.org]\n"
    )
    ss, _ = run(tmp_path, "charon.log", text)
    assert [(s.user, s.start, s.duration, s.bytes_in, s.bytes_out) for s in ss] == [
        ("carol@example.org", ts("2024-03-01T10:00:00+00:00"), 1800 * US, 1000, 2000)
    ]


def test_csv_and_jsonl_generic(tmp_path: Path) -> None:
    csv_text = (
        "user,start,end,bytes_in,bytes_out,session_id\n"
        "ann,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,5,6,a\n"
        "ann,2024-01-01T10:00:00Z,2024-01-01T11:00:00Z,5,6,a\n"
        "bob,1704103200,1704106800,1,2,b\n"
        "bad,yesterday,1,1,1,c\n"
        "short,1\n"
    )
    ss, rep = run(tmp_path, "s.csv", csv_text)
    assert [(s.user, s.duration) for s in ss] == [("ann", 3600 * US), ("bob", 3600 * US)]
    assert rep.issue_count == 2
    js = '{"username": "cy", "start": 100, "duration": 50, "rx": 3}\n{broken\n'
    ss, rep = run(tmp_path, "s.jsonl", js)
    assert [(s.user, s.start, s.end, s.bytes_in) for s in ss] == [("cy", 100 * US, 150 * US, 3)]
    assert rep.issue_count == 1


def test_gzip_input_and_format_override(tmp_path: Path) -> None:
    p = tmp_path / "asa.log.gz"
    with gzip.open(p, "wt") as fh:
        fh.write(ASA)
    rep = ReadReport()
    assert len(list(read_sessions([p], report=rep, ctx=TimeContext(year=2022)))) == 1
    rep = ReadReport()
    ss = list(read_sessions([p], fmt="csv", report=rep))
    assert ss == [] and rep.issue_count == 2  # forced csv: neither ASA line is a CSV row


def test_session_spanning_two_rotated_files(tmp_path: Path) -> None:
    a, b = ASA.splitlines(keepends=True)
    (tmp_path / "1.log").write_text(a)
    (tmp_path / "2.log").write_text(b)
    ss = list(read_sessions([tmp_path / "1.log", tmp_path / "2.log"]))
    assert len(ss) == 1 and ss[0].complete


def test_detect_picks_the_right_format() -> None:
    assert detect(ASA.splitlines()).name == "asa"  # type: ignore[union-attr]
    assert detect(["user,start,end", "a,1,2"]).name == "csv"  # type: ignore[union-attr]
    assert detect(["hello world"]) is None


@given(st.text(max_size=400))
def test_fuzz_any_text_never_crashes(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        for name in ("asa", "fortigate", "radius-detail", "ise", "openvpn-status", "pulse",
                     "swan", "csv", "jsonl", "paloalto", "openvpn-log"):
            p = Path(d) / "f.log"
            p.write_text(text)
            rep = ReadReport()
            for s in read_sessions([p], fmt=name, report=rep):
                assert s.end >= s.start


def test_csv_fast_path_equals_row_parser_and_falls_back(tmp_path: Path) -> None:
    from analysis.logs import read_trace

    rows = ["user,start,end,bytes_in,bytes_out"]
    rows += [f"u{i % 7},{1000 + i * 10.5},{1005 + i * 10.5},{i},{2 * i}" for i in range(500)]
    rows.insert(200, "u1,-,3,4,5")  # a bad row in the middle: that chunk goes row by row
    rows.insert(300, '"u 2",100,200,1,1')
    p = tmp_path / "t.csv"
    p.write_text("\n".join(rows) + "\n")
    rep = ReadReport()
    fast = read_trace([p], report=rep)
    slow = list(read_sessions([p]))
    assert len(fast) == len(slow) == 501 and rep.issue_count == 1
    assert "t.csv:201" in str(rep.issues[0])
    key_fast = sorted(zip([fast.user_names[u] for u in fast.user], fast.start.tolist(),
                          fast.end.tolist(), fast.nbytes.tolist(), strict=True))
    key_slow = sorted((s.user, s.start, s.end, s.nbytes) for s in slow)
    assert key_fast == key_slow
    import analysis.fastcsv as fc

    old = fc.CHUNK_CHARS
    fc.CHUNK_CHARS = 64  # many tiny blocks, lines cut across reads
    try:
        again = read_trace([p])
    finally:
        fc.CHUNK_CHARS = old
    assert sorted(again.start.tolist()) == sorted(fast.start.tolist())


def test_assembler_memory_of_closed_sessions_is_bounded() -> None:
    from analysis.parsers.base import Assembler, LogEvent

    asm = Assembler(max_closed=10)
    for i in range(100):
        list(asm.feed(LogEvent("stop", f"k{i}", "u", i * 1000 * US, f"f:{i}", duration=US)))
    assert len(asm._closed) <= 10
    # a repeat right after its stop is still recognised
    list(asm.feed(LogEvent("stop", "k99", "u", 99_000 * US, "f:100", duration=US)))
    assert asm.stats.repeated_stops == 1


@pytest.mark.parametrize("zone", ["UTC", "+0530"])
def test_csv_fast_path_iso_times_equal_row_parser(tmp_path: Path, zone: str) -> None:
    from analysis.logs import read_trace
    from analysis.timeparse import parse_offset

    rows = ["user,start,end,bytes_in,bytes_out"]
    rows += [f"u{i % 3},2024-03-0{1 + i % 9}T10:{i % 60:02d}:01.25{'Z' if i < 0 else ''},"
             f"2024-03-0{1 + i % 9}T11:00:00,{i},{i}" for i in range(300)]
    p = tmp_path / "iso.csv"
    p.write_text("\n".join(rows) + "\n")
    ctx = TimeContext(tz=parse_offset(zone))
    fast = read_trace([p], ctx=ctx)
    slow = list(read_sessions([p], ctx=TimeContext(tz=parse_offset(zone))))
    assert sorted(fast.start.tolist()) == sorted(s.start for s in slow)
    assert sorted(fast.end.tolist()) == sorted(s.end for s in slow)
    z = tmp_path / "z.csv"
    z.write_text("user,start,end\na,2024-01-01T00:00:00Z,2024-01-01T01:00:00.5Z\n")
    zt = read_trace([z])
    assert (zt.start[0], zt.end[0]) == (ts("2024-01-01T00:00:00+00:00"), 1704070800_500000)


def test_line_ends_split_across_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CRLF, a CR or an over-long line cut by the reader's chunk boundary: same lines."""
    import analysis.logs as lg

    text = "a,1\r\nbb,2\r\n" + "x" * 70000 + "\r\nccc,3\r\n" + "d\re,4\n" + "last"
    p = tmp_path / "t.txt"
    p.write_text(text)
    want = [(1, "a,1"), (2, "bb,2"), (4, "ccc,3"), (5, "d\re,4"), (6, "last")]
    for chunk in (1, 2, 3, 5, 7, 64, 1 << 20):
        monkeypatch.setattr(lg, "CHUNK", chunk)
        got = list(lg.iter_lines(p))
        assert got == want, chunk


@given(st.text(st.sampled_from("ab\r\n"), max_size=60), st.integers(1, 9))
def test_iter_lines_equals_split_at_newlines(text: str, chunk: int) -> None:
    import tempfile

    import analysis.logs as lg

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "t.txt"
        p.write_bytes(text.encode())
        old = lg.CHUNK
        lg.CHUNK = chunk
        try:
            got = list(lg.iter_lines(p))
        finally:
            lg.CHUNK = old
    parts = text.split("\n")
    if parts[-1] == "":
        parts.pop()
    assert got == [(i, ln[:-1] if ln.endswith("\r") else ln) for i, ln in enumerate(parts, 1)]
