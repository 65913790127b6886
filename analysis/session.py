"""Session records and parse problems: the common currency between parsers and the replay.

A :class:`Session` is one VPN connection of one user, whatever the log it came from.  The
replay only needs who, when and how much; everything else a log carries stays in the log.
Times are integer POSIX microseconds (see :mod:`analysis.timeparse`), byte counts integers.
``complete`` is False when the log did not show both ends (a start without a stop, a stop
without a start or duration, a snapshot of a live session): the report counts these so an
operator can see how much of the replay rests on guessed durations.

Errors: a log reader reports an unusable line as an :class:`Issue` (``file:line: reason``)
and goes on.  Inside a parser, every helper that reads a field of untrusted text raises
only :class:`LineError` (the one documented error type of the log readers); the parser's
per-line loop turns it into an :class:`Issue`.  :class:`LogParseError` is what a caller
sees: in ``--strict`` mode at the first issue, or for an input that cannot be opened.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_BYTES = 2**63 - 1  # traces hold byte counts as int64 (9.2 EB: larger is a broken log)


class LineError(ValueError):
    """A field of one log line is unusable; ``str(e)`` says which and why."""


@dataclass(frozen=True, slots=True)
class Session:
    """One connection: POSIX microseconds, bytes as the device names the directions."""

    user: str
    start: int
    end: int
    bytes_in: int = 0
    bytes_out: int = 0
    source: str = ""
    session_id: str = ""
    complete: bool = True

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise LineError(f"session ends before it starts ({self.source})")
        if self.bytes_in < 0 or self.bytes_out < 0:
            raise LineError(f"negative byte count ({self.source})")
        if self.bytes_in > MAX_BYTES or self.bytes_out > MAX_BYTES:
            raise LineError(f"byte count over 2**63-1 ({self.source})")

    @property
    def duration(self) -> int:
        return self.end - self.start

    @property
    def nbytes(self) -> int:
        return self.bytes_in + self.bytes_out


@dataclass(frozen=True, slots=True)
class Issue:
    """A log line we could not use, with where and why (reported, never silently lost).

    ``foreign``: the line is not of the parser's format at all (another format's line, or
    junk); the reader offers such lines to format detection again before reporting them.
    ``lines``: input lines the problem covers (a multi-line record; 0 for a problem found
    when pairing records into sessions, whose lines were already counted as used).
    """

    source: str
    reason: str
    foreign: bool = False
    lines: int = 1

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


class LogParseError(ValueError):
    """Raised in ``--strict`` mode on the first unusable line, or for an unreadable input."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(str(issue))
        self.issue = issue
