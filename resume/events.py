"""Events the protocol core hands to the application (h11 style: immutable, plain data).

The core never touches the store, the kernel or the clock; it *asks* (``CredentialNeeded``,
``CommitNeeded``) and *reports* (``ResumptionComplete``, ``FallbackToFullIKE``,
``ResumptionFailed``).  Requests carry an integer token that the application passes back
with its answer (``Responder.provide_credential`` / ``Responder.commit_result``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from resume.credential import Credential
from resume.sa import SAPair

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Event:
    """Base class of every event."""


@dataclass(frozen=True, slots=True)
class CredentialNeeded(Event):
    """Responder: look ``handle`` up and answer ``provide_credential(token, ...)``.

    Emitted for message 1 and again for message 3 (the responder keeps nothing in between).
    Answer ``None`` for unknown, refused by policy or store unreachable: all three produce the
    same NACK on the wire.
    """

    token: int
    handle: bytes
    addr: Address


@dataclass(frozen=True, slots=True)
class CommitNeeded(Event):
    """Responder: atomically replace generation ``generation`` of ``handle`` by ``successor``
    (compare-and-set) and answer ``commit_result(token, ok)``.  Only ``ok=True`` completes."""

    token: int
    handle: bytes
    generation: int
    successor: Credential = field(repr=False)


@dataclass(frozen=True, slots=True)
class ResumptionComplete(Event):
    """Either side: install ``sa`` and store ``successor`` (the credential for next time).

    ``handle``/``generation`` name the credential that was consumed.  On the initiator, keep
    that credential too until the responder is known to have committed (see specs: lost
    message 3); ``Initiator(previous=...)`` uses it once after a NACK.
    """

    sa: SAPair = field(repr=False)
    handle: bytes
    generation: int
    successor: Credential = field(repr=False)
    addr: Address


@dataclass(frozen=True, slots=True)
class FallbackToFullIKE(Event):
    """Initiator: resumption will not happen; run a full IKE.  ``reason`` is "nack" (an
    unauthenticated hint, never trusted for anything else) or "timeout"."""

    reason: Literal["nack", "timeout"]


@dataclass(frozen=True, slots=True)
class ResumptionFailed(Event):
    """Responder, local only (metrics; never on the wire): why a well-formed attempt was
    refused.  The peer saw the same NACK whatever ``reason`` says."""

    reason: str
    handle: bytes | None
    addr: Address
