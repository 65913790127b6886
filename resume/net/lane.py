"""A lane: one listening socket, the responder that answers on it, and its inbox.

Why the inbox: answers to the core arrive from other threads (the group-commit thread, a
lookup worker thread).  Each would otherwise cost a trio-token callback and a wake-up of
the event loop; the inbox collects them and wakes the lane's service task once per burst
(one ``run_sync_soon`` however many commits a durable transaction answers).
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import trio

from resume.net.udp import UdpEndpoint
from resume.responder import Responder


@dataclass
class Lane:
    """One socket and the responder that answers on it (replies leave where requests came)."""

    endpoint: UdpEndpoint
    responder: Responder
    name: str
    token: trio.lowlevel.TrioToken
    wake: trio.Event = field(default_factory=trio.Event)
    #: completions posted from any thread, applied by the lane's service task
    inbox: deque[tuple[Any, ...]] = field(default_factory=deque)
    #: handle -> when its last allowed lookup was answered (message 3 -> commit latency)
    started: dict[bytes, float] = field(default_factory=dict)
    outstanding_commits: int = 0
    _wake_scheduled: bool = False

    def post(self, item: tuple[Any, ...]) -> None:
        """Queue a completion; callable from any thread.  Wakes the service task once.

        Safe without a lock: ``deque.append`` is atomic, and :meth:`_wake` clears the flag
        before the service task drains the inbox, so an item appended after the drain sees
        the flag clear and schedules another wake.
        """
        self.inbox.append(item)
        if not self._wake_scheduled:
            self._wake_scheduled = True
            with contextlib.suppress(trio.RunFinishedError):
                self.token.run_sync_soon(self._wake)

    def _wake(self) -> None:
        self._wake_scheduled = False
        self.wake.set()

    def kick(self) -> None:
        """Wake the service task from the trio thread (timers, new work)."""
        self.wake.set()
