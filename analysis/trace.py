"""A columnar trace: sessions as numpy arrays, the form every replay works on.

Parsers produce :class:`Session` objects one by one; replays want arrays.  A trace keeps
users as small integers (``user_names[user[i]]``), times as int64 POSIX microseconds and
byte counts as int64, in any order; :meth:`Trace.user_order` gives the order the replay
uses (by user, then start, then input position: deterministic for ties) and
:meth:`Trace.time_order` the global one (by start, then user, then input position).
Both are computed once per trace and cached.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from analysis.session import MAX_BYTES, Session

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
B = npt.NDArray[np.bool_]
US = 1_000_000


def _int64(x: npt.ArrayLike, name: str) -> I64:
    a = np.asarray(x)
    if a.dtype.kind == "f" and a.size:
        raise TypeError(f"trace column {name} must hold integers (microseconds, bytes)")
    return a.astype(np.int64, copy=False)


def saturating_add(a: I64, b: I64) -> I64:
    """``a + b`` for non-negative int64 arrays, capped at 2**63-1 instead of wrapping."""
    out: I64 = a + np.minimum(b, MAX_BYTES - a)
    return out


@dataclass(frozen=True)
class Trace:
    user: I32
    start: I64
    end: I64
    bytes_in: I64
    bytes_out: I64
    user_names: tuple[str, ...]
    complete: B
    rekey: B  # True for segments created by :func:`split_rekeys` (not a new connection)
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.user)
        for name in ("start", "end", "bytes_in", "bytes_out", "complete", "rekey"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"trace column {name} has the wrong length")
        for name in ("start", "end", "bytes_in", "bytes_out"):
            if getattr(self, name).dtype != np.int64:
                raise TypeError(f"trace column {name} must be int64")
        if n and (self.end < self.start).any():
            raise ValueError("a session ends before it starts")

    def __len__(self) -> int:
        return len(self.user)

    @property
    def nbytes(self) -> I64:
        """Bytes in both directions (saturating at 2**63-1, never wrapping)."""
        got = self._cache.get("nbytes")
        if got is None:
            got = self._cache["nbytes"] = saturating_add(self.bytes_in, self.bytes_out)
        out: I64 = got
        return out

    @property
    def duration(self) -> I64:
        out: I64 = self.end - self.start
        return out

    @property
    def n_users(self) -> int:
        return len(self.user_names)

    @property
    def connections(self) -> int:
        return int((~self.rekey).sum())

    def user_order(self) -> npt.NDArray[np.intp]:
        """Sessions by user, then start, then input position (cached)."""
        got = self._cache.get("user_order")
        if got is None:
            lo = int(self.start.min()) if len(self) else 0
            got = self._cache["user_order"] = sort_order(
                self.user.astype(np.int64), self.start - lo, self.n_users, 0)
        out: npt.NDArray[np.intp] = got
        return out

    def time_order(self) -> npt.NDArray[np.intp]:
        """Sessions by start, then user, then input position (cached)."""
        got = self._cache.get("time_order")
        if got is None:
            lo = int(self.start.min()) if len(self) else 0
            got = self._cache["time_order"] = sort_order(
                self.start - lo, self.user.astype(np.int64), None, self.n_users)
        out: npt.NDArray[np.intp] = got
        return out

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> Trace:
        """A sub-trace (e.g. a sample of sessions, or the sessions of some users)."""
        return Trace(
            self.user[index], self.start[index], self.end[index], self.bytes_in[index],
            self.bytes_out[index], self.user_names, self.complete[index], self.rekey[index],
        )

    @classmethod
    def from_columns(
        cls,
        user: npt.ArrayLike,
        start: npt.ArrayLike,
        end: npt.ArrayLike,
        bytes_in: npt.ArrayLike,
        bytes_out: npt.ArrayLike,
        user_names: Iterable[str] | None = None,
        complete: npt.ArrayLike | None = None,
    ) -> Trace:
        """Integer columns (times in microseconds); float times are refused, not rounded."""
        u = np.asarray(user, dtype=np.int32)
        names = tuple(user_names) if user_names is not None else tuple(
            str(i) for i in range(int(u.max()) + 1 if len(u) else 0)
        )
        n = len(u)
        return cls(
            u, _int64(start, "start"), _int64(end, "end"), _int64(bytes_in, "bytes_in"),
            _int64(bytes_out, "bytes_out"), names,
            np.ones(n, dtype=bool) if complete is None else np.asarray(complete, dtype=bool),
            np.zeros(n, dtype=bool),
        )

    @staticmethod
    def concat(parts: list[Trace]) -> Trace:
        """One trace from several (users matched by name)."""
        return _concat(parts)

    @classmethod
    def from_sessions(cls, sessions: Iterable[Session]) -> Trace:
        ids: dict[str, int] = {}
        user: list[int] = []
        start: list[int] = []
        end: list[int] = []
        b_in: list[int] = []
        b_out: list[int] = []
        complete: list[bool] = []
        for s in sessions:
            user.append(ids.setdefault(s.user, len(ids)))
            start.append(s.start)
            end.append(s.end)
            b_in.append(s.bytes_in)
            b_out.append(s.bytes_out)
            complete.append(s.complete)
        n = len(user)
        return cls(
            np.asarray(user, dtype=np.int32), np.asarray(start, dtype=np.int64),
            np.asarray(end, dtype=np.int64), np.asarray(b_in, dtype=np.int64),
            np.asarray(b_out, dtype=np.int64), tuple(ids), np.asarray(complete, dtype=bool),
            np.zeros(n, dtype=bool),
        )


def sort_order(major: I64, minor: I64, n_major: int | None, n_minor: int | None
               ) -> npt.NDArray[np.intp]:
    """``np.lexsort((index, minor, major))`` for non-negative integer keys, faster.

    When ``major * (minor range) + minor`` fits an int64 (always for real traces: 16
    bits of users times 42 bits of microseconds in a month), one unstable sort of that
    key, then only the runs of equal keys are put back in input order."""
    n = len(major)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    span_minor = (int(minor.max()) + 1) if n_minor is None else max(n_minor, int(minor.max()) + 1)
    top = (int(major.max()) + 1) if n_major is None else max(n_major, int(major.max()) + 1)
    if int(minor.min()) < 0 or int(major.min()) < 0 or top * span_minor >= 2**62:
        out_l: npt.NDArray[np.intp] = np.lexsort((minor, major)).astype(index_dtype(n))
        return out_l
    key = major * span_minor
    key += minor
    order: Any = np.argsort(key).astype(index_dtype(n), copy=False)
    ks = key[order]
    del key
    tie = ks[1:] == ks[:-1]
    if tie.any():
        at = np.flatnonzero(tie)
        pos = np.unique(np.concatenate((at, at + 1)))
        sub = order[pos]
        order[pos] = sub[np.lexsort((sub, ks[pos]))]
    out: npt.NDArray[np.intp] = order
    return out


def index_dtype(n: int) -> type[np.int32] | type[np.int64]:
    """Positions in an array of ``n``: int32 when they fit (half the memory)."""
    return np.int32 if n < 2**31 else np.int64


def _concat(parts: list[Trace]) -> Trace:
    parts = [p for p in parts if len(p)] or parts[:1]
    if not parts:
        return Trace.from_columns([], [], [], [], [])
    if len(parts) == 1:
        return parts[0]
    names: dict[str, int] = {}
    cols: list[list[npt.NDArray[Any]]] = [[] for _ in range(7)]
    for p in parts:
        remap = np.array([names.setdefault(n, len(names)) for n in p.user_names], dtype=np.int32)
        cols[0].append(remap[p.user] if len(p) else p.user)
        for i, name in enumerate(("start", "end", "bytes_in", "bytes_out", "complete", "rekey")):
            cols[i + 1].append(getattr(p, name))
    u, s, e, bi, bo, c, r = (np.concatenate(x) for x in cols)
    return Trace(u.astype(np.int32), s, e, bi, bo, tuple(names), c.astype(bool), r.astype(bool))


SPLIT_CHUNK = 1 << 16  # sessions cut at a time (bounds the temporaries)


def split_rekeys(trace: Trace, interval: int, both_directions: bool = True) -> Trace:
    """Cut sessions longer than ``interval`` microseconds into segments, one per IKE rekey.

    A gateway rekeys a long session every ``interval``; without a cache each rekey is
    another full exchange, with one it can be a resumption judged by the policy like a
    reconnection.  Bytes are spread over segments in proportion to time (integer parts
    that add up exactly to the session's count).  Segments follow their session, in
    input order.  ``both_directions=False`` keeps only the total (as ``bytes_in``;
    ``bytes_out`` a zero view): what the replay needs, in less memory.  Sessions are cut
    a bounded number at a time (the temporaries stay small whatever the trace).
    """
    if interval <= 0:
        raise ValueError("rekey interval must be positive")
    n = len(trace)
    nseg = np.empty(n, dtype=np.int64)
    for c0 in range(0, n, SPLIT_CHUNK):
        d = trace.end[c0 : c0 + SPLIT_CHUNK] - trace.start[c0 : c0 + SPLIT_CHUNK]
        nseg[c0 : c0 + SPLIT_CHUNK] = np.maximum(1, -(-d // interval))  # ceil, d >= 0
    total = int(nseg.sum())
    cols = ([trace.bytes_in, trace.bytes_out] if both_directions else [trace.nbytes])
    user = np.empty(total, dtype=np.int32)
    start = np.empty(total, dtype=np.int64)
    end = np.empty(total, dtype=np.int64)
    outs = [np.empty(total, dtype=np.int64) for _ in cols]
    complete = np.empty(total, dtype=bool)
    rekey = np.ones(total, dtype=bool)
    offset = 0
    for c0 in range(0, n, SPLIT_CHUNK):
        c1 = min(n, c0 + SPLIT_CHUNK)
        k = nseg[c0:c1]
        first = offset + np.cumsum(k) - k
        offset += int(k.sum())
        rep = np.repeat(np.arange(c0, c1), k)  # the session of each segment
        m = np.arange(len(rep)) - np.repeat(first - first[0], k)  # segment number
        pos = first[0] + np.arange(len(rep))
        s0 = trace.start[rep]
        seg_start = s0 + m * interval
        seg_end = np.minimum(seg_start + interval, trace.end[rep])
        user[pos], start[pos], end[pos] = trace.user[rep], seg_start, seg_end
        complete[pos] = trace.complete[rep]
        rekey[pos] = trace.rekey[rep] | (m > 0)
        last = m == k[rep - c0] - 1
        d = np.maximum(trace.end[rep] - s0, 1).astype(np.float64)
        frac_lo = np.minimum((seg_start - s0) / d, 1.0)
        frac_hi = np.minimum((seg_end - s0) / d, 1.0)
        for o, c in zip(outs, cols, strict=True):
            tot = c[rep]
            # float shares, capped below 2**62 before the cast (an int64 cast of 2**63
            # wraps); segment m's upper bound is segment m+1's lower bound: they telescope
            lo = np.minimum(np.minimum(np.floor(tot * frac_lo), 2.0**62).astype(np.int64), tot)
            hi_f = np.minimum(np.floor(tot * frac_hi), 2.0**62).astype(np.int64)
            hi = np.where(last, tot, np.minimum(hi_f, tot))
            o[pos] = np.maximum(hi - lo, 0)
    if not both_directions:
        out = Trace(user, start, end, outs[0], np.broadcast_to(np.int64(0), (total,)),
                    trace.user_names, complete, rekey)
        out._cache["nbytes"] = outs[0]
        return out
    return Trace(user, start, end, outs[0], outs[1], trace.user_names, complete, rekey)
