"""Events, the assembler that pairs them into sessions, and small shared line helpers.

Most logs do not write sessions: they write a start here, an interim counter there and a
stop (sometimes twice, sometimes never).  Parsers turn lines into :class:`LogEvent` values;
one :class:`Assembler` per run pairs them by session key, so a session that starts in one
rotated file and stops in the next is still one session.

Pairing rules (the quirks of real logs):

* a stop that carries a duration defines the start (``end - duration``), whatever else;
* a start repeated for an already-open key within ``merge_window`` is the same session
  (ASA logs 113039 and 751025 for one connection; Pulse logs login and tunnel start);
* a stop for a key closed moments ago, or carrying the same counters, is a repeat (RADIUS
  retransmissions, ISE continuation segments, Pulse logout after session end) and is
  counted, not replayed twice;
* interim records carry cumulative counters: the latest wins; ``usage`` records (one
  transport connection inside a session) add up;
* whatever is still open at the end becomes an incomplete session ending at the last time
  the log mentioned it.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Literal

from analysis.session import MAX_BYTES, Issue, LineError, Session
from analysis.timeparse import US

EventKind = Literal["start", "stop", "interim", "usage"]


@dataclass(slots=True)
class LogEvent:
    """One accounting fact from one line (mutable only because frozen init is slow).

    ``time`` and ``duration`` are integer microseconds."""

    kind: EventKind
    key: str
    user: str
    time: int | None
    source: str
    duration: int | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    bytes_total: int | None = None  # direction unknown (Pulse "Bandwidth consumed")


@dataclass(slots=True)
class _Open:
    user: str
    source: str
    session_id: str
    start: int | None = None
    last: int | None = None
    start_known: bool = False
    bytes_in: int | None = None
    bytes_out: int | None = None
    bytes_total: int | None = None


@dataclass
class AssemblyStats:
    repeated_starts: int = 0
    repeated_stops: int = 0
    without_stop: int = 0
    without_start: int = 0
    untimed: int = 0


@dataclass
class Assembler:
    merge_window: int = 300 * US
    max_closed: int = 200_000  # closed keys remembered for repeat detection (bounded memory)
    stats: AssemblyStats = field(default_factory=AssemblyStats)
    _open: dict[str, _Open] = field(default_factory=dict)
    _closed: dict[str, tuple[int, tuple[object, ...]]] = field(default_factory=dict)

    def feed(self, ev: LogEvent) -> list[Session | Issue]:
        """What this event completes (usually nothing: a plain list, no generator, since
        this runs once per log line that matters)."""
        out: list[Session | Issue] = []
        if ev.kind == "stop":
            self._stop(ev, out)
            return out
        cur = self._open.get(ev.key)
        if cur is not None and ev.user:
            cur.user = ev.user  # the latest mention names the session best (pluto ids)
        if ev.kind == "start":
            if cur is not None:
                near = (
                    cur.start is None
                    or ev.time is None
                    or abs(ev.time - cur.start) <= self.merge_window
                )
                if near:
                    self.stats.repeated_starts += 1
                    if cur.start is None or (ev.time is not None and ev.time < cur.start):
                        cur.start = ev.time
                        cur.start_known = ev.time is not None
                    return out
                self._emit(ev.key, cur, None, False, out)
            self._open[ev.key] = _Open(
                user=ev.user, source=ev.source, session_id=ev.key, start=ev.time,
                last=ev.time, start_known=ev.time is not None,
            )
            return out
        # interim / usage
        if cur is None:
            cur = _Open(user=ev.user, source=ev.source, session_id=ev.key)
            self._open[ev.key] = cur
        if ev.time is not None:
            cur.last = ev.time if cur.last is None else max(cur.last, ev.time)
            if ev.duration is not None and not cur.start_known:
                cur.start = ev.time - ev.duration
                cur.start_known = True
            elif cur.start is None:
                cur.start = ev.time
        if ev.kind == "interim":
            cur.bytes_in = ev.bytes_in if ev.bytes_in is not None else cur.bytes_in
            cur.bytes_out = ev.bytes_out if ev.bytes_out is not None else cur.bytes_out
        else:
            cur.bytes_in = (cur.bytes_in or 0) + (ev.bytes_in or 0)
            cur.bytes_out = (cur.bytes_out or 0) + (ev.bytes_out or 0)
        return out

    def _stop(self, ev: LogEvent, out: list[Session | Issue]) -> None:
        sig = (ev.duration, ev.bytes_in, ev.bytes_out, ev.bytes_total)
        cur = self._open.pop(ev.key, None)
        if cur is None:
            prev = self._closed.get(ev.key)
            if prev is not None:
                close_t, prev_sig = prev
                same = prev_sig == sig and any(v is not None for v in sig)
                if same or (ev.time is not None and abs(ev.time - close_t) <= self.merge_window):
                    self.stats.repeated_stops += 1
                    return
            cur = _Open(user=ev.user, source=ev.source, session_id=ev.key)
        if ev.bytes_in is not None or ev.bytes_out is not None:
            cur.bytes_in, cur.bytes_out = ev.bytes_in, ev.bytes_out
        if ev.bytes_total is not None:
            known = (cur.bytes_in or 0) + (cur.bytes_out or 0)
            if known == 0:
                cur.bytes_in, cur.bytes_out = ev.bytes_total, 0
            cur.bytes_total = ev.bytes_total
        end = ev.time if ev.time is not None else cur.last
        if ev.duration is not None and end is not None:
            cur.start = end - ev.duration
            cur.start_known = True
        if end is not None:
            self._closed[ev.key] = (end, sig)
            if len(self._closed) > self.max_closed:
                # forget the oldest half: repeats arrive right after the stop they repeat
                for k in list(itertools.islice(self._closed, len(self._closed) // 2)):
                    del self._closed[k]
        self._emit(ev.key, cur, end, True, out)

    def _emit(
        self, key: str, cur: _Open, end: int | None, complete: bool,
        out: list[Session | Issue],
    ) -> None:
        if end is None:
            end = cur.last
        start = cur.start if cur.start is not None else end
        if start is None or end is None:
            self.stats.untimed += 1
            out.append(Issue(cur.source, "session without any timestamp (skipped)", lines=0))
            return
        if not cur.start_known:
            self.stats.without_start += 1
            complete = False
        if not complete and cur.start_known:
            self.stats.without_stop += 1
        if end < start:
            why = f"stop before start ({(end - start) // US}s); using the start"
            out.append(Issue(cur.source, why, lines=0))
            end = start
        b_in, b_out = cur.bytes_in or 0, cur.bytes_out or 0
        if b_in > MAX_BYTES or b_out > MAX_BYTES:
            out.append(Issue(cur.source, "byte count over 2**63-1 (session skipped)", lines=0))
            return
        out.append(Session(cur.user, start, end, b_in, b_out, cur.source, key, complete))

    def finish(self) -> list[Session | Issue]:
        """Flush sessions the logs never closed (incomplete: they end at their last mention)."""
        out: list[Session | Issue] = []
        for key, cur in list(self._open.items()):
            self._emit(key, cur, None, False, out)
        self._open.clear()
        return out


_KEY = re.compile(r"(?<![\w.\-])([\w.\-]++)=")
_QUOTED = re.compile(r'"(?:[^"\\]++|\\.)*+"')
_NONSPACE = re.compile(r"\S*+")


def parse_kv(text: str) -> dict[str, str]:
    r"""``key=value key="quoted value"`` pairs (FortiGate, many others), in linear time.

    Same pairs as ``finditer(r'([\w.\-]+)=("(?:[^"\\]|\\.)*"|\S*)')`` (the obvious regex,
    quadratic on a long run of word characters without ``=``; a hypothesis test compares
    the two): a key starts where a run of key characters starts, so each character is
    looked at a bounded number of times; the patterns are possessive (no backtracking)."""
    out: dict[str, str] = {}
    pos, n = 0, len(text)
    while pos < n:
        m = _KEY.search(text, pos)
        if m is None:
            break
        j = m.end()
        q = _QUOTED.match(text, j) if text.startswith('"', j) else None
        v_m = q if q is not None else _NONSPACE.match(text, j)
        if v_m is None:  # cannot happen: \S*+ matches the empty string
            break
        v = v_m.group()
        if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
            v = v[1:-1]
        out[m.group(1)] = v
        pos = max(v_m.end(), j)
    return out


def strip_pri(line: str) -> str:
    if line.startswith("<"):
        end = line.find(">", 0, 5)
        if 0 < end <= 4 and line[1:end].isdigit():
            return line[end + 1 :]
    return line


MAX_COUNT_DIGITS = 20


def to_int(text: str, what: str) -> int:
    """A byte counter: ASCII digits only (``isdigit`` would take ``²``), at most 2**63-1."""
    t = text.strip().strip("'\"")
    if not t or len(t) > MAX_COUNT_DIGITS or not t.isascii() or not t.isdigit():
        raise LineError(f"{what} is not a byte count: {text[:40]!r}")
    v = int(t)
    if v > MAX_BYTES:
        raise LineError(f"{what} over 2**63-1: {t}")
    return v


def peer_host(addr: str) -> str:
    """``198.51.100.25:50466``, ``2001:db8::2:50470``, ``[AF_INET]1.2.3.4:5``, ``[::1]:5``
    -> the host part (IPv6 with a port: the last group is the port when it follows ``::``
    or the address has 8 groups).  A ``[`` without its ``]`` is a :class:`LineError`."""
    a = addr.strip()
    if ":" not in a and "[" not in a:
        return a  # IPv4 or a name without a port: the common case
    if a.startswith("[AF_INET"):
        close = a.find("]")
        if close < 0:
            raise LineError(f"peer address without ']': {a[:40]!r}")
        a = a[close + 1 :]
    if a.startswith("["):
        close = a.find("]")
        if close < 0:
            raise LineError(f"peer address without ']': {a[:40]!r}")
        return a[1:close]
    if a.count(":") == 1:
        return a.split(":", 1)[0]
    if a.count(":") > 1:
        head, _, tail = a.rpartition(":")
        if tail.isdigit() and len(tail) <= 5 and ("::" in head or head.count(":") == 7):
            return head
    return a
