"""Every real vendor sample in ../shared/logs/samples parses to the sessions it holds.

Expected values were read off the files by hand (see the comments); files without
session records must give zero sessions, no crash, and an account saying what they held.
Every file's account explains every line (used, skipped by reason, or a problem).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from analysis.logs import ReadReport, read_sessions
from analysis.session import Session
from analysis.timeparse import TimeContext
from tests.conftest import require

SAMPLES = Path(__file__).parents[2] / ".." / "shared" / "logs" / "samples"


US = 1_000_000


def ts(text: str) -> int:
    return (datetime.fromisoformat(text) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        microseconds=1)


def load(rel: str) -> tuple[list[Session], ReadReport]:
    require(SAMPLES.is_dir(), f"vendor log samples in {SAMPLES}")
    rep = ReadReport()
    ctx = TimeContext(year=2026, now=datetime(2026, 11, 23, tzinfo=UTC))
    return list(read_sessions([SAMPLES / rel], ctx=ctx, report=rep)), rep


def by_user(sessions: list[Session]) -> dict[str, list[Session]]:
    out: dict[str, list[Session]] = {}
    for s in sessions:
        out.setdefault(s.user, []).append(s)
    return out


def test_every_sample_file_has_an_account_with_no_line_unexplained() -> None:
    require(SAMPLES.is_dir(), f"vendor log samples in {SAMPLES}")
    files = [p for p in SAMPLES.rglob("*") if p.is_file() and p.name != "SOURCES.md"]
    assert len(files) >= 20
    for p in files:
        rep = ReadReport()
        ss = list(read_sessions([p], report=rep))
        a = rep.accounts[str(p)]
        assert rep.files[str(p)] != "unknown", p
        assert a.lines == len(p.read_bytes().splitlines()), p
        assert a.unexplained == 0, (p, a.to_json())
        assert a.used + sum(a.skipped.values()) + sum(a.problems.values()) == a.lines
        assert a.sessions == len(ss), p


def test_asa_113019_duration_and_bytes_user_is_ip() -> None:
    ss, rep = load("cisco-asa/test-additional-messages.vpn-extract.log")
    assert rep.files and rep.issue_count == 0
    u = by_user(ss)
    # line 2: Duration: 0h:32m:16s, Bytes xmt: 297103, Bytes rcv: 1216163, Apr 27 02:03:03
    s = u["81.2.69.144"][0]
    assert s.complete and s.end == ts("2026-04-27T02:03:03+00:00")
    assert s.duration == (32 * 60 + 16) * US
    assert (s.bytes_in, s.bytes_out) == (1216163, 297103)
    assert s.source.endswith(":2")
    # 716002 stops without start (testuser, alice) and one 751025 start (anonyms, 2025)
    assert sorted(u) == ["81.2.69.144", "alice", "anonyms", "testuser"]
    assert u["anonyms"][0].start == ts("2025-03-13T09:37:52+00:00")
    assert not u["alice"][0].complete
    # failover 721016/721018, 716058/716059, 602303/602304, 302016 are not sessions:
    # counted as skipped lines by message id
    assert len(ss) == 4
    a = rep.accounts[str(SAMPLES / "cisco-asa/test-additional-messages.vpn-extract.log")]
    assert (a.lines, a.used) == (33, 4) and a.skipped["%ASA-721016: not a session event"] == 2


def test_asa_anyconnect_parent_session_starts_merge_repeats() -> None:
    ss, rep = load("cisco-asa/test-anyconnect-messages.log")
    u = by_user(ss)
    assert sorted(u) == ["example.user", "first.o'last@example.com", "user-1"]
    assert rep.assembly.repeated_starts == 1  # the same user/IP logged twice at 13:29:11
    assert u["user-1"][0].start == ts("2022-06-22T13:29:11+00:00")
    assert all(not s.complete for s in ss)


def test_asa_751025_ipv6_and_hostname_peers() -> None:
    ss, _ = load("cisco-asa/test-751025-vpn-session.log")
    assert [s.user for s in ss] == [
        "alice.johnson@example.com", "bob.smith@example.org", "carol",
        "dave.miller@example.com", "erin.davis@example.com",
    ]
    assert ss[4].session_id == "asa:erin.davis@example.com@2001:db8::2"  # port 50470 dropped
    assert ss[3].session_id.endswith("@client-01.example.net")
    assert ss[0].start == ts("2026-08-20T08:53:11+00:00")


def test_ise_stop_with_counters_and_duplicate_continuation_segment() -> None:
    ss, rep = load("cisco-ise-radius-accounting/test-pipeline-radius-accounting.log")
    u = by_user(ss)
    stop = u["businesskent"]
    assert len(stop) == 1 and rep.assembly.repeated_stops == 1
    s = stop[0]
    assert s.end == ts("2020-04-27T11:18:08.144167-08:00")  # exact to the microsecond
    assert s.duration == 209 * US
    assert (s.bytes_in, s.bytes_out) == (43000, 140998)
    # the Start's Event-Timestamp (1389340795) wins over the syslog header (2020)
    assert u["nisehorrrrn"][0].start == 1389340795 * US


def test_fortigate_tunnel_stats_interim() -> None:
    ss, rep = load("fortigate/test-fortinet-7-6.log")
    assert len(ss) == 1 and rep.issue_count == 0
    s = ss[0]
    # eapuser="test01" (user= is the peer IP); 17:58:46 tz=+0200; duration=385
    assert s.user == "test01"
    assert s.end == ts("2026-04-03T15:58:46+00:00") and s.duration == 385 * US
    assert (s.bytes_in, s.bytes_out) == (34319, 97846)  # rcvdbyte, sentbyte
    assert not s.complete


def test_fortigate_ssl_tunnel_up() -> None:
    ss, _ = load("fortigate/test-fortinet.vpn-extract.log")
    assert [(s.user, s.start) for s in ss] == [("someuser", ts("2020-04-23T12:23:47-05:00"))]


def test_freeradius_attrs_gigawords_and_event_timestamp_zone() -> None:
    ss, _ = load("freeradius-detail/acct_2_stop.attrs")
    (s,) = ss
    assert s.user == "user2@example.org" and s.complete
    assert s.end == ts("2015-02-01T08:28:58+07:00")  # 'Feb  1 2015 08:28:58 WIB'
    assert s.duration == 120 * US
    assert s.bytes_in == 2**32 + 15 and s.bytes_out == 2**32 + 15
    ss, _ = load("freeradius-detail/acct_1_update.attrs")
    assert ss[0].bytes_in == 2**32 + 10 and not ss[0].complete
    ss, _ = load("freeradius-detail/acct_0_start.attrs")
    assert ss[0].start == ts("2015-02-01T08:28:58+07:00") and ss[0].nbytes == 0


def test_freeradius_detail_records() -> None:
    ss, _ = load("freeradius-detail/one.txt")
    assert [(s.user, s.start) for s in ss] == [("bob", 1554226681 * US)]  # Timestamp attribute
    ss, _ = load("freeradius-detail/vyos-lac-lns.detail-extract.txt")
    assert [(s.user, s.start) for s in ss] == [("test@vyos.io", 1708522637 * US)]


def test_openvpn_status_v2_and_v3_agree() -> None:
    v2, r2 = load("openvpn-status/server2.status")
    v3, _ = load("openvpn-status/server3.status")
    assert len(v2) == 5  # redacted1 is listed twice in the v2 snapshot
    key = [(s.user, s.start, s.end, s.bytes_in, s.bytes_out) for s in v2]
    assert key == [(s.user, s.start, s.end, s.bytes_in, s.bytes_out) for s in v3]
    r4 = next(s for s in v2 if s.user == "redacted4")
    assert (r4.start, r4.end) == (1489745789 * US, 1490089154 * US)
    assert (r4.bytes_in, r4.bytes_out) == (24289622392, 70914674697)
    assert r2.issue_count == 0


def test_openvpn_server_log_start_only() -> None:
    ss, _ = load("openvpn-log/test-pfsense-openvpn.log")
    assert [(s.user, s.start, s.complete) for s in ss] == [
        ("bob", ts("2026-07-03T21:42:57+00:00"), False)
    ]


def test_pulse_sessions() -> None:
    ss, rep = load("pulse-connect-secure/test-log-vpn.log")
    sid = {s.session_id: s for s in ss}
    s = sid["pcs:sid085594569c49f5da11e483b49eaaabfc6fede5ce4a227da4"]
    # Closed connection ... after 9 seconds, 1308 bytes read, 1131 written; ended 09:49:40+02
    assert s.end == ts("2021-10-19T09:49:40+02:00") and s.duration == 9 * US
    assert (s.bytes_in, s.bytes_out) == (1308, 1131) and s.complete
    b = sid["pcs:681cfe5eba"]  # 437 s, 36662 read / 24509 written, "Bandwidth consumed [61171]"
    assert b.user == "byes.sma" and b.duration == 437 * US and b.nbytes == 61171
    # login + tunnel start of one session merge; logout after "Session ended" is a repeat;
    # "timed out" after "deleted" (same short id) too
    assert rep.assembly.repeated_starts == 1 and rep.assembly.repeated_stops == 2
    assert len(ss) == 9 and rep.issue_count == 0


def test_libreswan_transcripts_one_session_per_ike_sa() -> None:
    ss, _ = load("libreswan-pluto/whack-deleteuser-01.east.console.txt")
    # ISAKMP SA #1 (showstates), IPsec SA #2 under it; ESP traffic 84/84; #1 deleted
    assert [(s.user, s.start, s.bytes_in, s.bytes_out, s.complete) for s in ss] == [
        ("use1", 1234567890 * US, 84, 84, True)
    ]
    ss, _ = load("libreswan-pluto/ikev1-hostpair-02.road.console.txt")
    # ISAKMP SAs #1, #3, #5 (each deleted) and #7 (still up), one IPsec SA each
    assert [(s.user, s.bytes_in, s.complete) for s in ss] == [
        ("use3", 84, True), ("use3", 0, True), ("use3", 0, True), ("use3", 168, False)
    ]
    ss, _ = load("libreswan-pluto/xauth-pluto-30-multi-subnet-source.north.console.txt")
    # three connections' IPsec SAs (#2, #3, #4), all "using isakmp#1": one session
    assert [(s.user, s.complete) for s in ss] == [("use3", False)]
    ss, _ = load("libreswan-pluto/interop-ikev1-strongswan-01-xauth.west.console.txt")
    assert [(s.user, s.nbytes) for s in ss] == [("use3", 168)]


def test_child_sa_rekeys_are_not_connections() -> None:
    """Issue 17 item 4: ikev2-child-rekey-02 became 9 sessions (one per Child SA)."""
    ss, rep = load("libreswan-pluto/ikev2-child-rekey-02.west.console.txt")
    # IKE SA #1; Child SAs #2 (IKE_AUTH), #3, #4 (CREATE_CHILD_SA); rekeys #5..#10, all
    # "using #1": one connection, whose bytes are every Child SA's (9 x 84 each way)
    assert [(s.user, s.bytes_in, s.bytes_out) for s in ss] == [("@east", 9 * 84, 9 * 84)]
    notes = next(iter(rep.accounts.values())).notes
    assert notes["Child SAs (counted in their IKE SA's session)"] == 3
    assert notes["Child SA rekeys (counted in their IKE SA's session)"] == 6


def test_files_without_session_records_say_what_they_hold() -> None:
    ss, rep = load("paloalto-globalprotect/test-panw-panos-globalprotect-sample.log")
    a = next(iter(rep.accounts.values()))
    # Issue 17 item 3: 12 GlobalProtect lines, none a gateway-connected/logout event
    assert ss == [] and rep.issue_count == 0 and a.formats == ["paloalto"]
    assert (a.lines, a.used, sum(a.skipped.values())) == (12, 0, 12)
    assert a.skipped["GlobalProtect portal-prelogin: a step of a login, not a connection"] == 2
    assert "gateway-connected" in a.expected["paloalto"]
    # charon transcript: one IKE_SA up/down but no timestamp anywhere: reported, not guessed
    ss, rep = load("strongswan-charon/interop-ikev2-strongswan-14-delete-sa.west.console.txt")
    assert ss == [] and rep.issue_count == 1
    assert "without any timestamp" in rep.issues[0].reason
