"""What became of every line of every input file: the per-file input account.

An operator who replays a log must be able to tell a wrong format from an empty log, and
a log we misread from one we read fully.  Each file gets a :class:`FileAccount`: lines
read, lines used (they gave an accounting event or a session row), lines skipped by
reason (firewall messages, login steps, status-file structure, blank lines...) and
problem lines by reason, so that ``read = used + skipped + problems`` holds exactly
(``unexplained`` is tested to be zero on every vendor sample and under fuzzing).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

_DETAIL = re.compile(r"'[^']{0,200}'|\"[^\"]{0,200}\"|\d+")


def reason_class(reason: str) -> str:
    """A problem's reason without its particulars (quoted text, numbers), for counting."""
    return _DETAIL.sub("_", reason)[:100]


@dataclass
class FileAccount:
    """Line account of one input file (see the module docstring)."""

    path: str
    formats: list[str] = field(default_factory=list)
    lines: int = 0
    used: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    sessions: int = 0
    incomplete: int = 0
    notes: Counter[str] = field(default_factory=Counter)
    expected: dict[str, str] = field(default_factory=dict)

    def use(self, n: int = 1) -> None:
        self.used += n

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] += n

    def problem(self, reason: str, n: int = 1) -> None:
        self.problems[reason_class(reason)] += n

    def note(self, what: str, n: int = 1) -> None:
        """Facts that are neither lines nor sessions (Child SA rekeys, merged repeats)."""
        self.notes[what] += n

    @property
    def unexplained(self) -> int:
        return self.lines - self.used - sum(self.skipped.values()) - sum(self.problems.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "formats": self.formats, "lines": self.lines, "used": self.used,
            "skipped": dict(self.skipped.most_common()),
            "problems": dict(self.problems.most_common()),
            "unexplained": self.unexplained, "sessions": self.sessions,
            "incomplete": self.incomplete, "notes": dict(self.notes),
            "expected": self.expected,
        }
