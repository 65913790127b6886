"""strongSwan VICI messages -> typed descriptions of an IKE_SA and its CHILD_SAs.

VICI (strongSwan's control protocol, spoken by the ``vici`` package) reports identities,
roles, SPIs, traffic selectors, byte counters and timers -- never keys.  Messages are nested
dicts of bytes; everything here treats them as untrusted input: a missing or malformed field
raises :class:`~ikeshim.errors.HarvestError` naming the field, never ``KeyError``,
``ValueError`` or ``struct.error`` -- the one error type of this reader.  Numbers are
ASCII digits only (``str.isdigit`` and ``int`` accept other scripts' digits), SPIs fit
32 bits, hosts are IP addresses: what passes here can be handed to the kernel as is.

:func:`read_ike_sas` reads a message SA by SA: a CHILD_SA (or IKE_SA) that does not
parse is returned as an :class:`Unparsed` next to the others, so the harvester skips that
one SA and keeps the rest.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ikeshim.errors import HarvestError
from resume.credential import Lineage
from resume.identity import MAX_IDENTITY_LEN
from resume.sa import Mode, TrafficSelector

# RFC 7296 section 3.5 ID types.
ID_IPV4_ADDR = 1
ID_FQDN = 2
ID_RFC822_ADDR = 3
ID_IPV6_ADDR = 5
ID_KEY_ID = 11


def _s(v: Any, field: str) -> str:
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HarvestError(f"VICI field {field} is not UTF-8") from exc
    if isinstance(v, str):
        return v
    raise HarvestError(f"VICI field {field} missing or not a string")


def _get(d: Mapping[str, Any], field: str) -> str:
    if field not in d:
        raise HarvestError(f"VICI message lacks {field}")
    return _s(d[field], field)


_DIGITS = re.compile(r"[0-9]{1,20}")
_HEX = re.compile(r"[0-9a-fA-F]{1,8}")
_PROTO_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._+-]{0,31}")
U32_MAX = 2**32 - 1
INT64_MAX = 2**63 - 1


def _int(d: Mapping[str, Any], field: str, default: int | None = None) -> int:
    """A decimal counter in [0, 2^63-1] (what the store's integers hold)."""
    if field not in d and default is not None:
        return default
    raw = _get(d, field)
    if not _DIGITS.fullmatch(raw) or int(raw) > INT64_MAX:
        raise HarvestError(f"VICI field {field}={raw[:40]!r} is not a number in [0, 2^63-1]")
    return int(raw)


def _host(d: Mapping[str, Any], field: str) -> str:
    raw = _get(d, field)
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise HarvestError(f"VICI field {field}={raw[:64]!r} is not an IP address") from None


def identity_payload(ident: str) -> bytes:
    """An IKE identity as strongSwan prints it -> the credential's identity: the RFC 7296 ID
    type byte followed by the identification data (no RESERVED bytes), the form
    ``ikeresume resume --peer fqdn:NAME`` builds too.

    Both peers print the same identity the same way, so both derive the same bytes.
    Distinguished names are refused rather than given an encoding the peer might not match.
    """
    if not ident or ident == "%any":
        raise HarvestError("empty or wildcard identity")
    try:
        ip = ipaddress.ip_address(ident)
    except ValueError:
        pass
    else:
        return bytes([ID_IPV4_ADDR if ip.version == 4 else ID_IPV6_ADDR]) + ip.packed
    if ident.startswith("@#"):
        try:
            return bytes([ID_KEY_ID]) + bytes.fromhex(ident[2:])
        except ValueError as exc:
            raise HarvestError(f"bad key id identity {ident!r}") from exc
    if "=" in ident and ("," in ident or ident.upper().startswith(("CN=", "C=", "O="))):
        raise HarvestError(f"distinguished-name identities are not supported yet: {ident!r}")
    if "@" in ident.lstrip("@"):
        out = bytes([ID_RFC822_ADDR]) + ident.encode()
    else:
        out = bytes([ID_FQDN]) + ident.lstrip("@").encode()
    if len(out) > MAX_IDENTITY_LEN:  # it enters the key schedule behind a 2-byte length
        raise HarvestError(f"identity of {len(out)} bytes is too long")
    return out


_TS_RE = re.compile(r"^(?P<net>[^\[\]]+?)(?:\[(?P<proto>[^/\]]*)(?:/(?P<port>[^\]]*))?\])?$")


def parse_ts(text: str) -> TrafficSelector:
    """``10.1.0.0/24``, ``10.0.0.1..10.0.0.9``, ``192.0.2.1/32[udp/4500]``, ``::/0[tcp/80-90]``."""
    m = _TS_RE.match(text.strip())
    if not m:
        raise HarvestError(f"unparsable traffic selector {text!r}")
    net = m.group("net")
    proto = 0
    start_port, end_port = 0, 65535
    if m.group("proto"):
        p = m.group("proto")
        if _DIGITS.fullmatch(p):
            proto = int(p)
        elif _PROTO_NAME.fullmatch(p):
            try:
                proto = socket.getprotobyname(p)
            except OSError as exc:
                raise HarvestError(f"unknown protocol {p!r} in {text!r}") from exc
        else:
            raise HarvestError(f"unparsable protocol {p!r} in {text!r}")
    port = m.group("port")
    if port and port not in ("any", "%any"):
        lo, _, hi = port.partition("-")
        if not _DIGITS.fullmatch(lo) or (hi and not _DIGITS.fullmatch(hi)):
            # e.g. named ports or OPAQUE: refuse rather than widen the selector.
            raise HarvestError(f"unsupported port spec {port!r} in {text!r}")
        start_port, end_port = int(lo), int(hi or lo)
    try:
        if ".." in net:
            a, b = net.split("..", 1)
            return TrafficSelector(a, b, proto, start_port, end_port)
        n = ipaddress.ip_network(net, strict=False)
        return TrafficSelector(
            str(n.network_address), str(n.broadcast_address), proto, start_port, end_port
        )
    except ValueError as exc:
        raise HarvestError(f"bad traffic selector {text!r}: {exc}") from exc


@dataclass(frozen=True)
class ChildInfo:
    """One CHILD_SA as VICI reports it."""

    name: str
    uniqueid: int
    reqid: int
    mode: Mode
    protocol: str
    encap: bool
    spi_in: int
    spi_out: int
    local_ts: tuple[TrafficSelector, ...]
    remote_ts: tuple[TrafficSelector, ...]
    bytes_in: int
    bytes_out: int
    install_time: int  # seconds since the SA was installed


@dataclass(frozen=True)
class IkeInfo:
    """One IKE_SA as VICI reports it (only what harvesting needs)."""

    name: str
    uniqueid: int
    local_host: str
    remote_host: str
    local_port: int
    remote_port: int
    local_id: str
    remote_id: str
    initiator: bool  # we initiated this IKE_SA
    children: tuple[ChildInfo, ...]
    #: the key exchange methods of the IKE_SA as strongSwan names them: ``dh-group``, then
    #: the additional ones ``ake1`` .. ``ake7`` (RFC 9370); empty when VICI reported none
    ke_methods: tuple[str, ...] = ()
    #: a postquantum preshared key was used (RFC 8784; VICI ``ppk = yes``)
    ppk: bool = False

    @property
    def lineage(self) -> Lineage:
        return lineage_of(self.ke_methods, self.ppk)


#: strongSwan's names of the classical (EC)DH groups (``key_exchange_method_names``)
_CLASSICAL = re.compile(r"(MODP_[0-9]{3,4}(_[0-9]{3})?|ECP_[0-9]{3}(_BP)?|CURVE_(25519|448))")
#: ...and of ML-KEM (FIPS 203), in strongSwan 6
_MLKEM = re.compile(r"ML_KEM_(512|768|1024)")
_KE_FIELDS = ("dh-group", *(f"ake{i}" for i in range(1, 8)))


def lineage_of(ke_methods: tuple[str, ...], ppk: bool) -> Lineage:
    """The lineage a full IKE gives its chain (specs/protocol.md 12.3), never PQ by guess:
    a PPK -> ``ppk``; any ML-KEM method -> ``hybrid-pq``; only known classical groups ->
    ``classical``; nothing reported, or a name this reader does not know -> ``unknown``."""
    if ppk:
        return Lineage.PPK
    if any(_MLKEM.fullmatch(m) for m in ke_methods):
        return Lineage.HYBRID_PQ
    if ke_methods and all(_CLASSICAL.fullmatch(m) for m in ke_methods):
        return Lineage.CLASSICAL
    return Lineage.UNKNOWN


def _ke_methods(d: Mapping[str, Any]) -> tuple[str, ...]:
    """The IKE_SA's key exchange method names (bounded: they are untrusted strings)."""
    out = []
    for f in _KE_FIELDS:
        if f in d:
            name = _s(d[f], f)
            if not _PROTO_NAME.fullmatch(name):
                raise HarvestError(f"VICI field {f}={name[:40]!r} is not a method name")
            out.append(name)
    return tuple(out)


def _parse_child(name: str, d: Mapping[str, Any]) -> ChildInfo:
    mode_s = _get(d, "mode").upper()
    if mode_s not in ("TUNNEL", "TRANSPORT"):
        raise HarvestError(f"CHILD_SA {name}: mode {mode_s[:32]!r} not supported (BEET?)")

    def ts_list(field: str) -> tuple[TrafficSelector, ...]:
        raw = d.get(field)
        if not isinstance(raw, list) or not raw:
            raise HarvestError(f"CHILD_SA {name}: {field} missing")
        if len(raw) > 255:  # a selector count is one byte in params_bytes
            raise HarvestError(f"CHILD_SA {name}: {field}: {len(raw)} selectors (at most 255)")
        try:
            return tuple(parse_ts(_s(t, field)) for t in raw)
        except HarvestError as exc:
            raise HarvestError(f"CHILD_SA {name}: {field}: {exc}") from None

    def spi(field: str) -> int:
        raw = _get(d, field)
        if not _HEX.fullmatch(raw):
            raise HarvestError(f"CHILD_SA {name}: {field}={raw[:40]!r} is not a 32-bit hex SPI")
        return int(raw, 16)

    return ChildInfo(
        name=_get(d, "name") if "name" in d else name,
        uniqueid=_int(d, "uniqueid"),
        reqid=_int(d, "reqid", 0),
        mode=Mode.TUNNEL if mode_s == "TUNNEL" else Mode.TRANSPORT,
        protocol=_get(d, "protocol").upper(),
        encap=_s(d.get("encap", b"no"), "encap") == "yes",
        spi_in=spi("spi-in"),
        spi_out=spi("spi-out"),
        local_ts=ts_list("local-ts"),
        remote_ts=ts_list("remote-ts"),
        bytes_in=_int(d, "bytes-in", 0),
        bytes_out=_int(d, "bytes-out", 0),
        install_time=_int(d, "install-time", 0),
    )


@dataclass(frozen=True)
class Unparsed:
    """An IKE_SA (``child`` empty) or CHILD_SA of a message that did not parse, and why."""

    ike: str
    child: str
    reason: str


def _port(d: Mapping[str, Any], field: str) -> int:
    v = _int(d, field, 500)
    if v > 65535:
        raise HarvestError(f"VICI field {field}={v} is not a UDP port")
    return v


def read_ike_sas(msg: Mapping[str, Any]) -> tuple[list[IkeInfo], list[Unparsed]]:
    """IKE_SAs in a list-sas / child-updown / ike-updown / child-rekey message, SA by SA.

    Those messages are ``{<ike name>: {...}}`` plus flags such as ``up``; every
    mapping-valued top-level entry is an IKE_SA.  An IKE_SA whose own fields do not parse,
    or a CHILD_SA that does not, is returned in the second list instead (the IKE_SA keeps
    its other children).
    """
    out: list[IkeInfo] = []
    bad: list[Unparsed] = []
    for ike_name, d in msg.items():
        if not isinstance(d, Mapping):
            continue
        name = str(ike_name)[:256]
        children: list[ChildInfo] = []
        children_raw = d.get("child-sas", {})
        try:
            if not isinstance(children_raw, Mapping):
                raise HarvestError(f"IKE_SA {name}: child-sas is not a section")
            for cname, c in children_raw.items():
                if not isinstance(c, Mapping):
                    continue
                try:
                    children.append(_parse_child(str(cname)[:256], c))
                except HarvestError as exc:
                    bad.append(Unparsed(name, str(cname)[:256], str(exc)))
            out.append(
                IkeInfo(
                    name=name,
                    uniqueid=_int(d, "uniqueid"),
                    local_host=_host(d, "local-host"),
                    remote_host=_host(d, "remote-host"),
                    local_port=_port(d, "local-port"),
                    remote_port=_port(d, "remote-port"),
                    local_id=_get(d, "local-id"),
                    remote_id=_get(d, "remote-id"),
                    initiator=_s(d.get("initiator", b"no"), "initiator") == "yes",
                    children=tuple(children),
                    ke_methods=_ke_methods(d),
                    ppk=_s(d.get("ppk", b"no"), "ppk") == "yes",
                )
            )
        except HarvestError as exc:
            bad.append(Unparsed(name, "", str(exc)))
    return out, bad


def parse_ike_sas(msg: Mapping[str, Any]) -> list[IkeInfo]:
    """:func:`read_ike_sas`, all or nothing: HarvestError for the first SA that does not parse."""
    out, bad = read_ike_sas(msg)
    if bad:
        where = f"IKE_SA {bad[0].ike}" + (f" CHILD_SA {bad[0].child}" if bad[0].child else "")
        raise HarvestError(f"{where}: {bad[0].reason}")
    return out
