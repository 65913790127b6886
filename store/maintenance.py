"""Operator maintenance: listing, statistics, purge, key rotation (export/import: transfer).

None of these ever print or export a plaintext secret.  Rotation and re-wrapping work row
by row with a compare-and-set on (id, handle, generation, key id), so they run online next
to responders that keep ratcheting the same rows: a row that moved meanwhile was already
rewrapped by its own commit (commits always wrap under the current key) or is retried.
A row that cannot be unwrapped is reported and left exactly as it was.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, false, func, or_, select, update
from sqlalchemy.engine import RowMapping

from resume.credential import Lineage
from resume.identity import format_identity
from store.errors import CorruptRecord, StoreError
from store.keys import Keyring, record_aad, record_binding
from store.policy import Counters, Policy, Refusal
from store.repository import Store
from store.tables import credentials as _T

#: the lineages ``require_pq_lineage`` accepts
PQ_LINEAGES = frozenset(lin.value for lin in Lineage if lin.is_pq)
_BLOBS = (
    "handle", "secret_wrapped", "paper_wrapped", "prev_handle", "prev_secret_wrapped",
    "prev_paper_wrapped", "id_i", "id_r",
)  # fmt: skip
_ID_TYPES = {1: "ipv4", 2: "fqdn", 3: "rfc822", 5: "ipv6", 9: "der_asn1_dn", 11: "key_id"}


def describe_identity(ident: bytes) -> str:
    """Human form of a stored identity: the credential form (type byte, data) as
    :func:`resume.identity.format_identity` writes it, or an ID payload body (type byte,
    three reserved bytes, data), or hex."""
    if len(ident) >= 5 and ident[0] in _ID_TYPES and ident[1:4] == b"\x00\x00\x00":
        kind, data = _ID_TYPES[ident[0]], ident[4:]
        try:
            if (kind == "ipv4" and len(data) == 4) or (kind == "ipv6" and len(data) == 16):
                return f"{kind}:{ipaddress.ip_address(data)}"
            if kind in ("fqdn", "rfc822"):
                return f"{kind}:{data.decode('ascii')}"
        except (UnicodeDecodeError, ValueError):
            pass
    return format_identity(ident)


def counters_of(r: RowMapping) -> Counters:
    """A row's counters; CorruptRecord (naming the row) if one is not a finite number."""
    try:
        c = Counters(
            full_ike_at=float(r["full_ike_at"]),
            last_used_at=float(r["last_used_at"]),
            established_s=float(r["established_s"]),
            bytes_total=int(r["bytes_total"]),
            resumptions=int(r["resumptions"]),
        )
    except (TypeError, ValueError, OverflowError) as e:
        raise CorruptRecord(f"record {r['uid']}: bad counters: {e}") from None
    if not all(map(math.isfinite, (c.full_ike_at, c.last_used_at, c.established_s))):
        raise CorruptRecord(f"record {r['uid']}: bad counters: not finite")
    return c


def _row_bytes(r: RowMapping) -> int:
    n = 8 * 8  # numeric columns
    for k in _BLOBS:
        if r[k] is not None:
            n += len(r[k])
    for k in ("uid", "role", "mode", "key_id", "prev_key_id", "params"):
        if r[k] is not None:
            n += len(str(r[k]).encode())
    return n


@dataclass(frozen=True)
class RecordInfo:
    """What an operator may see about a record: everything but the secret."""

    uid: str
    role: str
    mode: str
    handle: str
    generation: int
    key_id: str
    id_i: str
    id_r: str
    params: dict[str, Any]
    counters: Counters
    created_at: float
    expires_at: float | None
    refusal: Refusal | None
    previous_generation: int | None
    row_bytes: int
    #: how the chain began and what its resumptions added (specs/protocol.md 12.3)
    lineage: str = "unknown"
    previous_lineage: str | None = None

    @classmethod
    def from_row(cls, r: RowMapping, policy: Policy, now: float) -> RecordInfo:
        try:
            params: dict[str, Any] = json.loads(r["params"])
        except ValueError:
            params = {"error": "undecodable parameters"}
        c = counters_of(r)
        return cls(
            uid=r["uid"],
            role=r["role"],
            mode=r["mode"],
            handle=bytes(r["handle"]).hex(),
            generation=int(r["generation"]),
            key_id=r["key_id"],
            id_i=describe_identity(bytes(r["id_i"])),
            id_r=describe_identity(bytes(r["id_r"])),
            params=params,
            counters=c,
            created_at=float(r["created_at"]),
            expires_at=policy.expires_at(c),
            refusal=policy.check(c, now),
            previous_generation=r["prev_generation"],
            row_bytes=_row_bytes(r),
            lineage=str(r["lineage"]),
            previous_lineage=r["prev_lineage"],
        )

    def to_json(self) -> dict[str, Any]:
        c = self.counters
        return {
            "uid": self.uid,
            "role": self.role,
            "mode": self.mode,
            "handle": self.handle,
            "generation": self.generation,
            "key_id": self.key_id,
            "id_i": self.id_i,
            "id_r": self.id_r,
            "params": self.params,
            "full_ike_at": c.full_ike_at,
            "last_used_at": c.last_used_at,
            "established_s": c.established_s,
            "bytes_total": c.bytes_total,
            "resumptions": c.resumptions,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "usable": self.refusal is None,
            "refusal": None if self.refusal is None else self.refusal.value,
            "previous_generation": self.previous_generation,
            "row_bytes": self.row_bytes,
            "lineage": self.lineage,
            "pq": self.lineage in PQ_LINEAGES,
            "previous_lineage": self.previous_lineage,
        }


def list_records(
    store: Store, now: float, *, role: str | None = None, limit: int | None = None
) -> list[RecordInfo]:
    q = select(_T).order_by(_T.c.last_used_at.desc(), _T.c.id.desc())
    if role is not None:
        q = q.where(_T.c.role == role)
    if limit is not None:
        q = q.limit(limit)
    with store._errors("list"), store.engine.connect() as conn:
        rows = list(conn.execute(q).mappings())
    return [RecordInfo.from_row(r, store.policy, now) for r in rows]


def find_record(store: Store, ref: str, now: float) -> RecordInfo | None:
    """By uid, or by current handle in hex."""
    conds: list[ColumnElement[bool]] = [_T.c.uid == ref]
    with contextlib.suppress(ValueError):
        conds.append(_T.c.handle == bytes.fromhex(ref))
    with store._errors("show"), store.engine.connect() as conn:
        r = conn.execute(select(_T).where(or_(*conds)).limit(1)).mappings().first()
    return None if r is None else RecordInfo.from_row(r, store.policy, now)


def purge_condition(policy: Policy, now: float) -> ColumnElement[bool]:
    """SQL form of "never usable again": Policy.expires_at passed, or a limit exhausted.

    Same comparisons as :meth:`Policy.check` (``>=`` on the same differences), so a
    purged record is one the policy would refuse now and at every later time.
    """
    conds: list[ColumnElement[bool]] = []
    for lim in (policy.max_chain_age, policy.clocked):
        if lim is not None:
            conds.append(now - _T.c.full_ike_at >= lim)
    if policy.idle is not None:
        conds.append(now - _T.c.last_used_at >= policy.idle)
    if policy.established is not None:
        conds.append(_T.c.established_s >= policy.established)
    if policy.data is not None:
        conds.append(_T.c.bytes_total >= policy.data)
    if policy.max_resumptions is not None:
        conds.append(_T.c.resumptions >= policy.max_resumptions)
    return or_(*conds) if conds else false()


def purge(store: Store, now: float, *, dry_run: bool = False) -> int:
    """Delete records the policy can never allow again; returns how many (would be)."""
    cond = purge_condition(store.policy, now)
    with store._errors("purge"), store.engine.begin() as conn:
        if dry_run:
            return int(conn.execute(select(func.count()).select_from(_T).where(cond)).scalar_one())
        return int(conn.execute(delete(_T).where(cond)).rowcount)


def _total(v: Any, column: str) -> int:
    """A SUM over a counter column; CorruptRecord if a row holds a non-finite value."""
    try:
        return int(v or 0)
    except (TypeError, ValueError, OverflowError):
        raise CorruptRecord(f"the sum of {column} is {v!r}: a row holds a bad counter") from None


def stats(store: Store, now: float) -> dict[str, Any]:
    with store._errors("stats"), store.engine.connect() as conn:
        total = int(conn.execute(select(func.count()).select_from(_T)).scalar_one())
        by_role = {
            r: int(n) for r, n in conn.execute(select(_T.c.role, func.count()).group_by(_T.c.role))
        }
        by_mode = {
            m: int(n) for m, n in conn.execute(select(_T.c.mode, func.count()).group_by(_T.c.mode))
        }
        by_key = {
            k: int(n)
            for k, n in conn.execute(select(_T.c.key_id, func.count()).group_by(_T.c.key_id))
        }
        by_lineage = {
            lin: int(n)
            for lin, n in conn.execute(select(_T.c.lineage, func.count()).group_by(_T.c.lineage))
        }
        agg = conn.execute(
            select(
                func.min(_T.c.full_ike_at),
                func.min(_T.c.created_at),
                func.max(_T.c.last_used_at),
                func.sum(_T.c.resumptions),
                func.sum(_T.c.bytes_total),
            )
        ).one()
        expired = int(
            conn.execute(
                select(func.count()).select_from(_T).where(purge_condition(store.policy, now))
            ).scalar_one()
        )
        sizes = [_row_bytes(r) for r in conn.execute(select(_T)).mappings()] if total else []
    return {
        "database": store.url_display,
        "entries": total,
        "by_role": by_role,
        "by_mode": by_mode,
        "by_key_id": by_key,
        "by_lineage": by_lineage,
        "purgeable_now": expired,
        "bytes_per_record_avg": (sum(sizes) / len(sizes)) if sizes else None,
        "bytes_per_record_max": max(sizes) if sizes else None,
        "bytes_total_records": sum(sizes),
        "oldest_full_ike_at": agg[0],
        "oldest_full_ike_age_s": None if agg[0] is None else now - float(agg[0]),
        "oldest_created_at": agg[1],
        "newest_use_at": agg[2],
        "resumptions_total": _total(agg[3], "resumptions"),
        "bytes_accounted_total": _total(agg[4], "bytes_total"),
        "policy": store.policy.to_mapping(),
        "capacity": store.policy.capacity,
    }


# -- re-wrapping ---------------------------------------------------------------------
_WRAPPED = (
    ("secret_wrapped", "key_id", "handle", "generation", b"secret"),
    ("paper_wrapped", "key_id", "handle", "generation", b"paper"),
    ("prev_secret_wrapped", "prev_key_id", "prev_handle", "prev_generation", b"secret"),
    ("prev_paper_wrapped", "prev_key_id", "prev_handle", "prev_generation", b"paper"),
)


def rewrap_row(r: dict[str, Any], source: Keyring, target: Keyring) -> dict[str, Any]:
    """New column values with every wrapped field re-encrypted under ``target``'s key.

    Raises CorruptRecord/MasterKeyError if a field does not unwrap under ``source``.
    """
    binding = record_binding(bytes(r["id_i"]), bytes(r["id_r"]), r["params"])
    out: dict[str, Any] = {}
    for col, kcol, hcol, gcol, purpose in _WRAPPED:
        if r[col] is None:
            continue
        if r[hcol] is None or r[gcol] is None or r[kcol] is None:
            raise CorruptRecord(f"record {r['uid']}: {col} without its handle/generation/key")
        aad = record_aad(purpose, r["role"], r["mode"], bytes(r[hcol]), int(r[gcol]), binding)
        plain = source.unwrap(r[kcol], bytes(r[col]), aad, what=f"{col} of record {r['uid']}")
        kid, out[col] = target.wrap(plain, aad)
        out[kcol] = kid
    return out


@dataclass
class RotateResult:
    rewrapped: int = 0
    already_current: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # uid -> reason

    def to_json(self) -> dict[str, Any]:
        return {
            "rewrapped": self.rewrapped,
            "already_current": self.already_current,
            "failed": self.failed,
        }


def rotate_key(
    store: Store, *, batch: int = 500, progress: Callable[[int], None] | None = None
) -> RotateResult:
    """Rewrap every row not yet under the keyring's current key (online, idempotent)."""
    kr = store._need_keyring()
    cur = kr.current_id
    res = RotateResult()
    stale = or_(_T.c.key_id != cur, and_(_T.c.prev_key_id.is_not(None), _T.c.prev_key_id != cur))
    with store._errors("rotate-key"), store.engine.connect() as conn:
        total = int(conn.execute(select(func.count()).select_from(_T)).scalar_one())
        res.already_current = total - int(
            conn.execute(select(func.count()).select_from(_T).where(stale)).scalar_one()
        )
    last_id = -1
    for _attempt in range(5):  # rows that moved under us are retried in a later pass
        moved = 0
        while True:
            with store._errors("rotate-key"), store.engine.connect() as conn:
                rows = [
                    dict(r)
                    for r in conn.execute(
                        select(_T).where(stale, _T.c.id > last_id).order_by(_T.c.id).limit(batch)
                    ).mappings()
                ]
            if not rows:
                break
            last_id = rows[-1]["id"]
            with store._errors("rotate-key"), store.engine.begin() as conn:
                for r in rows:
                    try:
                        vals = rewrap_row(r, kr, kr)
                    except StoreError as e:
                        res.failed[r["uid"]] = str(e)
                        continue
                    n = conn.execute(
                        update(_T)
                        .where(
                            _T.c.id == r["id"],
                            _T.c.handle == r["handle"],
                            _T.c.generation == r["generation"],
                            _T.c.key_id == r["key_id"],
                        )
                        .values(**vals)
                    ).rowcount
                    if n == 1:
                        res.rewrapped += 1
                    else:
                        moved += 1
            if progress is not None:
                progress(len(rows))
        if not moved:
            break
        last_id = -1
    return res
