"""The responder's install outbox: rows <-> SA pairs (the table is in :mod:`store.tables`).

Why an outbox: a responder's commit makes the client's SAs valid (the client installs on
its side as soon as message 3 is sent), so a responder killed between its commit and the
kernel install would leave the pair installed on one side only -- a black hole until
something notices.  The SA pair to install is therefore inserted in the SAME transaction as
the ratchet's compare-and-set (:meth:`store.repository.Store.commit_ratchet_many`), its keys
wrapped at rest like the secrets (:func:`store.wrapping.wrap_install`).  The service deletes
a row once its install succeeded (a crash before that only means a harmless, idempotent
re-install); at start-up, before serving, it installs every row of its node whose hard
lifetime has not passed and deletes the expired ones without installing them
(:meth:`~store.repository.Store.pending_installs`).

Everything here is encoding: no SQL, no I/O.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from typing import Any

from resume.memo import Memo
from resume.sa import DirectionKeys, Lifetimes, SAPair, SAParams
from store.codec import params_text
from store.errors import CorruptRecord
from store.keys import Keyring
from store.wrapping import unwrap_install, wrap_install

#: the row as :data:`INSERT_SQL` takes it (qmark style; the store adapts it per dialect)
INSERT_SQL = (
    "INSERT INTO install_outbox (uid, node, handle, generation, committed_at, expires_at, "
    "sa, key_id, keys_wrapped) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SELECT_SQL = (
    "SELECT uid, handle, generation, committed_at, expires_at, sa, key_id, keys_wrapped "
    "FROM install_outbox WHERE node = ?"
)


@dataclass(frozen=True, slots=True)
class InstallIntent:
    """An SA pair to commit with the ratchet: ``uid`` names its outbox row."""

    uid: str
    node: str
    sa: SAPair

    @classmethod
    def new(cls, node: str, sa: SAPair) -> InstallIntent:
        return cls(os.urandom(16).hex(), node, sa)


@dataclass(frozen=True, slots=True)
class PendingInstall:
    """An outbox row to install at start-up: its SA pair with the lifetimes that remain."""

    uid: str
    handle: bytes
    generation: int
    sa: SAPair


@dataclass
class OutboxReplay:
    """What :meth:`Store.pending_installs` found: rows to install, expired rows it deleted,
    and rows it could not read (left in place, with why)."""

    pending: list[PendingInstall]
    expired: int = 0
    unreadable: dict[str, str] | None = None


def _canonical(doc: Any) -> str:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


#: a handful of lifetime sets in practice (they follow the policy)
_LIFETIMES: Memo[Lifetimes, str] = Memo(1024)


def sa_text(sa: SAPair) -> str:
    """The public part of ``sa`` (no keys) as canonical JSON (sorted keys, no spaces).

    Assembled from memoized parts -- the parameter text (:func:`store.codec.params_text`)
    and the lifetimes -- because it is built once per accepted exchange, inside the
    commit's critical path; ``tests/store/test_outbox.py`` checks it equals the plain
    ``json.dumps`` of the whole document.
    """
    lt = _LIFETIMES.get(sa.lifetimes)
    if lt is None:
        lt = _LIFETIMES.put(sa.lifetimes, _canonical(sa.lifetimes.to_json()))
    reqid = "null" if sa.reqid is None else str(int(sa.reqid))
    role = f'"{sa.role}"' if sa.role.isalpha() else _canonical(sa.role)
    return (
        f'{{"i_to_r_spi":{int(sa.i_to_r.spi)},"lifetimes":{lt},'
        f'"params":{params_text(sa.params)},"r_to_i_spi":{int(sa.r_to_i.spi)},'
        f'"reqid":{reqid},"role":{role}}}'
    )


def sa_document(sa: SAPair) -> dict[str, Any]:
    """What :func:`sa_text` encodes, as a dict."""
    return {
        "role": sa.role,
        "params": sa.params.to_json(),
        "lifetimes": sa.lifetimes.to_json(),
        "reqid": sa.reqid,
        "i_to_r_spi": sa.i_to_r.spi,
        "r_to_i_spi": sa.r_to_i.spi,
    }


def _lp(b: bytes) -> bytes:
    return len(b).to_bytes(2, "big") + b


def keys_blob(sa: SAPair) -> bytes:
    """``lp(i2r encr) | lp(i2r integ) | lp(r2i encr) | lp(r2i integ)``."""
    return b"".join(
        _lp(k) for k in (sa.i_to_r.encr_key, sa.i_to_r.integ_key, sa.r_to_i.encr_key,
                         sa.r_to_i.integ_key)
    )  # fmt: skip


def _split_keys(blob: bytes) -> list[bytes]:
    out, i = [], 0
    for _ in range(4):
        if i + 2 > len(blob):
            raise ValueError("truncated keys")
        n = int.from_bytes(blob[i : i + 2], "big")
        if i + 2 + n > len(blob):
            raise ValueError("truncated key")
        out.append(blob[i + 2 : i + 2 + n])
        i += 2 + n
    if i != len(blob):
        raise ValueError("trailing bytes after the keys")
    return out


def expires_at(sa: SAPair, committed_at: float) -> float | None:
    """The pair's hard expiry as POSIX time, None when it has no time limit."""
    hard = sa.lifetimes.hard_seconds
    return None if hard is None else committed_at + hard


def remaining_lifetimes(lt: Lifetimes, elapsed: float, left: float | None) -> Lifetimes:
    """``lt`` (relative to the commit) for an install ``elapsed`` seconds later, when
    ``left`` seconds of the hard lifetime remain: the SA must not outlive the policy's
    budget because it was installed late."""
    if left is None:
        return lt
    hard = max(1, math.floor(left))
    soft = lt.soft_seconds
    if soft is not None:
        soft = min(hard, max(1, soft - math.ceil(max(0.0, elapsed))))
    return replace(lt, soft_seconds=soft, hard_seconds=hard)


def encode_row(
    kr: Keyring,
    intent: InstallIntent,
    handle: bytes,
    generation: int,
    committed_at: float,
    nonce: bytes | None = None,
) -> tuple[Any, ...]:
    """The :data:`INSERT_SQL` parameters of ``intent``, committed for (handle, generation)."""
    text = sa_text(intent.sa)
    exp = expires_at(intent.sa, committed_at)
    kid, wrapped = wrap_install(kr, handle, generation, text, exp, keys_blob(intent.sa), nonce)
    return (intent.uid, intent.node, handle, generation, committed_at, exp, text, kid, wrapped)


def decode_row(kr: Keyring, row: tuple[Any, ...], now: float) -> PendingInstall:
    """A :data:`SELECT_SQL` row that has not expired at ``now``, decoded and authenticated
    (CorruptRecord / MasterKeyError)."""
    uid, handle, generation, committed_at, exp, text, key_id, wrapped = row
    try:
        h, gen, t0 = bytes(handle), int(generation), float(committed_at)
        exp_f = None if exp is None else float(exp)
        doc = json.loads(text)
    except (TypeError, ValueError) as e:
        raise CorruptRecord(f"install outbox row {uid}: undecodable: {e}") from None
    blob = unwrap_install(kr, str(uid), h, gen, str(text), exp_f, str(key_id), bytes(wrapped))
    try:
        ek1, ik1, ek2, ik2 = _split_keys(blob)
        lt = Lifetimes.from_json(doc["lifetimes"])
        left = None if exp_f is None else exp_f - now
        sa = SAPair(
            role=str(doc["role"]),
            params=SAParams.from_json(doc["params"]),
            i_to_r=DirectionKeys(int(doc["i_to_r_spi"]), ek1, ik1),
            r_to_i=DirectionKeys(int(doc["r_to_i_spi"]), ek2, ik2),
            lifetimes=remaining_lifetimes(lt, now - t0, left),
            reqid=None if doc.get("reqid") is None else int(doc["reqid"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise CorruptRecord(f"install outbox row {uid}: undecodable SA pair: {e!r}") from None
    return PendingInstall(str(uid), h, gen, sa)
