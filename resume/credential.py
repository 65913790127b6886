"""The cached credential: what both peers keep after a session so that they can resume.

It is produced by a full IKE (harvested from the daemon, see ``ikeshim.harvest``) or by a
successful resumption (the ratchet successor), kept by the store (secret wrapped at rest)
and handed to the protocol core by the application when the core asks for it.

In hardened mode ``secret`` is a *resumption secret*: it never keys ESP directly; MAC keys,
the successor secret, the next handle and the new SA keys are all derived from it (see
``resume.keyschedule`` and ``specs/``).  In paper mode (the 2007 proposal, insecure for ESP
key reuse, refused unless explicitly enabled) ``paper_keys`` holds the previous connection's
ESP keys verbatim.

``lineage`` records how the secret chain began and what the resumptions since added
(specs/protocol.md section 12.3): it is what a ``require_pq_lineage`` policy judges, never
an input of the key schedule.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from resume.sa import DirectionKeys, SAParams


class ProtocolMode(enum.Enum):
    HARDENED = "hardened"
    PAPER = "paper"


class Lineage(enum.Enum):
    """How a credential's secret chain began, and what its resumptions added.

    Set at generation 0 from what the full IKE negotiated (harvest from the daemon, the SA
    description of ``cache bootstrap``, an import), never guessed: a chain whose origin is
    not known is ``UNKNOWN``.  :meth:`after_run` is the one rule that moves it.
    """

    #: A full IKE with only (EC)DH key exchanges: a quantum attacker who recorded it can
    #: derive S_0 and every later secret of a chain no ML-KEM run has touched.
    CLASSICAL = "classical"
    #: ML-KEM (alone or as an RFC 9370 additional key exchange) in the full IKE.
    HYBRID_PQ = "hybrid-pq"
    #: A postquantum preshared key (RFC 8784 / RFC 9867) mixed into the full IKE.
    PPK = "ppk"
    #: A classical or unknown chain into which a resumption mixed an ML-KEM secret: PQ
    #: against a recorder that only watched that run, NOT against an active attacker who
    #: already held the secret then (spec 12.3).
    PQ_RESUMED = "pq-resumed"
    #: Nothing reliable is known about the origin (rows written before lineage existed,
    #: a daemon that did not report its key exchange methods).
    UNKNOWN = "unknown"

    @property
    def is_pq(self) -> bool:
        """True for the chains a ``require_pq_lineage`` policy accepts."""
        return self in _PQ_LINEAGES

    def after_run(self, mlkem: bool) -> Lineage:
        """The successor's lineage: a symmetric ratchet keeps it; a run that mixed an
        ML-KEM shared secret turns a chain that was not PQ into ``PQ_RESUMED``."""
        if mlkem and not self.is_pq:
            return Lineage.PQ_RESUMED
        return self


_PQ_LINEAGES = frozenset({Lineage.HYBRID_PQ, Lineage.PPK, Lineage.PQ_RESUMED})
#: The lineages a chain can have at generation 0 (``pq-resumed`` only comes from a run).
ORIGIN_LINEAGES = (Lineage.CLASSICAL, Lineage.HYBRID_PQ, Lineage.PPK, Lineage.UNKNOWN)


@dataclass(frozen=True)
class PaperKeys:
    """Paper mode: the previous CHILD_SA's keys, reused as-is (the reason it is insecure)."""

    i_to_r: DirectionKeys
    r_to_i: DirectionKeys


@dataclass(frozen=True)
class Credential:
    """One generation of a cached resumption credential.

    ``handle`` is the opaque, rotating lookup key the initiator sends in message 1;
    it is derived from the secret, so it changes with every generation (no linkability).
    ``id_i``/``id_r`` are the IKE identities (RFC 7296 ID payload bodies: type byte + data).
    """

    mode: ProtocolMode
    handle: bytes
    generation: int
    secret: bytes = field(repr=False)
    id_i: bytes
    id_r: bytes
    params: SAParams
    paper_keys: PaperKeys | None = field(default=None, repr=False)
    lineage: Lineage = Lineage.UNKNOWN

    def __post_init__(self) -> None:
        if self.mode is ProtocolMode.PAPER and self.paper_keys is None:
            raise ValueError("a paper-mode credential carries the previous ESP keys")
        if self.generation < 0:
            raise ValueError("generation is non-negative")
