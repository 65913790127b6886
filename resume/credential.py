"""The cached credential: what both peers keep after a session so that they can resume.

It is produced by a full IKE (harvested from the daemon, see ``ikeshim.harvest``) or by a
successful resumption (the ratchet successor), kept by the store (secret wrapped at rest)
and handed to the protocol core by the application when the core asks for it.

In hardened mode ``secret`` is a *resumption secret*: it never keys ESP directly; MAC keys,
the successor secret, the next handle and the new SA keys are all derived from it (see
``resume.keyschedule`` and ``specs/``).  In paper mode (the 2007 proposal, insecure for ESP
key reuse, refused unless explicitly enabled) ``paper_keys`` holds the previous connection's
ESP keys verbatim.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from resume.sa import DirectionKeys, SAParams


class ProtocolMode(enum.Enum):
    HARDENED = "hardened"
    PAPER = "paper"


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

    def __post_init__(self) -> None:
        if self.mode is ProtocolMode.PAPER and self.paper_keys is None:
            raise ValueError("a paper-mode credential carries the previous ESP keys")
        if self.generation < 0:
            raise ValueError("generation is non-negative")
