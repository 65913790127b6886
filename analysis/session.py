"""Session records and parse problems: the common currency between parsers and the replay.

A :class:`Session` is one VPN connection of one user, whatever the log it came from.  The
replay only needs who, when and how much; everything else a log carries stays in the log.
``complete`` is False when the log did not show both ends (a start without a stop, a stop
without a start or duration, a snapshot of a live session): the report counts these so an
operator can see how much of the replay rests on guessed durations.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_BYTES = 2**63 - 1  # traces hold byte counts as int64 (9.2 EB: larger is a broken log)


@dataclass(frozen=True, slots=True)
class Session:
    """One connection: POSIX seconds, bytes as the device names the directions."""

    user: str
    start: float
    end: float
    bytes_in: int = 0
    bytes_out: int = 0
    source: str = ""
    session_id: str = ""
    complete: bool = True

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"session ends before it starts ({self.source})")
        if self.bytes_in < 0 or self.bytes_out < 0:
            raise ValueError(f"negative byte count ({self.source})")
        if self.bytes_in > MAX_BYTES or self.bytes_out > MAX_BYTES:
            raise ValueError(f"byte count over 2**63 ({self.source})")

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def nbytes(self) -> int:
        return self.bytes_in + self.bytes_out


@dataclass(frozen=True, slots=True)
class Issue:
    """A log line we could not use, with where and why (reported, never silently lost)."""

    source: str
    reason: str

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


class LogParseError(ValueError):
    """Raised in ``--strict`` mode on the first unusable line, or for an unreadable input."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(str(issue))
        self.issue = issue
