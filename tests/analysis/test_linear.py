"""Every log parser reads a line in time linear in its length, whatever the line holds.

Issue 21 found two hangs (FortiGate ``parse_kv`` on a long word, OpenVPN's ``_INIT`` regex
on a line of ``[``: quadratic backtracking) and the same shape was possible in most
parsers.  Each case here is a hostile line shape for one parser; the verdict compares
the time of one long line with the time of 1024 short lines holding the same characters
in total, so it does not depend on the machine's speed: a linear parser gives a ratio
near 1, a quadratic one near 1024; the bound is 25.  The issue's two hangs are measured
on a 1 MiB line against 1 KiB lines; the other shapes on 256 KiB against 256 B (the same
ratio, a quarter of the test time).  (The reader also refuses lines over 64 KiB; these
tests call the parsers directly, past that limit, to prove the parsers themselves.)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import pytest

from analysis.account import FileAccount
from analysis.parsers.base import parse_kv
from analysis.parsers.detect import FORMATS
from analysis.timeparse import TimeContext, find_time

KIB, MIB = 1 << 10, 1 << 20
SMALL, BIG = 256, 256 << 10
RATIO = 25
HANGS = {("fortigate", 0), ("openvpn-log", 4)}  # (format, case): the two hangs

# (format, line of about n characters)
CASES: list[tuple[str, Callable[[int], str]]] = [
    ("fortigate", lambda n: "logid=1 type=event date=2024-01-01 time=00:00:00 " + "a" * n),
    ("fortigate", lambda n: 'logid=1 type=event ' + '="' * (n // 2)),
    ("fortigate", lambda n: "logid=1 type=event " + "a=" * (n // 2)),
    ("fortigate", lambda n: 'logid=1 type=event k="' + "\\\\" * (n // 2)),
    ("openvpn-log", lambda n: "[" * n),
    ("openvpn-log", lambda n: "openvpn: " + "a/b " * (n // 4) + "client-instance exiting"),
    ("openvpn-log", lambda n: "] Peer Connection Initiated with " * (n // 33)),
    ("openvpn-status", lambda n: "CLIENT_LIST," + "," * n),
    ("asa", lambda n: "%ASA-4-113019: " + "Group = " * (n // 8)),
    ("asa", lambda n: "%ASA-4-113019: Group = a, Username = b, IP = " + "c" * n),
    ("asa", lambda n: "%ASA-6-113039: " + "Group <" * (n // 7)),
    ("asa", lambda n: "%ASA-6-113039: Group" + " " * n + "User"),
    ("asa", lambda n: "%ASA-5-751025: " + "Local:" * (n // 6)),
    ("asa", lambda n: "Jan  1 00:00:00 " * (n // 16) + "%ASA-6-113039: Group <G> User <u> IP "
     "<1.2.3.4> x"),
    ("asa", lambda n: "2024-01-01T00:00:00 " * (n // 20) + "%ASA-6-113039: Group <G> User <u> "
     "IP <1> x"),
    ("pulse", lambda n: "PulseSecure: " + " - [" * (n // 4)),
    ("pulse", lambda n: "PulseSecure: - [p] u(r) - Closed connection to "
     + " after 1 seconds, with 1 bytes read" * (n // 35)),
    ("pulse", lambda n: "PulseSecure: - [p] u(r)" + "[" * n),
    ("ise", lambda n: "CISE_RADIUS_Accounting 1 1 1 " + ", a" * (n // 3)),
    ("ise", lambda n: "CISE_RADIUS_Accounting 1 1 1 Radius-Accounting: " + "a=b, " * (n // 5)),
    ("ise", lambda n: "CISE_RADIUS_Accounting 1 1 1 " + ", a" + " a" * (n // 2) + "="),
    ("radius-detail", lambda n: "a" * n),
    ("radius-detail", lambda n: "User-Name = " + '"' * n),
    ("swan", lambda n: '"' * n),
    ("swan", lambda n: ' #1: ' * (n // 5)),
    ("swan", lambda n: "IKE_SA " * (n // 7)),
    ("swan", lambda n: "IKE_SA a[1] established between " + "x" * n),
    ("swan", lambda n: "closing CHILD_SA " * (n // 17)),
    ("swan", lambda n: '"c" #1: ' + "ESP traffic information: in=" * (n // 28)),
    ("swan", lambda n: "#1: \"c\" " + "add_time=" * (n // 9)),
    ("paloalto", lambda n: ",GLOBALPROTECT," * (n // 15)),
    ("paloalto", lambda n: ",GLOBALPROTECT,vsys" + "," * n),
    ("csv", lambda n: "a," * (n // 2)),
    ("csv", lambda n: '"' * n),
    ("jsonl", lambda n: '{"user": "' + "b" * n + '"}'),
    ("jsonl", lambda n: "[" * n),
]


def _seconds(fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _parse(fmt: str, lines: list[str]) -> None:
    f = FORMATS[fmt]
    numbered = list(enumerate(lines, 1))
    if fmt == "csv":
        numbered = [(0, "user,start,end"), *numbered]
    for _item in f.parse(numbered, "f", TimeContext(year=2024), FileAccount("f")):
        pass


@pytest.mark.parametrize(("case", "fmt", "make"), [(i, f, m) for i, (f, m) in enumerate(CASES)],
                         ids=[f"{f}-{i}" for i, (f, _m) in enumerate(CASES)])
def test_parser_is_linear_in_the_line(case: int, fmt: str, make: Callable[[int], str]) -> None:
    hang = (fmt, case) in HANGS
    big = make(MIB if hang else BIG)
    small = make(KIB if hang else SMALL)
    one = _seconds(lambda: _parse(fmt, [big]))
    many = _seconds(lambda: _parse(fmt, [small] * (len(big) // max(1, len(small)))))
    assert one / many < RATIO, f"{fmt}: 1 MiB line {one:.4f}s vs 1 KiB lines {many:.4f}s"


@pytest.mark.parametrize("make", [
    lambda n: "a" * n,  # the FortiGate hang: one long run of word characters
    lambda n: "k=" + "a" * n,
    lambda n: ("x " * (n // 2)),
])
def test_parse_kv_is_linear(make: Callable[[int], str]) -> None:
    big, small = make(MIB), make(KIB)  # the FortiGate hang: 1 MiB against 1 KiB
    one = _seconds(lambda: parse_kv(big))
    many = _seconds(lambda: [parse_kv(small) for _ in range(len(big) // len(small))])
    assert one / many < RATIO


@pytest.mark.parametrize("make", [
    lambda n: "Jan  1 " * (n // 7),
    lambda n: "2024-01-01 " * (n // 11),
    lambda n: "Mon " * (n // 4) + "Jan",
    lambda n: "Jan" + " " * n + "1 00:00:00",
])
def test_find_time_is_linear(make: Callable[[int], str]) -> None:
    big, small = make(BIG), make(SMALL)

    def run(lines: list[str]) -> None:
        ctx = TimeContext(year=2024)
        for ln in lines:
            with contextlib.suppress(ValueError):
                find_time(ln, ctx)

    one = _seconds(lambda: run([big]))
    many = _seconds(lambda: run([small] * (len(big) // len(small))))
    assert one / many < RATIO
