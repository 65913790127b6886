"""Strict reading of JSON from local files: one error type, naming the field.

Why strict: the JSON read here carries keys, SPIs, counters and identities from outside
(an operator's SA description, another site's export).  A silently defaulted typo, a
duplicated key with two values, ``Infinity`` in a counter or a number beyond SQLite's
64-bit integers would each be accepted by ``json.loads`` and fail later, far from the
input, or worse, be stored.  Everything here raises :class:`FieldError` (a ``ValueError``)
with the dotted path of the field; the readers (:mod:`store.sa_description`,
:mod:`store.transfer`) turn it into their documented error with the file and line.

Also the strict reading of the SA parameters object (``specs/cache-format.md``), shared
by both readers so that the two documents describe one format.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from resume.sa import Encr, Integ, Mode, SAParams, TrafficSelector

#: SQLite's INTEGER (and PostgreSQL's BIGINT) is a signed 64-bit integer
INT64_MAX = 2**63 - 1
U32_MAX = 2**32 - 1

ENCR_NAMES = {"aes-cbc": Encr.AES_CBC, "aes-gcm-16": Encr.AES_GCM_16,
              "chacha20-poly1305": Encr.CHACHA20_POLY1305}  # fmt: skip
INTEG_NAMES = {"none": Integ.NONE, "hmac-sha2-256-128": Integ.HMAC_SHA2_256_128,
               "hmac-sha2-384-192": Integ.HMAC_SHA2_384_192,
               "hmac-sha2-512-256": Integ.HMAC_SHA2_512_256}  # fmt: skip
PARAMS_FIELDS = (
    "mode", "encr", "encr_key_bits", "integ", "initiator_addr", "responder_addr", "tsi", "tsr",
    "natt_initiator_port", "natt_responder_port", "replay_window",
)  # fmt: skip
TS_FIELDS = ("start_addr", "end_addr", "protocol", "start_port", "end_port")
#: a selector count is one byte in params_bytes (specs/protocol.md 5.1)
MAX_SELECTORS = 255


class FieldError(ValueError):
    """``field`` (a dotted path, None for the document itself) is unusable: ``reason``."""

    def __init__(self, field: str | None, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


def fail(field: str | None, reason: str) -> NoReturn:
    raise FieldError(field, reason)


def _constant(name: str) -> float:
    """``NaN``/``Infinity`` parse (Python's json accepts them) so that the field's own check
    refuses them by name: no field of ours takes a number that is not finite."""
    return float(name)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise FieldError(k, "appears twice in one object")
        out[k] = v
    return out


def loads(data: bytes | str) -> Any:
    """Parse one JSON document: UTF-8, no duplicate keys, bounded nesting (non-finite numbers
are left to the fields' checks, which all refuse them)."""
    if isinstance(data, bytes | bytearray):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            fail(None, f"not UTF-8 (byte {e.start})")
    else:
        text = data
    try:
        return json.loads(text, parse_constant=_constant, object_pairs_hook=_no_duplicates)
    except FieldError:
        raise
    except RecursionError:
        fail(None, "JSON nested too deeply")
    except json.JSONDecodeError as e:
        fail(None, f"not JSON: {e.msg} (line {e.lineno} column {e.colno})")
    except ValueError as e:  # e.g. an integer literal beyond Python's digit limit
        fail(None, f"not JSON: {e}")


def join(path: str | None, name: str | int) -> str:
    if isinstance(name, int):
        return f"{path}[{name}]"
    return f"{path}.{name}" if path else name


def as_object(v: Any, path: str | None, allowed: Sequence[str] | None = None) -> Mapping[str, Any]:
    if not isinstance(v, dict):
        fail(path, f"must be a JSON object, not {type_name(v)}")
    if allowed is not None:
        unknown = sorted(set(v) - set(allowed))
        if unknown:
            fail(join(path, unknown[0]), f"unknown field (known: {', '.join(allowed)})")
    return v


def required(d: Mapping[str, Any], name: str, path: str | None) -> Any:
    if name not in d:
        fail(join(path, name), "missing")
    return d[name]


def type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v).replace("inf", "Infinity").replace("nan", "NaN")
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(v), type(v).__name__)  # fmt: skip


def as_str(v: Any, path: str, *, max_len: int = 4096, empty: bool = False) -> str:
    if not isinstance(v, str):
        fail(path, f"must be a string, not {type_name(v)}")
    if not v and not empty:
        fail(path, "must not be empty")
    if len(v) > max_len:
        fail(path, f"longer than {max_len} characters")
    return v


def as_int(v: Any, path: str, lo: int, hi: int) -> int:
    """An integer in [lo, hi]; a boolean or a number with a fraction is refused."""
    if isinstance(v, bool) or not isinstance(v, int):
        fail(path, f"must be an integer, not {type_name(v)}")
    if not lo <= v <= hi:
        fail(path, f"{v} is outside [{lo}, {hi}]")
    return v


def as_float(v: Any, path: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    """A finite number (integer or not) in [lo, hi]."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        fail(path, f"must be a number, not {type_name(v)}")
    try:
        f = float(v)
    except OverflowError:
        fail(path, "too large")
    if not math.isfinite(f):
        fail(path, "must be finite")
    if not lo <= f <= hi:
        fail(path, f"{f} is outside [{lo}, {hi}]")
    return f


def as_list(v: Any, path: str, *, min_len: int = 0, max_len: int) -> list[Any]:
    if not isinstance(v, list):
        fail(path, f"must be a list, not {type_name(v)}")
    if not min_len <= len(v) <= max_len:
        fail(path, f"needs {min_len} to {max_len} entries, has {len(v)}")
    return v


def as_ip(v: Any, path: str) -> str:
    s = as_str(v, path, max_len=64)
    try:
        return str(ipaddress.ip_address(s))
    except ValueError:
        fail(path, f"{s!r} is not an IPv4 or IPv6 address")


def _enum(v: Any, path: str, kind: type[Encr] | type[Integ], names: Mapping[str, Any]) -> Any:
    what = "encryption" if kind is Encr else "integrity"
    known = ", ".join([*names, *(str(int(m)) for m in kind)])
    if isinstance(v, str) and v.lower() in names:
        return names[v.lower()]
    if isinstance(v, int) and not isinstance(v, bool):
        try:
            return kind(v)
        except ValueError:
            pass
    elif not isinstance(v, str):
        fail(path, f"must be an IKEv2 transform ID or a name, not {type_name(v)}")
    fail(path, f"unknown {what} algorithm {v!r} (supported: {known})")


def traffic_selector(v: Any, path: str, *, text: bool) -> TrafficSelector:
    """One selector: the stored object form, or (``text``) an address or CIDR string."""
    if text and isinstance(v, str):
        try:
            n = ipaddress.ip_network(v, strict=False)
        except ValueError:
            fail(path, f"{v!r} is not an address or address/prefix")
        return TrafficSelector(str(n.network_address), str(n.broadcast_address))
    d = as_object(v, path, TS_FIELDS)
    start = as_ip(required(d, "start_addr", path), join(path, "start_addr"))
    end = as_ip(required(d, "end_addr", path), join(path, "end_addr"))
    a, b = ipaddress.ip_address(start), ipaddress.ip_address(end)
    if a.version != b.version:
        fail(path, "start_addr and end_addr are of different IP versions")
    if int(a) > int(b):
        fail(path, f"start_addr {start} is above end_addr {end}")
    proto = as_int(d.get("protocol", 0), join(path, "protocol"), 0, 255)
    lo = as_int(d.get("start_port", 0), join(path, "start_port"), 0, 65535)
    hi = as_int(d.get("end_port", 65535), join(path, "end_port"), 0, 65535)
    if lo > hi:
        fail(path, f"start_port {lo} is above end_port {hi}")
    return TrafficSelector(start, end, proto, lo, hi)


def sa_params(v: Any, path: str, *, names: bool) -> SAParams:
    """The SA parameters object (``specs/cache-format.md``) -> :class:`SAParams`.

    ``names``: also accept algorithm names and selector strings (the SA description's
    conveniences); the stored form has transform IDs and selector objects only.
    """
    d = as_object(v, path, PARAMS_FIELDS)

    def f(name: str) -> str:
        return join(path, name)

    mode_s = as_str(required(d, "mode", path), f("mode"), max_len=16)
    try:
        mode = Mode(mode_s)
    except ValueError:
        fail(f("mode"), f"{mode_s!r} is neither 'transport' nor 'tunnel'")
    raw_encr, raw_integ = required(d, "encr", path), required(d, "integ", path)
    if not names and (isinstance(raw_encr, str) or isinstance(raw_integ, str)):
        fail(f("encr" if isinstance(raw_encr, str) else "integ"), "must be a transform ID")
    encr: Encr = _enum(raw_encr, f("encr"), Encr, ENCR_NAMES)
    integ: Integ = _enum(raw_integ, f("integ"), Integ, INTEG_NAMES)
    bits = as_int(required(d, "encr_key_bits", path), f("encr_key_bits"), 1, 65535)
    allowed_bits = (256,) if encr is Encr.CHACHA20_POLY1305 else (128, 192, 256)
    if bits not in allowed_bits:
        fail(f("encr_key_bits"), f"{encr.name} takes {' or '.join(map(str, allowed_bits))}")
    if encr.is_aead != (integ is Integ.NONE):
        why = "an AEAD cipher takes integ none" if encr.is_aead else "AES-CBC needs an integ"
        fail(f("integ"), f"{integ.name} with {encr.name}: {why}")
    selectors = {}
    for side in ("tsi", "tsr"):
        raw = as_list(required(d, side, path), f(side), min_len=1, max_len=MAX_SELECTORS)
        selectors[side] = tuple(
            traffic_selector(t, f"{f(side)}[{i}]", text=names) for i, t in enumerate(raw)
        )
    ports = []
    for side in ("natt_initiator_port", "natt_responder_port"):
        p = d.get(side)
        ports.append(None if p is None else as_int(p, f(side), 1, 65535))
    if (ports[0] is None) != (ports[1] is None):
        fail(f("natt_initiator_port"), "NAT-T needs both ports or neither")
    return SAParams(
        mode=mode,
        encr=encr,
        encr_key_bits=bits,
        integ=integ,
        initiator_addr=as_ip(required(d, "initiator_addr", path), f("initiator_addr")),
        responder_addr=as_ip(required(d, "responder_addr", path), f("responder_addr")),
        tsi=selectors["tsi"],
        tsr=selectors["tsr"],
        natt_initiator_port=ports[0],
        natt_responder_port=ports[1],
        replay_window=as_int(d.get("replay_window", 128), f("replay_window"), 0, U32_MAX),
    )
