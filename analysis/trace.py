"""A columnar trace: sessions as numpy arrays, the form every replay works on.

Parsers produce :class:`Session` objects one by one; replays want arrays.  A trace keeps
users as small integers (``user_names[user[i]]``), times as float64 POSIX seconds and byte
counts as int64, in any order; :meth:`Trace.user_order` gives the order the replay uses
(by user, then start, then input position: deterministic for ties).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from analysis.session import Session

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
B = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Trace:
    user: I32
    start: F64
    end: F64
    bytes_in: I64
    bytes_out: I64
    user_names: tuple[str, ...]
    complete: B
    rekey: B  # True for segments created by :func:`split_rekeys` (not a new connection)

    def __post_init__(self) -> None:
        n = len(self.user)
        for name in ("start", "end", "bytes_in", "bytes_out", "complete", "rekey"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"trace column {name} has the wrong length")
        if n and (self.end < self.start).any():
            raise ValueError("a session ends before it starts")

    def __len__(self) -> int:
        return len(self.user)

    @property
    def nbytes(self) -> I64:
        return self.bytes_in + self.bytes_out

    @property
    def duration(self) -> F64:
        return self.end - self.start

    @property
    def n_users(self) -> int:
        return len(self.user_names)

    @property
    def connections(self) -> int:
        return int((~self.rekey).sum())

    def user_order(self) -> npt.NDArray[np.intp]:
        idx = np.arange(len(self), dtype=np.int64)
        return np.lexsort((idx, self.start, self.user))

    def time_order(self) -> npt.NDArray[np.intp]:
        idx = np.arange(len(self), dtype=np.int64)
        return np.lexsort((idx, self.user, self.start))

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
    ) -> Trace:
        u = np.asarray(user, dtype=np.int32)
        names = tuple(user_names) if user_names is not None else tuple(
            str(i) for i in range(int(u.max()) + 1 if len(u) else 0)
        )
        n = len(u)
        return cls(
            u, np.asarray(start, dtype=np.float64), np.asarray(end, dtype=np.float64),
            np.asarray(bytes_in, dtype=np.int64), np.asarray(bytes_out, dtype=np.int64),
            names, np.ones(n, dtype=bool), np.zeros(n, dtype=bool),
        )

    @staticmethod
    def concat(parts: list[Trace]) -> Trace:
        """One trace from several (users matched by name)."""
        return _concat(parts)

    @classmethod
    def from_sessions(cls, sessions: Iterable[Session]) -> Trace:
        ids: dict[str, int] = {}
        user: list[int] = []
        start: list[float] = []
        end: list[float] = []
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
            np.asarray(user, dtype=np.int32), np.asarray(start, dtype=np.float64),
            np.asarray(end, dtype=np.float64), np.asarray(b_in, dtype=np.int64),
            np.asarray(b_out, dtype=np.int64), tuple(ids), np.asarray(complete, dtype=bool),
            np.zeros(n, dtype=bool),
        )


def _concat(parts: list[Trace]) -> Trace:
    names: dict[str, int] = {}
    cols: list[list[npt.NDArray[Any]]] = [[] for _ in range(7)]
    for p in parts:
        remap = np.array([names.setdefault(n, len(names)) for n in p.user_names], dtype=np.int32)
        cols[0].append(remap[p.user] if len(p) else p.user)
        for i, name in enumerate(("start", "end", "bytes_in", "bytes_out", "complete", "rekey")):
            cols[i + 1].append(getattr(p, name))
    if not parts:
        return Trace.from_columns([], [], [], [], [])
    u, s, e, bi, bo, c, r = (np.concatenate(x) for x in cols)
    return Trace(u.astype(np.int32), s, e, bi, bo, tuple(names), c.astype(bool), r.astype(bool))


def split_rekeys(trace: Trace, interval: float) -> Trace:
    """Cut sessions longer than ``interval`` into segments, one per IKE rekey.

    A gateway rekeys a long session every ``interval`` seconds; without a cache each rekey
    is another full exchange, with one it can be a resumption judged by the policy like a
    reconnection.  Bytes are spread over segments in proportion to time (integer parts
    that add up exactly to the session's count).
    """
    if interval <= 0:
        raise ValueError("rekey interval must be positive")
    dur = trace.duration
    nseg = np.maximum(1, np.ceil(dur / interval).astype(np.int64))
    nseg[dur == 0] = 1
    rep = np.repeat(np.arange(len(trace)), nseg)
    first = np.cumsum(nseg) - nseg
    m = np.arange(len(rep)) - np.repeat(first, nseg)  # segment number within its session
    s0 = trace.start[rep]
    seg_start = s0 + m * interval
    seg_end = np.minimum(s0 + (m + 1) * interval, trace.end[rep])
    seg_end = np.maximum(seg_end, seg_start)

    def spread(total: I64) -> I64:
        tot = total[rep].astype(np.float64)
        d = np.where(dur[rep] > 0, dur[rep], 1.0)
        frac_hi = np.minimum((seg_end - s0) / d, 1.0)
        frac_lo = np.minimum((seg_start - s0) / d, 1.0)
        last = m == nseg[rep] - 1
        hi = np.where(last, total[rep], np.floor(tot * frac_hi).astype(np.int64))
        lo = np.floor(tot * frac_lo).astype(np.int64)
        out: I64 = (hi - lo).astype(np.int64)
        return out

    return Trace(
        trace.user[rep], seg_start, seg_end, spread(trace.bytes_in), spread(trace.bytes_out),
        trace.user_names, trace.complete[rep], trace.rekey[rep] | (m > 0),
    )
