"""Export and import: a cache as JSON lines, secrets still wrapped (``specs/cache-format.md``).

Export writes a header line and one object per record.  Import is a reader of local input:
every line is parsed and validated -- types, ranges (generations are the protocol's u32,
counters fit the databases' signed 64-bit integers and are finite), the SA parameters'
canonical text, each wrapped secret authenticated and decoded into the credential the store
would later read -- before anything is written, and then everything is written in one
transaction.  Whatever is wrong with the file is an :class:`~store.errors.ExportFormatError`
naming the line and field (a key id that is not configured stays a
:class:`~store.errors.MasterKeyError`: the remedy is a key, not an edit); nothing is written
then.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy import and_, delete, func, insert, or_, select

from resume.credential import Credential, Lineage, ProtocolMode
from store.codec import params_text
from store.errors import CorruptRecord, ExportFormatError, MasterKeyError
from store.jsonfields import (
    INT64_MAX,
    U32_MAX,
    FieldError,
    as_float,
    as_int,
    as_object,
    as_str,
    fail,
    loads,
    required,
    sa_params,
    type_name,
)
from store.keys import AEAD_NONCE_LEN, Keyring
from store.maintenance import rewrap_row
from store.repository import Store
from store.tables import credentials as _T
from store.wrapping import unwrap_credential, wrap_credential

EXPORT_FORMAT = "ikeresume-cache-export/2"
#: Format 1 is format 2 without the lineage fields (exports made before issue 22): its
#: records read as lineage ``unknown``.
EXPORT_FORMAT_1 = "ikeresume-cache-export/1"
_BLOBS = (
    "handle", "secret_wrapped", "paper_wrapped", "prev_handle", "prev_secret_wrapped",
    "prev_paper_wrapped", "id_i", "id_r",
)  # fmt: skip
_SCALARS = (
    "uid", "role", "mode", "generation", "key_id", "prev_generation", "prev_key_id", "params",
    "full_ike_at", "last_used_at", "established_s", "bytes_total", "resumptions", "created_at",
)  # fmt: skip
RECORD_FIELDS_1 = (*_SCALARS, *_BLOBS)
RECORD_FIELDS = (*RECORD_FIELDS_1, "lineage", "prev_lineage")
_LINEAGES = tuple(lin.value for lin in Lineage)
HEADER_FIELDS = ("format", "dialect")
#: a record is a few hundred bytes; 255 selectors a side stay far below this
MAX_LINE = 1 << 20
#: PostgreSQL's INTEGER (the resumptions column)
INT32_MAX = 2**31 - 1
_UID = re.compile(r"[A-Za-z0-9_.-]{1,32}")
_KEY_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TAG_LEN = 16
_PREV = ("prev_handle", "prev_generation", "prev_key_id", "prev_secret_wrapped")


# -- export --------------------------------------------------------------------------
def _enc(v: Any) -> Any:
    return base64.b64encode(bytes(v)).decode() if isinstance(v, bytes | memoryview) else v


def export_jsonl(store: Store, fp: IO[str], *, rewrap_to: Keyring | None = None) -> int:
    """Write a header line then one JSON object per record; secrets stay wrapped.

    With ``rewrap_to`` the secrets are re-encrypted under that keyring's current key (the
    store's own keyring unwraps), for moving a cache to a site with another master key.
    """
    if rewrap_to is not None:
        store._need_keyring()
    fp.write(json.dumps({"format": EXPORT_FORMAT, "dialect": store.dialect}) + "\n")
    n = 0
    with store._errors("export"), store.engine.connect() as conn:
        for r in conn.execute(select(_T).order_by(_T.c.id)).mappings():
            d = dict(r)
            if rewrap_to is not None and store.keyring is not None:
                d.update(rewrap_row(d, store.keyring, rewrap_to))
            fp.write(json.dumps({k: _enc(d[k]) for k in RECORD_FIELDS}) + "\n")
            n += 1
    return n


# -- reading one record ----------------------------------------------------------------
def _blob(d: Mapping[str, Any], name: str, *, nullable: bool, lo: int, hi: int) -> bytes | None:
    v = d[name]
    if v is None:
        if not nullable:
            fail(name, "must not be null")
        return None
    if not isinstance(v, str):
        fail(name, f"must be a base64 string{' or null' if nullable else ''}, not {type_name(v)}")
    try:
        raw = base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        fail(name, "is not base64 (RFC 4648, with padding)")
    if not lo <= len(raw) <= hi:
        fail(name, f"{len(raw)} bytes, outside [{lo}, {hi}]")
    return raw


def _opt_int(d: Mapping[str, Any], name: str, hi: int) -> int | None:
    return None if d[name] is None else as_int(d[name], name, 0, hi)


def _opt_key_id(d: Mapping[str, Any], name: str) -> str | None:
    v = d[name]
    if v is None:
        return None
    s = as_str(v, name, max_len=64)
    if not _KEY_ID.fullmatch(s):
        fail(name, f"{s!r} is not a key id (1-64 of A-Z a-z 0-9 _ . -)")
    return s


def _lineage(d: Mapping[str, Any], name: str, *, nullable: bool) -> str | None:
    v = d[name]
    if v is None and nullable:
        return None
    s = as_str(v, name, max_len=16)
    if s not in _LINEAGES:
        fail(name, f"{s!r} is not one of {', '.join(_LINEAGES)}")
    return s


def record_from_json(obj: Any, version: int = 2) -> dict[str, Any]:
    """One export record -> column values; :class:`FieldError` names what is wrong.

    Checks every type and range and the parameters' canonical text; the wrapped secrets
    are checked by :func:`_authenticate` (that needs the keyring).  ``version`` 1 records
    have no lineage fields and read as ``unknown``.
    """
    fields = RECORD_FIELDS if version == 2 else RECORD_FIELDS_1
    d = as_object(obj, None, fields)
    for name in fields:
        required(d, name, None)
    uid = as_str(d["uid"], "uid", max_len=32)
    if not _UID.fullmatch(uid):
        fail("uid", f"{uid!r}: use 1-32 of A-Z a-z 0-9 _ . -")
    role = as_str(d["role"], "role", max_len=16)
    if role not in ("initiator", "responder"):
        fail("role", f"{role!r} is neither 'initiator' nor 'responder'")
    mode = as_str(d["mode"], "mode", max_len=16)
    if mode not in ("hardened", "paper"):
        fail("mode", f"{mode!r} is neither 'hardened' nor 'paper'")
    ptext = as_str(d["params"], "params", max_len=MAX_LINE)
    try:
        params = sa_params(loads(ptext), "params", names=False)
    except FieldError as e:
        fail(e.field or "params", e.reason)
    if params_text(params) != ptext:
        fail("params", "not in canonical form (keys sorted, no spaces; see specs/cache-format.md)")
    rec: dict[str, Any] = {
        "uid": uid,
        "role": role,
        "mode": mode,
        "generation": as_int(d["generation"], "generation", 0, U32_MAX),
        "key_id": _opt_key_id(d, "key_id"),
        "prev_generation": _opt_int(d, "prev_generation", U32_MAX),
        "prev_key_id": _opt_key_id(d, "prev_key_id"),
        "params": ptext,
        "full_ike_at": as_float(d["full_ike_at"], "full_ike_at"),
        "last_used_at": as_float(d["last_used_at"], "last_used_at"),
        "established_s": as_float(d["established_s"], "established_s", 0.0),
        "bytes_total": as_int(d["bytes_total"], "bytes_total", 0, INT64_MAX),
        "resumptions": as_int(d["resumptions"], "resumptions", 0, INT32_MAX),
        "created_at": as_float(d["created_at"], "created_at"),
    }
    if rec["key_id"] is None:
        fail("key_id", "must not be null")
    hlo, hhi = (8, 64) if mode == "hardened" else (1, 0xFFFF)
    wmin = AEAD_NONCE_LEN + _TAG_LEN
    rec["handle"] = _blob(d, "handle", nullable=False, lo=hlo, hi=hhi)
    rec["prev_handle"] = _blob(d, "prev_handle", nullable=True, lo=hlo, hi=hhi)
    for name in ("secret_wrapped", "paper_wrapped", "prev_secret_wrapped", "prev_paper_wrapped"):
        rec[name] = _blob(d, name, nullable=name != "secret_wrapped", lo=wmin, hi=1 << 16)
    for name in ("id_i", "id_r"):
        rec[name] = _blob(d, name, nullable=False, lo=2, hi=0xFFFF)
    present = [rec[k] is not None for k in _PREV]
    if any(present) and not all(present):
        missing = _PREV[present.index(False)]
        fail(missing, "the previous generation needs prev_handle, prev_generation, "
             "prev_key_id and prev_secret_wrapped together")  # fmt: skip
    if rec["prev_paper_wrapped"] is not None and rec["prev_handle"] is None:
        fail("prev_paper_wrapped", "set without a previous generation")
    if rec["prev_handle"] is not None and role != "initiator":
        fail("prev_handle", "only an initiator keeps a previous generation")
    if (rec["paper_wrapped"] is not None) != (mode == "paper"):
        fail("paper_wrapped", "set exactly when mode is 'paper'")
    if version == 2:
        rec["lineage"] = _lineage(d, "lineage", nullable=False)
        rec["prev_lineage"] = _lineage(d, "prev_lineage", nullable=True)
        if rec["prev_lineage"] is not None and rec["prev_handle"] is None:
            fail("prev_lineage", "set without a previous generation")
    else:
        rec["lineage"], rec["prev_lineage"] = "unknown", None
    return rec


def _check_credential(c: Credential, field: str) -> None:
    if c.mode is ProtocolMode.HARDENED and len(c.secret) != 32:
        fail(field, f"a hardened secret is 32 bytes, this one {len(c.secret)}")


def _authenticate(rec: dict[str, Any], wrapped_by: Keyring, store_keys: Keyring,
                  rewrap: bool) -> None:  # fmt: skip
    """Unwrap and decode each generation as the store will (FieldError/MasterKeyError);
    with ``rewrap`` replace the ciphertexts by ones under the store's current key."""
    gens = [("", rec["handle"], rec["generation"], rec["key_id"])]
    if rec["prev_handle"] is not None:
        gens.append(("prev_", rec["prev_handle"], rec["prev_generation"], rec["prev_key_id"]))
    for prefix, handle, generation, key_id in gens:
        field = f"{prefix}secret_wrapped"
        try:
            cred = unwrap_credential(
                wrapped_by, rec["uid"], rec["role"], rec["mode"], handle, generation, key_id,
                rec[field], rec[f"{prefix}paper_wrapped"], rec["id_i"], rec["id_r"],
                rec["params"], rec[f"{prefix}lineage"] or "unknown",
            )  # fmt: skip
        except CorruptRecord as e:
            fail(field, str(e))
        _check_credential(cred, field)
        if rewrap:
            kid, wrapped, paper = wrap_credential(store_keys, rec["role"], cred, rec["params"])
            rec[f"{prefix}key_id"] = kid
            rec[field] = wrapped
            rec[f"{prefix}paper_wrapped"] = paper


# -- import ----------------------------------------------------------------------------
@dataclass
class ImportResult:
    imported: int = 0
    replaced: int = 0
    skipped_existing: int = 0

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)


def read_export(
    lines: Iterable[bytes | str], keyring: Keyring, *, source: Keyring | None = None,
    name: str = "-",
) -> list[dict[str, Any]]:  # fmt: skip
    """Every record of an export, validated, authenticated and (with ``source``) rewrapped
    under ``keyring``: the column values to insert.  Writes nothing.

    Raises :class:`ExportFormatError` (file ``name``, line, field) for anything wrong with
    the file, :class:`MasterKeyError` for a key id that neither keyring has.
    """
    out: list[dict[str, Any]] = []
    seen_uid: dict[str, int] = {}
    seen_handle: dict[tuple[str, bytes], int] = {}
    lineno = 0
    header = False
    version = 2
    for lineno, line in enumerate(lines, start=1):
        try:
            if len(line) > MAX_LINE:
                fail(None, f"line longer than {MAX_LINE} bytes")
            if not line.strip():
                continue
            obj = loads(line)
            if not header:
                h = as_object(obj, None, HEADER_FIELDS)
                if h.get("format") not in (EXPORT_FORMAT, EXPORT_FORMAT_1):
                    fail("format", f"not an {EXPORT_FORMAT} file (the first line is its header)")
                version = 2 if h["format"] == EXPORT_FORMAT else 1
                if "dialect" in h:
                    as_str(h["dialect"], "dialect", max_len=64)
                header = True
                continue
            rec = record_from_json(obj, version)
            if rec["uid"] in seen_uid:
                fail("uid", f"same uid as line {seen_uid[rec['uid']]}")
            key = (rec["role"], rec["handle"])
            if key in seen_handle:
                fail("handle", f"same role and handle as line {seen_handle[key]}")
            seen_uid[rec["uid"]], seen_handle[key] = lineno, lineno
            _authenticate(rec, source or keyring, keyring, rewrap=source is not None)
        except FieldError as e:
            raise ExportFormatError(e.reason, source=name, line=lineno, field=e.field) from None
        except MasterKeyError as e:
            raise MasterKeyError(f"{name} line {lineno}: {e}") from None
        out.append(rec)
    if not header:
        raise ExportFormatError(f"no {EXPORT_FORMAT} header line", source=name, line=lineno or 1)
    return out


def import_jsonl(
    store: Store,
    lines: Iterable[bytes | str],
    *,
    source: Keyring | None = None,
    replace: bool = False,
    name: str = "-",
) -> ImportResult:
    """Load an export in one transaction; every record is verified before anything is written.

    With ``source`` the secrets are unwrapped with it and rewrapped under the store's key;
    otherwise they are kept as they are, and each must unwrap under the store's keyring
    (so an import can never plant records the store would later refuse).
    """
    prepared = read_export(lines, store._need_keyring(), source=source, name=name)
    res = ImportResult()
    with store._errors("import"), store.engine.begin() as conn:
        for rec in prepared:
            clash = or_(
                _T.c.uid == rec["uid"],
                and_(_T.c.role == rec["role"], _T.c.handle == rec["handle"]),
            )
            existing = conn.execute(select(func.count()).select_from(_T).where(clash)).scalar_one()
            if existing:
                if not replace:
                    res.skipped_existing += 1
                    continue
                conn.execute(delete(_T).where(clash))
                res.replaced += 1
            conn.execute(insert(_T).values(**rec))
            res.imported += 1
    return res
