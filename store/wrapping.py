"""Secrets at rest: wrapped for their row, unwrapped and authenticated back.

A credential's secret: each ciphertext's AAD (:func:`store.keys.record_aad`) binds it to the
row's role, mode, handle and generation and to a digest of the identities and SA parameters
(:func:`store.keys.record_binding`), so a secret moved to another row, or a row whose
trusted fields were edited, does not decrypt.  An install-outbox row's ESP keys the same
way: AAD ``record_aad("install", "responder", "esp", handle, generation, B)`` with ``B`` the
digest of the row's SA description and hard expiry (:func:`store.keys.install_binding`).
Split from the repository so that the SQL there and the cryptography here can each be read
alone.
"""

from __future__ import annotations

from resume.credential import Credential, Lineage, PaperKeys, ProtocolMode
from store.codec import paper_keys_bytes, paper_keys_from_bytes, parse_params
from store.errors import CorruptRecord
from store.keys import Keyring, install_binding, record_aad, record_binding

_MODES = {m.value: m for m in ProtocolMode}
_LINEAGES = {lin.value: lin for lin in Lineage}


def wrap_credential(
    kr: Keyring, role: str, c: Credential, ptext: str, nonce: bytes | None = None
) -> tuple[str, bytes, bytes | None]:
    """(key id, wrapped secret, wrapped paper keys or None) for ``c``'s row.

    ``nonce``: the secret's AEAD nonce when a batch drew its nonces at once (fresh random
    bytes, never reused); None draws one.
    """
    binding = record_binding(c.id_i, c.id_r, ptext)
    mode = c.mode.value
    kid, wrapped = kr.wrap(
        c.secret, record_aad(b"secret", role, mode, c.handle, c.generation, binding), nonce
    )
    paper = None
    if c.paper_keys is not None:
        _, paper = kr.wrap(
            paper_keys_bytes(c.paper_keys),
            record_aad(b"paper", role, mode, c.handle, c.generation, binding),
        )
    return kid, wrapped, paper


def unwrap_credential(
    kr: Keyring,
    uid: str,
    role: str,
    mode_s: str,
    handle: bytes,
    generation: int,
    key_id: str,
    wrapped: bytes,
    paper_wrapped: bytes | None,
    id_i: bytes,
    id_r: bytes,
    ptext: str,
    lineage_s: str = "unknown",
) -> Credential:
    """Decode and authenticate one generation of a row; CorruptRecord/MasterKeyError.

    ``lineage_s`` is the row's lineage column (not under the AAD, like the policy
    counters); a value that is not a lineage is a corrupt row, never read as PQ.

    The success path builds no message strings (it runs once or twice per resumption);
    a failed decrypt is redone by :meth:`Keyring.unwrap` for its typed error.
    """
    try:
        mode = _MODES[mode_s]
        lineage = _LINEAGES[lineage_s]
        params = parse_params(ptext)
        binding = record_binding(id_i, id_r, ptext)
        aad = record_aad(b"secret", role, mode_s, handle, generation, binding)
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError) as e:
        what = f"record {uid} ({role}, generation {generation!r})"
        raise CorruptRecord(f"{what}: undecodable mode/lineage/SA parameters: {e!r}") from None
    secret = kr.try_unwrap(key_id, wrapped, aad)
    if secret is None:
        what = f"record {uid} ({role}, generation {generation})"
        secret = kr.unwrap(key_id, wrapped, aad, what=f"secret of {what}")
    paper: PaperKeys | None = None
    if paper_wrapped is not None:
        what = f"record {uid} ({role}, generation {generation})"
        raw = kr.unwrap(
            key_id,
            paper_wrapped,
            record_aad(b"paper", role, mode_s, handle, generation, binding),
            what=f"paper keys of {what}",
        )
        try:
            paper = paper_keys_from_bytes(raw)
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptRecord(f"{what}: undecodable paper keys: {e}") from None
    try:
        return Credential(mode, handle, generation, secret, id_i, id_r, params, paper, lineage)
    except (ValueError, TypeError) as e:
        raise CorruptRecord(f"record {uid} ({role}, generation {generation}): {e}") from None


def _install_aad(handle: bytes, generation: int, sa_text: str, expires_at: float | None) -> bytes:
    binding = install_binding(sa_text, expires_at)
    return record_aad(b"install", "responder", "esp", handle, generation, binding)


def wrap_install(
    kr: Keyring,
    handle: bytes,
    generation: int,
    sa_text: str,
    expires_at: float | None,
    keys: bytes,
    nonce: bytes | None = None,
) -> tuple[str, bytes]:
    """(key id, wrapped keys) for an install-outbox row (see :mod:`store.tables`)."""
    return kr.wrap(keys, _install_aad(handle, generation, sa_text, expires_at), nonce)


def unwrap_install(
    kr: Keyring,
    uid: str,
    handle: bytes,
    generation: int,
    sa_text: str,
    expires_at: float | None,
    key_id: str,
    wrapped: bytes,
) -> bytes:
    """The keys blob of an install-outbox row; CorruptRecord/MasterKeyError."""
    aad = _install_aad(handle, generation, sa_text, expires_at)
    return kr.unwrap(key_id, wrapped, aad, what=f"install outbox row {uid}")
