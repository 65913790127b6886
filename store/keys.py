"""Encryption at rest: master keys and AES-GCM wrapping of resumption secrets.

A database dump must reveal no secret, so every secret column holds
``nonce || AES-256-GCM(master key, secret, aad)`` and the row records which key id wrapped
it (rotation rewraps rows online, row by row).  The AAD binds the ciphertext to what the
row *means* -- role, protocol mode, handle, generation and a digest of the identities and
SA parameters -- so moving a ciphertext to another row or generation, or editing a row's
identities or traffic selectors, makes the unwrap fail instead of granting a resumption
to the wrong peer.  (A database *writer* can still roll a row back to an older copy of
itself; that is denial of service/replay by an insider and is outside what encryption can
stop -- see specs/threat model.)

Key text format (file, or the ``IKERESUME_MASTER_KEY`` variable): one key per line (or
comma separated), the first is the current wrapping key, the others are only used to
unwrap during a rotation::

    [key-id:]<32 bytes as 64 hex digits or base64>

Without an explicit id the id is derived from the key by a one-way hash, so a wrong key is
reported as "unknown key id" rather than as a pile of authentication failures.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from resume.memo import Memo
from store.errors import CorruptRecord, MasterKeyError

ENV_KEY = "IKERESUME_MASTER_KEY"
ENV_KEY_FILE = "IKERESUME_MASTER_KEY_FILE"

KEY_LEN = 32
AEAD_NONCE_LEN = 12
_TAG_LEN = 16
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_AAD_PREFIX = b"ikeresume-store/v1\x00"
_CHECK_PLAINTEXT = b"ikeresume master key check v1"


def derive_key_id(key: bytes) -> str:
    """A public name for a key: one-way, so publishing it reveals nothing."""
    return "k" + hashlib.sha256(b"ikeresume master key id\x00" + key).hexdigest()[:12]


@dataclass(frozen=True)
class MasterKey:
    key_id: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != KEY_LEN:
            raise MasterKeyError(f"master key {self.key_id!r} must be {KEY_LEN} bytes")
        if not _KEY_ID_RE.match(self.key_id):
            raise MasterKeyError(f"bad master key id {self.key_id!r} (use [A-Za-z0-9_.-])")

    @classmethod
    def generate(cls, key_id: str | None = None) -> MasterKey:
        key = os.urandom(KEY_LEN)
        return cls(key_id or derive_key_id(key), key)

    @classmethod
    def parse(cls, text: str) -> MasterKey:
        """Parse ``[id:]key``; the key is 64 hex digits or base64 of 32 bytes."""
        text = text.strip()
        key_id: str | None = None
        if ":" in text:
            key_id, text = (s.strip() for s in text.split(":", 1))
        key: bytes | None = None
        if re.fullmatch(r"[0-9a-fA-F]{64}", text):
            key = bytes.fromhex(text)
        else:
            try:
                key = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                key = None
        if key is None or len(key) != KEY_LEN:
            raise MasterKeyError(
                "master key must be 32 bytes written as 64 hex digits or base64"
                + (f" (key id {key_id!r})" if key_id else "")
            )
        return cls(key_id or derive_key_id(key), key)

    def to_line(self) -> str:
        return f"{self.key_id}:{base64.b64encode(self.key).decode()}"


#: a handful of (purpose, role, mode) triples in practice
_AAD_HEADS: Memo[tuple[bytes, str, str], bytes] = Memo(64)


def record_aad(
    purpose: bytes, role: str, mode: str, handle: bytes, generation: int, binding: bytes
) -> bytes:
    """AAD of one wrapped field: what the ciphertext is only valid for."""
    head = _AAD_HEADS.get((purpose, role, mode))
    if head is None:
        head = _AAD_HEADS.put(
            (purpose, role, mode),
            b"".join(
                (_AAD_PREFIX, purpose, b"\x00", role.encode(), b"\x00", mode.encode(), b"\x00")
            ),
        )
    return b"".join(
        (head, len(handle).to_bytes(2, "big"), handle, generation.to_bytes(8, "big"), binding)
    )


#: as many entries as active peers
_BINDINGS: Memo[tuple[bytes, bytes, str], bytes] = Memo(65536)


def record_binding(id_i: bytes, id_r: bytes, params_text: str) -> bytes:
    """Digest of the fields a resumption trusts (identities, SA parameters) for the AAD.

    Memoized: it is computed on every lookup and commit, for few distinct peers.
    """
    key = (id_i, id_r, params_text)
    hit = _BINDINGS.get(key)
    if hit is not None:
        return hit
    return _BINDINGS.put(key, _binding(id_i, id_r, params_text))


def _binding(id_i: bytes, id_r: bytes, params_text: str) -> bytes:
    h = hashlib.sha256(b"ikeresume-store binding v1\x00")
    h.update(len(id_i).to_bytes(4, "big"))
    h.update(id_i)
    h.update(len(id_r).to_bytes(4, "big"))
    h.update(id_r)
    h.update(params_text.encode())
    return h.digest()


def install_binding(sa_text: str, expires_at: float | None) -> bytes:
    """Digest of an install-outbox row's public fields (SA description, hard expiry) for
    the AAD of its wrapped keys: editing either makes the unwrap fail."""
    h = hashlib.sha256(b"ikeresume-store install v1\x00")
    raw = sa_text.encode()
    h.update(len(raw).to_bytes(4, "big"))
    h.update(raw)
    if expires_at is not None:
        h.update(struct.pack(">d", expires_at))
    return h.digest()


class Keyring:
    """The current wrapping key plus older keys kept only to unwrap until rotation ends."""

    def __init__(self, keys: Iterable[MasterKey]) -> None:
        self._keys = list(keys)
        if not self._keys:
            raise MasterKeyError("no master key configured")
        self._by_id: dict[str, AESGCM] = {}
        for k in self._keys:
            if k.key_id in self._by_id:
                raise MasterKeyError(f"master key id {k.key_id!r} appears twice")
            self._by_id[k.key_id] = AESGCM(k.key)
        self._current = self._keys[0]
        self._current_aead = self._by_id[self._current.key_id]

    @property
    def current_id(self) -> str:
        return self._current.key_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(k.key_id for k in self._keys)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._by_id

    def material(self) -> list[tuple[str, bytes]]:
        """(key id, key) of every key, the current (wrapping) one first: what the native
        store (``resume._native``) is handed to unwrap and wrap with the same keys."""
        return [(k.key_id, k.key) for k in self._keys]

    # -- loading ---------------------------------------------------------------------
    @classmethod
    def from_text(cls, text: str, *, source: str = "key text") -> Keyring:
        items = [s for line in text.splitlines() for s in line.split(",")]
        keys = []
        for s in items:
            s = s.strip()
            if not s or s.startswith("#"):
                continue
            try:
                keys.append(MasterKey.parse(s))
            except MasterKeyError as e:
                raise MasterKeyError(f"{source}: {e}") from None
        if not keys:
            raise MasterKeyError(f"{source}: no master key found")
        return cls(keys)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Keyring:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise MasterKeyError(f"cannot read master key file {p}: {e.strerror}") from None
        return cls.from_text(text, source=str(p))

    @classmethod
    def load(
        cls, key_file: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
    ) -> Keyring:
        """From ``key_file``, else ``$IKERESUME_MASTER_KEY_FILE``, else ``$IKERESUME_MASTER_KEY``.

        (The environment variable holds the key text itself.)
        """
        env = os.environ if env is None else env
        if key_file is not None:
            return cls.from_file(key_file)
        if env.get(ENV_KEY_FILE):
            return cls.from_file(env[ENV_KEY_FILE])
        if env.get(ENV_KEY):
            return cls.from_text(env[ENV_KEY], source=f"${ENV_KEY}")
        raise MasterKeyError(f"no master key: pass --key-file or set {ENV_KEY_FILE} or {ENV_KEY}")

    # -- wrapping --------------------------------------------------------------------
    def wrap(self, plaintext: bytes, aad: bytes, nonce: bytes | None = None) -> tuple[str, bytes]:
        """Encrypt under the current key; returns (key id, nonce || ciphertext || tag).

        ``nonce`` lets a batch draw all its random nonces with one ``os.urandom`` call; it
        must be fresh random bytes (never a counter or a reused value).
        """
        if nonce is None:
            nonce = os.urandom(AEAD_NONCE_LEN)
        elif len(nonce) != AEAD_NONCE_LEN:
            raise ValueError(f"nonce must be {AEAD_NONCE_LEN} bytes")
        return self._current.key_id, nonce + self._current_aead.encrypt(nonce, plaintext, aad)

    def try_unwrap(self, key_id: str, blob: bytes, aad: bytes) -> bytes | None:
        """The plaintext, or None if :meth:`unwrap` would raise (hot path: no message built).

        Callers that get None call :meth:`unwrap` for the typed error and its message.
        """
        aead = self._by_id.get(key_id)
        if aead is None:
            return None
        try:
            return aead.decrypt(blob[:AEAD_NONCE_LEN], blob[AEAD_NONCE_LEN:], aad)
        except (InvalidTag, TypeError, ValueError):
            return None

    def unwrap(self, key_id: str, blob: bytes, aad: bytes, *, what: str = "secret") -> bytes:
        aead = self._by_id.get(key_id)
        if aead is None:
            raise MasterKeyError(
                f"{what} is wrapped under master key id {key_id!r}, which is not configured "
                f"(configured: {', '.join(self.key_ids)}); wrong master key?"
            )
        if not isinstance(blob, bytes | bytearray | memoryview):
            raise CorruptRecord(f"{what}: wrapped value is not binary ({type(blob).__name__})")
        if len(blob) < AEAD_NONCE_LEN + _TAG_LEN:
            raise CorruptRecord(f"{what}: wrapped value truncated ({len(blob)} bytes)")
        try:
            return aead.decrypt(blob[:AEAD_NONCE_LEN], blob[AEAD_NONCE_LEN:], aad)
        except (InvalidTag, TypeError, ValueError):
            raise CorruptRecord(
                f"{what} does not authenticate under master key id {key_id!r}: the row was "
                "modified, moved from another row/generation, or the key is wrong"
            ) from None

    def key_check(self, key_id: str | None = None) -> tuple[str, bytes]:
        """A wrapped known value stored once per key id, to detect a wrong key at open."""
        kid = key_id or self.current_id
        aead = self._by_id[kid]
        nonce = os.urandom(AEAD_NONCE_LEN)
        return kid, nonce + aead.encrypt(nonce, _CHECK_PLAINTEXT, kid.encode())

    def verify_check(self, key_id: str, blob: bytes) -> bool | None:
        """True/False if ``key_id`` is configured and matches/does not; None if unknown."""
        aead = self._by_id.get(key_id)
        if aead is None:
            return None
        try:
            return aead.decrypt(blob[:AEAD_NONCE_LEN], blob[AEAD_NONCE_LEN:], key_id.encode()) == (
                _CHECK_PLAINTEXT
            )
        except (InvalidTag, ValueError):
            return False
