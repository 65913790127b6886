"""The JSON SA description: a negotiated CHILD_SA as ``ikeresume cache bootstrap`` reads it.

Any IKE implementation (an embedding daemon, libreswan, a hardware gateway's export) can
describe the CHILD_SA it negotiated in this form; both peers describe the *same* SA the
same way (initiator/responder, not local/remote), and each bootstraps generation 0 of its
credential from it exactly as ``specs/protocol.md`` 3.1 derives it.  The format is
specified in ``specs/sa-description.md``; :func:`parse_sa_description` is its reader and
raises only :class:`~store.errors.SADescriptionError`, naming the field.

Key material comes in this document only (a file or stdin), never from a command line,
where every user of the machine could read it in ``/proc``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from resume.credential import ORIGIN_LINEAGES
from resume.identity import format_identity, parse_identity
from resume.sa import DirectionKeys, SAParams
from store.errors import SADescriptionError
from store.jsonfields import (
    U32_MAX,
    FieldError,
    as_object,
    as_str,
    fail,
    join,
    loads,
    required,
    sa_params,
    type_name,
)

FORMAT = "ikeresume-sa-description/1"
#: the lineages a chain can start with (``pq-resumed`` only comes from a resumption);
#: stored with the record (``resume.credential.Lineage``)
LINEAGES = tuple(lin.value for lin in ORIGIN_LINEAGES)
#: SPIs 1-255 are reserved (RFC 4303); 0 means "no SA"
MIN_SPI = 256
#: far beyond any real description; bounds what a reader of stdin holds in memory
MAX_BYTES = 1 << 20
TOP_FIELDS = ("format", "comment", "id_i", "id_r", "params", "i_to_r", "r_to_i", "lineage")
_DIRECTION_FIELDS = ("spi", "encr_key", "integ_key")
_HEX = re.compile(r"[0-9a-fA-F]*")


@dataclass(frozen=True)
class SADescription:
    """A validated SA description: everything ``bootstrap_credential`` takes, plus lineage."""

    params: SAParams
    i_to_r: DirectionKeys = field(repr=False)
    r_to_i: DirectionKeys = field(repr=False)
    id_i: bytes
    id_r: bytes
    lineage: str = "unknown"


def _spi(v: Any, path: str) -> int:
    if isinstance(v, str):
        if not v.lower().startswith("0x") or not 2 < len(v) <= 10 or not _HEX.fullmatch(v[2:]):
            fail(path, f"{v!r}: write an SPI as a JSON number or a string '0x' + 1-8 hex digits")
        spi = int(v[2:], 16)
    elif isinstance(v, int) and not isinstance(v, bool):
        spi = v
    else:
        fail(path, f"must be a number or a '0x...' string, not {type_name(v)}")
    if not MIN_SPI <= spi <= U32_MAX:
        fail(path, f"SPI {spi} (0x{spi:x}) is outside [256, 2^32-1] (1-255 are reserved)")
    return spi


def _key(v: Any, path: str, want: int, what: str) -> bytes:
    s = as_str(v, path, max_len=1024, empty=True)
    if s[:2].lower() == "0x":
        s = s[2:]
    if len(s) % 2 or not _HEX.fullmatch(s):
        fail(path, "must be hex digits (optionally after 0x), two per byte")
    raw = bytes.fromhex(s)
    if len(raw) != want:
        fail(path, f"{len(raw)} bytes; {what} needs {want}")
    return raw


def _direction(v: Any, path: str, params: SAParams) -> DirectionKeys:
    d = as_object(v, path, _DIRECTION_FIELDS)
    salt = params.encr.salt_len
    what = f"{params.encr.name} {params.encr_key_bits}" + (
        f" (key {params.encr_key_bits // 8} + salt {salt})" if salt else ""
    )
    encr = _key(required(d, "encr_key", path), join(path, "encr_key"), params.encr_key_len, what)
    ilen = params.integ.key_len
    if ilen == 0 and d.get("integ_key") in (None, ""):
        integ = b""
    else:
        raw = required(d, "integ_key", path)
        integ = _key(raw, join(path, "integ_key"), ilen, params.integ.name)
    return DirectionKeys(_spi(required(d, "spi", path), join(path, "spi")), encr, integ)


def _identity(v: Any, path: str) -> bytes:
    s = as_str(v, path, max_len=1024)
    try:
        return parse_identity(s)
    except ValueError as e:
        fail(path, str(e))


def description_from_json(doc: Any) -> SADescription:
    """Validate a parsed document; :class:`FieldError` names the first field that is wrong."""
    d = as_object(doc, None, TOP_FIELDS)
    if "format" in d and d["format"] != FORMAT:
        fail("format", f"{d['format']!r} is not {FORMAT!r}")
    if "comment" in d:
        as_str(d["comment"], "comment", empty=True)
    lineage = d.get("lineage", "unknown")
    if lineage not in LINEAGES:
        fail("lineage", f"{lineage!r} is not one of {', '.join(LINEAGES)}")
    params = sa_params(required(d, "params", None), "params", names=True)
    return SADescription(
        params=params,
        i_to_r=_direction(required(d, "i_to_r", None), "i_to_r", params),
        r_to_i=_direction(required(d, "r_to_i", None), "r_to_i", params),
        id_i=_identity(required(d, "id_i", None), "id_i"),
        id_r=_identity(required(d, "id_r", None), "id_r"),
        lineage=str(lineage),
    )


def parse_sa_description(data: bytes | str, *, source: str = "-") -> SADescription:
    """Read one SA description (bytes of a file or stdin); SADescriptionError if unusable."""
    if len(data) > MAX_BYTES:
        raise SADescriptionError(f"larger than {MAX_BYTES} bytes", source=source)
    try:
        return description_from_json(loads(data))
    except FieldError as e:
        raise SADescriptionError(e.reason, source=source, field=e.field) from None


def description_to_json(desc: SADescription) -> dict[str, Any]:
    """The document :func:`parse_sa_description` reads back to ``desc`` (contains the keys)."""

    def direction(k: DirectionKeys) -> dict[str, Any]:
        out: dict[str, Any] = {"spi": f"0x{k.spi:08x}", "encr_key": k.encr_key.hex()}
        if k.integ_key:
            out["integ_key"] = k.integ_key.hex()
        return out

    return {
        "format": FORMAT,
        "id_i": format_identity(desc.id_i),
        "id_r": format_identity(desc.id_r),
        "params": desc.params.to_json(),
        "i_to_r": direction(desc.i_to_r),
        "r_to_i": direction(desc.r_to_i),
        "lineage": desc.lineage,
    }
