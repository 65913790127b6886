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

#: The key exchanges a resumption mixed in, as ``ResumptionComplete.ke`` names them.
KE_MODES = ("none", "x25519", "mlkem768", "x25519+mlkem768")


def ke_mode(x25519: bool, mlkem: bool) -> str:
    return KE_MODES[int(x25519) + 2 * int(mlkem)]


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
    message 3); ``Initiator(previous=...)`` uses it once after a NACK.  ``ke`` names the
    key exchanges mixed into the run (:data:`KE_MODES`), for metrics and logs; the
    successor's ``lineage`` already says what they did to the chain.
    """

    sa: SAPair = field(repr=False)
    handle: bytes
    generation: int
    successor: Credential = field(repr=False)
    addr: Address
    ke: str = "none"


@dataclass(frozen=True, slots=True)
class FallbackToFullIKE(Event):
    """Initiator: resumption will not happen; run a full IKE.  ``reason`` is "nack" (an
    unauthenticated hint, never trusted for anything else), "timeout", or "pq_refused" (an
    initiator that requires ML-KEM got a message 2 without it: an authenticated refusal,
    MAC_2 covers both messages' key exchange payloads)."""

    reason: Literal["nack", "timeout", "pq_refused"]


@dataclass(frozen=True, slots=True)
class ResumptionFailed(Event):
    """Responder, local only (metrics; never on the wire): why a well-formed attempt was
    refused.  The peer saw the same NACK whatever ``reason`` says."""

    reason: str
    handle: bytes | None
    addr: Address
