"""Events the protocol core hands to the application (h11 style: immutable, plain data).

The core never touches the store, the kernel or the clock; it *asks* (``CredentialNeeded``,
``CommitNeeded``, ``SaveSuccessor``) and *reports* (``ResumptionComplete``,
``FallbackToFullIKE``, ``ResumptionFailed``).  Responder requests carry an integer token that
the application passes back with its answer (``Responder.provide_credential`` /
``Responder.commit_result``); the initiator has one request at a time and is answered with
``Initiator.successor_saved`` / ``Initiator.successor_save_failed``.
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
    (compare-and-set) and answer ``commit_result(token, ok)``.  Only ``ok=True`` completes.

    ``sa`` is the SA pair the completion will report: an application that installs SAs
    commits it with the ratchet (an install outbox, spec 6.2.1), so that a crash between
    the commit and the install cannot leave the peers with SAs on one side only.  (None
    only from an engine that does not provide it; the reference core always does.)
    """

    token: int
    handle: bytes
    generation: int
    successor: Credential = field(repr=False)
    #: not part of equality: the native engine does not report it yet (resume/native.py)
    sa: SAPair | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class SaveSuccessor(Event):
    """Initiator: store ``successor`` durably as the current credential, keeping
    (``handle``, ``generation``) -- the credential this attempt used -- as the previous one,
    then call ``successor_saved(now)``; or ``successor_save_failed(now)`` if it could not be
    stored.

    Message 3 is not sent before ``successor_saved``: once it is sent the responder may
    move to the successor's generation, and a client that crashed before storing it would
    hold only a generation the responder has moved past (spec 6.1 step 5, 9.2).  ``sa`` is
    the SA pair the completion will report (an embedder may install it while the write is
    in flight; it must not rely on it before ``ResumptionComplete``).
    """

    handle: bytes
    generation: int
    successor: Credential = field(repr=False)
    sa: SAPair = field(repr=False)


@dataclass(frozen=True, slots=True)
class ResumptionComplete(Event):
    """Either side: install ``sa``; the resumption is done.

    ``handle``/``generation`` name the credential that was consumed and ``successor`` the
    credential for next time.  The responder reports it once its commit is durable.  The
    initiator reports it after the application stored ``successor`` (``SaveSuccessor``)
    and message 3 was sent: there is nothing left to store.  (The initiator's cache keeps
    the consumed credential too until the responder is known to have committed -- spec
    9.2, lost message 3; ``Initiator(previous=...)`` uses it once after a NACK.)  ``ke``
    names the key exchanges mixed into the run (:data:`KE_MODES`), for metrics and logs;
    the successor's ``lineage`` already says what they did to the chain.
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
    unauthenticated hint, never trusted for anything else), "timeout", "save_failed" (the
    application could not store the successor; message 3 was never sent, so the credential
    used is still valid at the responder), or "pq_refused" (an initiator that requires
    ML-KEM got a message 2 without it: an authenticated refusal, MAC_2 covers both
    messages' key exchange payloads)."""

    reason: Literal["nack", "timeout", "save_failed", "pq_refused"]


@dataclass(frozen=True, slots=True)
class ResumptionFailed(Event):
    """Responder, local only (metrics; never on the wire): why a well-formed attempt was
    refused.  The peer saw the same NACK whatever ``reason`` says."""

    reason: str
    handle: bytes | None
    addr: Address
