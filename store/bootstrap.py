"""Provisioning without a daemon: generation 0 of a credential from an SA description.

``ikeresume harvest`` reads a CHILD_SA from strongSwan and the kernel; this is the same
step for everyone else (an IKE daemon embedding the library, libreswan, a gateway that can
export its SAs): the caller describes the negotiated CHILD_SA (``specs/sa-description.md``)
and each peer bootstraps its own cache from that description.  The derivation is
``resume.keyschedule.bootstrap_credential`` -- the one harvest uses -- so a bootstrapped
record equals a harvested one for the same SA, byte for byte.

A service-layer module although it lives in ``store/`` (see ``ARCHITECTURE.md``): it joins
the protocol's key schedule and the store, which the core layer keeps apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from resume.credential import Credential, Lineage
from resume.keyschedule import bootstrap_credential
from store.repository import Store
from store.sa_description import SADescription, parse_sa_description

Role = Literal["initiator", "responder"]
ROLES: tuple[Role, ...] = ("initiator", "responder")


@dataclass(frozen=True)
class BootstrapResult:
    """What was written (no secret): the record's uid, role, handle and lineage."""

    uid: str
    role: Role
    handle: bytes
    generation: int
    lineage: str

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "role": self.role,
            "handle": self.handle.hex(),
            "generation": self.generation,
            "lineage": self.lineage,
        }


def credential_from(desc: SADescription) -> Credential:
    """Generation 0 exactly as ``specs/protocol.md`` 3.1 derives it (hardened mode), with
    the description's lineage."""
    cred = bootstrap_credential(desc.params, desc.i_to_r, desc.r_to_i, desc.id_i, desc.id_r)
    return dataclasses.replace(cred, lineage=Lineage(desc.lineage))


def bootstrap(
    store: Store, role: Role, description: SADescription | bytes | str, now: float
) -> BootstrapResult:
    """Write generation 0 for ``role`` from an SA description (parsed or raw JSON).

    Raises :class:`~store.errors.SADescriptionError` for a bad description (before anything
    is written) and the store's errors for the write; the write is the one transaction of
    :meth:`Store.upsert_full_ike`, which also replaces an earlier chain between the same
    identities, as a new full IKE does.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    desc = (
        description
        if isinstance(description, SADescription)
        else (parse_sa_description(description))
    )
    cred = credential_from(desc)
    uid = store.upsert_full_ike(role, cred, now)
    return BootstrapResult(uid, role, cred.handle, cred.generation, desc.lineage)
