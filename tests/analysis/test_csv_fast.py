"""The CSV fast paths are the row parser, only faster: property tests on hostile inputs.

``analysis.bytecsv.chunk_columns`` either declines a chunk (``None``) or returns exactly the
row parser's sessions, in order, value for value (integer microseconds).  The layered
reader (bytes -> strings -> rows) gives the same sessions and the same file:line issues as the
row parser on the whole file, whatever the chunk size.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

import analysis.fastcsv as fc
from analysis import bytecsv
from analysis.account import FileAccount
from analysis.logs import ReadReport, read_sessions, read_trace
from analysis.parsers import generic
from analysis.session import Issue, Session
from analysis.timeparse import TimeContext


@st.composite
def decimal(draw: st.DrawFn) -> str:
    digits = str(draw(st.integers(0, 10 ** draw(st.integers(1, 18)))))
    digits = digits.zfill(draw(st.integers(0, 20)))
    cut = draw(st.one_of(st.none(), st.integers(0, len(digits))))
    return digits if cut is None else digits[:cut] + "." + digits[cut:]


ODD = ["", ".", "-1", "+5", "1e3", " 7", "7 ", "1_0", "nan", "inf", "0x10", "1.2.3", "١٢",
       "2024-01-01T00:00:00", "99999999999999999999"]
CLEAN_NAMES = ["alice", "bob", "u1", "10.0.0.1", "2001:db8::1", "é", "a" * 40,
               "carol.smith@example.com", "x" * 16, "y" * 17, "z" * 32, "w" * 33, "ü" * 12]
ANY_NAME = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
                   max_size=12)


def fields(clean: bool) -> tuple[st.SearchStrategy[str], ...]:
    """(times, counts, names): mostly well-formed when ``clean``, anything otherwise."""
    if clean:
        return (decimal(), st.integers(0, 10**16 - 1).map(str),
                st.sampled_from([n for n in CLEAN_NAMES if len(n.encode()) <= 32]))
    return (st.one_of(decimal(), st.sampled_from(ODD)),
            st.one_of(st.integers(0, 10**17).map(str), st.sampled_from(ODD)),
            st.one_of(st.sampled_from(CLEAN_NAMES), ANY_NAME))


@st.composite
def rows(draw: st.DrawFn) -> tuple[str, list[str]]:
    header = draw(st.sampled_from([
        "user,start,end,bytes_in,bytes_out", "user,start,duration,bytes_in,bytes_out",
        "user,start,end", "start,user,end,session_id,rx,tx", "user;start;stop;in;out",
        "user\tstart\tend\tbytes_in\tbytes_out\tsession_id", "user,start,end,duration",
    ]))
    delim = max((",", "\t", ";"), key=header.count)
    width = header.count(delim) + 1
    cols = generic._columns(header.split(delim))
    out = []
    clean = draw(st.booleans())
    times, counts, names = fields(clean)
    for n in range(draw(st.integers(0, 12))):
        base = draw(st.integers(0, 2_000_000_000))
        frac = draw(st.sampled_from(["", ".", ".5", ".25", ".001", ".123456", ".9999999"]))
        f = ["x"] * width
        for field, i in cols.items():
            if field == "user":
                f[i] = draw(names)
            elif field == "start":
                f[i] = f"{base}{frac}" if clean else draw(times)
            elif field in ("end", "duration"):
                later = base * (field == "end") + draw(st.integers(0, 99999))
                f[i] = f"{later}{frac}" if clean else draw(times)
            elif field == "session_id":
                f[i] = draw(st.sampled_from(["", f"s{n}"] if clean else ["", "s1", " s1", "s2"]))
            else:
                f[i] = draw(counts)
        line = delim.join(f)
        if draw(st.integers(0, 40)) == 0:
            line = draw(st.sampled_from(["", line + delim + "extra", line[: len(line) // 2],
                                         '"' + line, line + "\r"]))
        out.append(line)
    return header, out


def row_parser(header: str, lines: list[str]) -> list[Session | Issue]:
    numbered = list(enumerate([header, *lines], 1))
    return list(generic.parse_csv(numbered, "f.csv", TimeContext(), FileAccount("f.csv"),
                                  seen=set()))


def key(s: Session) -> tuple[str, int, int, int, int]:
    return (s.user, s.start, s.end, s.bytes_in, s.bytes_out)


@given(rows(), st.sampled_from(["\n", "\r\n"]))
def test_byte_path_declines_or_equals_row_parser(data: tuple[str, list[str]], eol: str) -> None:
    header, lines = data
    delim = max((",", "\t", ";"), key=header.count)
    cols = generic._columns(header.split(delim))
    names: dict[str, int] = {}
    got = bytecsv.chunk_columns("".join(ln + eol for ln in lines), delim, cols,
                                header.count(delim) + 1, names, set(), itertools.count())
    if got is None:
        return
    ref = row_parser(header, lines)
    assert all(isinstance(r, Session) for r in ref)
    by_number = {v: k for k, v in names.items()}
    uid, start, end, b_in, b_out = got
    fast = list(zip([by_number[u] for u in uid.tolist()], start.tolist(), end.tolist(),
                    b_in.tolist(), b_out.tolist(), strict=True))
    assert fast == [key(r) for r in ref if isinstance(r, Session)]


@given(rows(), st.sampled_from([64, 200, 1 << 20]), st.sampled_from(["\n", "\r\n"]))
def test_layered_reader_equals_row_parser(
    data: tuple[str, list[str]], chunk: int, eol: str
) -> None:
    header, lines = data
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "f.csv"
        p.write_bytes((eol.join([header, *lines]) + eol).encode("utf-8"))
        rep_fast, rep_slow = ReadReport(), ReadReport()
        old = fc.CHUNK_CHARS
        fc.CHUNK_CHARS = chunk
        try:
            tr = read_trace([p], fmt="csv", report=rep_fast)
        finally:
            fc.CHUNK_CHARS = old
        slow = list(read_sessions([p], fmt="csv", report=rep_slow))
    fast = sorted(zip([tr.user_names[u] for u in tr.user.tolist()], tr.start.tolist(),
                      tr.end.tolist(), tr.bytes_in.tolist(), tr.bytes_out.tolist(),
                      strict=True))
    assert fast == sorted(key(s) for s in slow)
    assert sorted(map(str, rep_fast.issues)) == sorted(map(str, rep_slow.issues))


def test_byte_path_takes_plain_exports_and_exact_decimals() -> None:
    """The common export goes through the byte path (not just declined), digits exact."""
    lines = ["alice,1167660978.638,1167661227.641,87523,155133",
             "bob,.5,5.,0,0", "alice,253402300799,253402300799.9999999,1,2",
             "carol.smith@example.com,0.1000009999999999,12345678.12345678,9999999999999999,0"]
    names: dict[str, int] = {}
    got = bytecsv.chunk_columns("\n".join(lines), ",", {"user": 0, "start": 1, "end": 2,
                                "bytes_in": 3, "bytes_out": 4}, 5, names, set(),
                                itertools.count())
    assert got is not None
    ref = row_parser("user,start,end,bytes_in,bytes_out", lines)
    uid, start, end, b_in, b_out = got
    assert b_out.tolist() == [155133, 0, 2, 0]
    assert list(names) == ["alice", "bob", "carol.smith@example.com"]
    assert start.tolist() == [r.start for r in ref if isinstance(r, Session)]
    assert end.tolist() == [r.end for r in ref if isinstance(r, Session)]
    assert b_in.tolist() == [87523, 0, 1, 9999999999999999]
    assert uid.tolist() == [0, 1, 0, 2]
    # exact microseconds, digits past the sixth truncated (as the row parser does)
    assert start.tolist() == [1167660978638000, 500000, 253402300799000000, 100000]
    assert end.tolist()[2:] == [253402300799999999, 12345678123456]
    # a second past year 9999: declined (the row parser reports it), not wrapped
    assert bytecsv.chunk_columns("a,253402300800,253402300800\n", ",",
                                 {"user": 0, "start": 1, "end": 2}, 3, {}, set(),
                                 itertools.count()) is None
    # Windows line ends are taken; a lone CR is left to csv.reader
    crlf = bytecsv.chunk_columns("a,1,2\r\nb,3,4\r\n", ",", {"user": 0, "start": 1, "end": 2},
                                 3, {}, set(), itertools.count())
    assert crlf is not None and crlf[2].tolist() == [2_000_000, 4_000_000]
    assert bytecsv.chunk_columns("a,1,2\rb,3,4\n", ",", {"user": 0, "start": 1, "end": 2}, 3,
                                 {}, set(), itertools.count()) is None
