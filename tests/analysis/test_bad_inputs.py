"""Every bad input named in issues 17 and 21, fed to ``ikeresume analyze``: each ends in a
``file:line: reason`` problem line and the stated exit status (1 without sessions, 0 when
other sessions were read), a failure with ``--strict``, and never a traceback.

The inputs are the issues' own (hex where they gave hex); each also sits in the fuzz
corpus of its log format (tests/fuzz/corpus/log_*), replayed by tests/fuzz/test_corpus.py.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from pathlib import Path
from typing import Any

import pytest

from resume.cli import main

ASA_START = ("<166>Jun 22 2022 13:29:11 fw : %ASA-6-113039: Group <G> User <ann> IP <192.0.2.7> "
             "AnyConnect parent session started.")
ASA_STOP = ("<166>Jun 22 2022 15:29:11 fw : %ASA-4-113019: Group = G, Username = ann, "
            "IP = 192.0.2.7, Session disconnected. Session Type: SSL, Duration: 2h:00m:00s, "
            "Bytes xmt: 10, Bytes rcv: 20, Reason: User Requested")


def analyze(tmp_path: Path, name: str, data: bytes, *opts: str,
            capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any], str]:
    p = tmp_path / name
    p.write_bytes(data)
    capsys.readouterr()
    rc = main(["analyze", str(p), "--out", str(tmp_path / "out"), "--json", "--no-plots",
               "--bootstrap", "0", "--year", "2024", *opts])
    cap = capsys.readouterr()
    doc = json.loads(cap.out)  # pure JSON on stdout, whatever happened
    return rc, doc, cap.err


def problems(doc: dict[str, Any]) -> list[str]:
    return list(doc["inputs"]["problem_examples"])


def strict_fails(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str],
                 *opts: str) -> str:
    capsys.readouterr()
    rc = main(["analyze", str(tmp_path / name), "--out", str(tmp_path / "o2"), "--strict",
               "--no-plots", "--year", "2024", *opts])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    return err


def test_gzip_magic_with_bad_content(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, doc, err = analyze(tmp_path, "x.log", bytes.fromhex("1f8b"), capsys=capsys)
    assert rc == 1 and "Traceback" not in err
    (prob,) = problems(doc)
    assert prob.startswith(f"{tmp_path}/x.log:1: unreadable from here on")
    assert doc["inputs"]["files"][str(tmp_path / "x.log")]["unexplained"] == 0
    assert f"{tmp_path}/x.log:1: unreadable" in strict_fails(tmp_path, "x.log", capsys)


@pytest.mark.parametrize("pack", ["gzip", "bzip2", "xz"])
def test_truncated_compressed_file_keeps_what_was_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pack: str
) -> None:
    lines = [x.replace("ann", f"u{i}") for i in range(20000) for x in (ASA_START, ASA_STOP)]
    raw = {"gzip": gzip.compress, "bzip2": lambda b: bz2.compress(b, 1),
           "xz": lzma.compress}[pack]("\n".join(lines).encode())
    rc, doc, err = analyze(tmp_path, "x.log.z", raw[: len(raw) * 3 // 4], capsys=capsys)
    assert rc == 0 and "Traceback" not in err
    assert doc["summary"]["sessions"] >= 1  # the sessions before the damage are kept
    last = problems(doc)[-1]
    assert "unreadable from here on" in last and last.startswith(f"{tmp_path}/x.log.z:")


def test_bare_cr_inside_a_csv_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = bytes.fromhex("757365722c73746172742c656e640a0d30")  # "user,start,end\n\r0"
    rc, doc, err = analyze(tmp_path, "x.csv", data, capsys=capsys)
    assert rc == 1 and "Traceback" not in err
    (prob,) = problems(doc)  # (the csv module's advice at the end varies by Python version)
    assert prob.startswith(f"{tmp_path}/x.csv:2: bad CSV row: new-line character seen in "
                           "unquoted field")
    strict_fails(tmp_path, "x.csv", capsys)


OFFSET_LINES = {
    "ise": ("<182>Apr 27 11:11:47 h CISE_RADIUS_Accounting 0000070618 1 0 2020-04-27 "
            "11:11:47.028075 +24:00 0091827141 3000 NOTICE Radius-Accounting: RADIUS Accounting "
            "start request, User-Name=kim, NAS-IP-Address=10.0.0.1, Acct-Status-Type=Start, "
            "Acct-Session-Id=s1"),
    "openvpn-log": ("<29>1 2026-07-03T21:42:57+25:00 fw openvpn 1234 - - 10.0.0.9:5 [bob] Peer "
                    "Connection Initiated with [AF_INET]10.0.0.9:5"),
    "swan": ("2024-03-01T10:00:00+24:00 gw charon: 09[IKE] <rw|3> IKE_SA rw[3] established "
             "between 198.51.100.1[gw]...203.0.113.5[carol]"),
    "asa": ("<166>2024-01-01T10:00:00-99:00 fw : %ASA-6-113039: Group <G> User <ann> IP "
            "<192.0.2.7> AnyConnect parent session started."),
    "paloalto": ("1,2024/01/01 10:00:00,0123,GLOBALPROTECT,0,2305,2024/01/01 10:00:00+24:00,"
                 "vsys1,gateway-connected,connected,,IPSec,ann,US,host,1.2.3.4,0.0.0.0,"
                 "10.0.0.1,0.0.0.0,dev,ser,5.1,Windows,10,1,,,,success"),
}


@pytest.mark.parametrize("fmt", sorted(OFFSET_LINES))
def test_utc_offset_of_24h_or_more(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   fmt: str) -> None:
    rc, doc, err = analyze(tmp_path, "x.log", OFFSET_LINES[fmt].encode(), "--format", fmt,
                           capsys=capsys)
    assert rc == 1 and "Traceback" not in err
    (prob,) = problems(doc)
    assert prob.startswith(f"{tmp_path}/x.log:1: ") and "out of range" in prob
    strict_fails(tmp_path, "x.log", capsys, "--format", fmt)


def test_openvpn_af_inet_without_bracket(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    line = ("Jul  3 21:42:57 fw openvpn[1234]: 10.0.0.9:5 [bob] Peer Connection Initiated with "
            "[AF_INET10.0.0.9:5")
    ok = line.replace("[AF_INET10", "[AF_INET]10").replace("[bob]", "[ann]")
    rc, doc, err = analyze(tmp_path, "x.log", f"{ok}\n{line}\n".encode(), capsys=capsys)
    assert rc == 0 and doc["summary"]["sessions"] == 1 and "Traceback" not in err
    assert problems(doc) == [f"{tmp_path}/x.log:2: peer address without ']': '[AF_INET10.0.0.9:5'"]


def test_ise_radius_accounting_without_colon_space(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = ("<182>Apr 27 11:11:47 h CISE_RADIUS_Accounting 0000070618 1 0 2020-04-27 "
            "11:11:47.028075 -08:00 0091827141 3000 NOTICE Radius-Accounting:x")
    rc, doc, err = analyze(tmp_path, "x.log", line.encode(), capsys=capsys)
    assert rc == 1 and "Traceback" not in err
    assert problems(doc) == [f"{tmp_path}/x.log:1: record without Acct-Status-Type"]


@pytest.mark.parametrize("opener", ["[", '{"user":'])
def test_deeply_nested_json_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 opener: str) -> None:
    good = '{"user": "ann", "start": 100, "end": 200}'
    data = f"{good}\n{opener * (60000 // len(opener))}\n".encode()  # under the line limit
    rc, doc, err = analyze(tmp_path, "x.jsonl", data, capsys=capsys)
    assert rc == 0 and doc["summary"]["sessions"] == 1 and "Traceback" not in err
    assert problems(doc) == [f"{tmp_path}/x.jsonl:2: JSON nested too deeply"]


BIG = str(2**63)
BYTE_OVERFLOW = {
    "csv": f"user,start,end,bytes_in,bytes_out\nann,1,2,{BIG},0\nbob,1,5,1,1\n",
    "jsonl": (f'{{"user":"ann","start":1,"end":2,"bytes_in":{BIG}}}\n'
              '{"user":"bob","start":1,"end":2}\n'),
    "fortigate": (
        'date=2024-05-01 time=10:00:00 devname="fg" devid="FG1" logid="0101037141" type="event" '
        'subtype="vpn" action="tunnel-down" remip=1.2.3.4 user="zoe" tunnelid=7 duration=60 '
        f"sentbyte={BIG} rcvdbyte=1\n"
        'date=2024-05-01 time=10:00:00 devname="fg" devid="FG1" logid="0101037141" type="event" '
        'subtype="vpn" action="tunnel-down" remip=1.2.3.5 user="amy" tunnelid=8 duration=60 '
        "sentbyte=1 rcvdbyte=1\n"),
    "radius-detail": (
        "Mon May  6 10:00:00 2024\n\tUser-Name = \"kim\"\n\tAcct-Status-Type = Stop\n"
        "\tAcct-Session-Id = \"s1\"\n\tAcct-Session-Time = 60\n\tAcct-Input-Octets = 5\n"
        f"\tAcct-Input-Gigawords = {2**31}\n\tEvent-Timestamp = 1714989600\n\n"
        "Mon May  6 10:00:00 2024\n\tUser-Name = \"lee\"\n\tAcct-Status-Type = Stop\n"
        "\tAcct-Session-Id = \"s2\"\n\tAcct-Session-Time = 60\n\tEvent-Timestamp = 1714989600\n"),
    "asa": f"{ASA_STOP.replace('Bytes xmt: 10', 'Bytes xmt: ' + BIG)}\n{ASA_STOP}\n",
}


@pytest.mark.parametrize("fmt", sorted(BYTE_OVERFLOW))
def test_byte_counter_of_2_63_is_a_problem_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """Issue 17 item 3: the session vanished with exit 0 and no problem line."""
    rc, doc, err = analyze(tmp_path, "x.log", BYTE_OVERFLOW[fmt].encode(), "--format", fmt,
                           capsys=capsys)
    assert rc == 0 and doc["summary"]["sessions"] == 1 and "Traceback" not in err
    (prob,) = problems(doc)
    assert "2**63" in prob and prob.startswith(f"{tmp_path}/x.log:")


def test_palo_alto_sample_says_what_it_held(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from tests.analysis.test_samples import SAMPLES
    from tests.conftest import require

    src = SAMPLES / "paloalto-globalprotect/test-panw-panos-globalprotect-sample.log"
    require(src.is_file(), f"vendor log samples in {SAMPLES}")
    rc, doc, err = analyze(tmp_path, "gp.log", src.read_bytes(), capsys=capsys)
    assert rc == 1 and "no sessions to replay" in err
    acct = doc["inputs"]["files"][str(tmp_path / "gp.log")]
    assert acct["formats"] == ["paloalto"] and acct["lines"] == 12 and acct["unexplained"] == 0
    assert sum(acct["skipped"].values()) == 12 and "gateway-connected" in acct["expected"][
        "paloalto"]


def test_leading_junk_does_not_hide_the_format(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    junk = [f"junk line {i} nothing to see" for i in range(300)]
    rc, doc, _ = analyze(tmp_path, "x.log", "\n".join([*junk, ASA_START, ASA_STOP]).encode(),
                         capsys=capsys)
    assert rc == 0 and doc["summary"]["sessions"] == 1
    acct = doc["inputs"]["files"][str(tmp_path / "x.log")]
    assert acct["formats"] == ["asa"] and acct["used"] == 2 and acct["unexplained"] == 0
    assert doc["inputs"]["problems"] == 300
    assert problems(doc)[0] == (f"{tmp_path}/x.log:1: not a Cisco ASA/FTD syslog line (no "
                                "%ASA-n-nnnnnn tag); no other known format claims it")


def test_a_file_mixing_two_formats_loses_neither(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    fgt = ('date=2024-05-01 time=10:00:00 devname="fg" devid="FG1" logid="0101037141" '
           'type="event" subtype="vpn" action="tunnel-down" remip=1.2.3.4 user="zoe" '
           "tunnelid=7 duration=60 sentbyte=1 rcvdbyte=1")
    lines = [ASA_START, ASA_STOP] * 40 + [fgt.replace("tunnelid=7", f"tunnelid={i}")
                                          for i in range(30)]
    rc, doc, _ = analyze(tmp_path, "x.log", "\n".join(lines).encode(), capsys=capsys)
    acct = doc["inputs"]["files"][str(tmp_path / "x.log")]
    assert rc == 0 and acct["formats"] == ["asa", "fortigate"]
    assert doc["inputs"]["sessions_by_format"] == {"asa": 40, "fortigate": 30}
    assert acct["used"] == 110 and acct["unexplained"] == 0 and doc["inputs"]["problems"] == 0


def test_over_long_line_is_a_problem_line(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = "\n".join([ASA_START, "x" * (1 << 20), ASA_STOP]).encode()
    rc, doc, _ = analyze(tmp_path, "x.log", data, capsys=capsys)
    assert rc == 0 and doc["summary"]["sessions"] == 1
    assert problems(doc) == [f"{tmp_path}/x.log:2: line longer than 65,536 characters (skipped)"]
    assert doc["inputs"]["max_line_chars"] == 65536


def test_unreadable_path_is_an_error_not_a_traceback(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["analyze", str(tmp_path / "missing.log"), "--out", str(tmp_path / "o"),
               "--no-plots"])
    err = capsys.readouterr().err
    assert rc == 1 and "missing.log: cannot read" in err and "Traceback" not in err
