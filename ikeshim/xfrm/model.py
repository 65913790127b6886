"""Value objects for kernel SAs and policies: selectors, lifetimes, algorithms, keys.

Plain frozen dataclasses, so the installer can build them without a socket and tests can
compare them; each knows how to pack itself into (and unpack from) its kernel struct.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass, field, replace

from ikeshim.errors import XfrmDecodeError
from ikeshim.xfrm.abi import (
    IPPROTO_ESP,
    LIFETIME_CFG,
    SELECTOR,
    UDP_ENCAP_ESPINUDP,
    USER_TMPL,
    XFRM_ID,
    XFRM_INF,
    XFRM_MODE_TRANSPORT,
    XFRM_POLICY_ALLOW,
)

# --- value objects ------------------------------------------------------------------------


def _family(addr: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET


def _pack_addr(addr: str | None) -> bytes:
    if not addr:
        return b"\0" * 16
    return ipaddress.ip_address(addr).packed.ljust(16, b"\0")


def _unpack_addr(raw: bytes, family: int) -> str:
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    if family == socket.AF_INET6:
        return str(ipaddress.IPv6Address(raw[:16]))
    if family == 0 and not any(raw):
        return ""
    raise XfrmDecodeError(f"unknown address family {family}")


_UNSPECIFIED = ("0.0.0.0", "::")  # noqa: S104 - addresses in kernel structs, not a bind


def _be16(v: int) -> bytes:
    return struct.pack("!H", v)


def _from_be16(b: bytes) -> int:
    return int(struct.unpack("!H", b)[0])


@dataclass(frozen=True)
class Selector:
    """xfrm_selector: which packets an SA or policy applies to (prefixes, proto, ports)."""

    family: int
    daddr: str = ""
    saddr: str = ""
    prefixlen_d: int = 0
    prefixlen_s: int = 0
    proto: int = 0
    dport: int = 0
    dport_mask: int = 0
    sport: int = 0
    sport_mask: int = 0
    ifindex: int = 0
    user: int = 0

    def __post_init__(self) -> None:
        # Canonical "any": an unspecified address with prefix length 0 is spelt "".
        if self.daddr in _UNSPECIFIED and self.prefixlen_d == 0:
            object.__setattr__(self, "daddr", "")
        if self.saddr in _UNSPECIFIED and self.prefixlen_s == 0:
            object.__setattr__(self, "saddr", "")

    def pack(self) -> bytes:
        return SELECTOR.pack(
            _pack_addr(self.daddr),
            _pack_addr(self.saddr),
            _be16(self.dport),
            _be16(self.dport_mask),
            _be16(self.sport),
            _be16(self.sport_mask),
            self.family,
            self.prefixlen_d,
            self.prefixlen_s,
            self.proto,
            self.ifindex,
            self.user,
        )

    @classmethod
    def unpack_untrusted(cls, raw: bytes) -> Selector:
        d, s, dp, dpm, sp, spm, fam, pd, ps, proto, ifindex, user = SELECTOR.unpack(raw)
        if fam not in (0, socket.AF_INET, socket.AF_INET6):
            raise XfrmDecodeError(f"selector with unknown family {fam}")
        # An all-zero /0 address means "any"; we spell it "" on both ways.
        daddr = _unpack_addr(d, fam) if fam and (pd or any(d)) else ""
        saddr = _unpack_addr(s, fam) if fam and (ps or any(s)) else ""
        return cls(
            family=fam,
            daddr=daddr,
            saddr=saddr,
            prefixlen_d=pd,
            prefixlen_s=ps,
            proto=proto,
            dport=_from_be16(dp),
            dport_mask=_from_be16(dpm),
            sport=_from_be16(sp),
            sport_mask=_from_be16(spm),
            ifindex=ifindex,
            user=user,
        )

    @classmethod
    def hosts(cls, src: str, dst: str, proto: int = 0) -> Selector:
        fam = _family(src)
        plen = 32 if fam == socket.AF_INET else 128
        return cls(fam, dst, src, plen, plen, proto)


#: Lifetimes in seconds at or above this mean "unlimited" (see LifetimeCfg.unpack).
MAX_SECONDS = 1 << 62


@dataclass(frozen=True)
class LifetimeCfg:
    """xfrm_lifetime_cfg; None = unlimited.

    The kernel spells "unlimited" differently per unit: byte and packet limits as XFRM_INF,
    second limits as 0.  XFRM_INF in a *seconds* field is read as a signed -1 by the expiry
    timer, which then hard-expires the SA on its first tick (a bug our UML test caught).
    """

    soft_bytes: int | None = None
    hard_bytes: int | None = None
    soft_packets: int | None = None
    hard_packets: int | None = None
    soft_add_seconds: int | None = None
    hard_add_seconds: int | None = None
    soft_use_seconds: int | None = None
    hard_use_seconds: int | None = None

    def __post_init__(self) -> None:
        for name in (
            "soft_add_seconds",
            "hard_add_seconds",
            "soft_use_seconds",
            "hard_use_seconds",
        ):
            v = getattr(self, name)
            if v is not None and not 0 < v < MAX_SECONDS:
                raise ValueError(f"{name} must be positive (None for unlimited)")
        for name in ("soft_bytes", "hard_bytes", "soft_packets", "hard_packets"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < XFRM_INF:
                raise ValueError(f"{name} out of range")

    def pack(self) -> bytes:
        return LIFETIME_CFG.pack(
            *(
                XFRM_INF if v is None else v
                for v in (self.soft_bytes, self.hard_bytes, self.soft_packets, self.hard_packets)
            ),
            *(
                0 if v is None else v
                for v in (
                    self.soft_add_seconds,
                    self.hard_add_seconds,
                    self.soft_use_seconds,
                    self.hard_use_seconds,
                )
            ),
        )

    @classmethod
    def unpack(cls, raw: bytes) -> LifetimeCfg:
        """From kernel bytes (any u64 values: ``ip xfrm state ... limit time-soft N`` takes
        what it is given).  Seconds: 0 is unlimited; so is anything from 2^62 on -- the
        timer reads 2^63 and more as negative, and 2^62 s is 146 billion years, which
        ``__post_init__`` refuses to encode so that no arithmetic near the top can wrap."""
        vals = LIFETIME_CFG.unpack(raw)
        counts = [None if v == XFRM_INF else v for v in vals[:4]]
        secs = [None if v == 0 or v >= MAX_SECONDS else v for v in vals[4:]]
        return cls(*counts, *secs)


@dataclass(frozen=True)
class LifetimeCur:
    """xfrm_lifetime_cur: what the SA has carried so far (read-only, from dumps)."""

    bytes: int = 0
    packets: int = 0
    add_time: int = 0
    use_time: int = 0


@dataclass(frozen=True)
class Algo:
    """A kernel crypto algorithm with its key.  ``extra_bits`` is the ICV (AEAD) or
    truncation (auth) length; None for plain encryption."""

    name: str
    key: bytes = field(repr=False)
    extra_bits: int | None = None


@dataclass(frozen=True)
class Encap:
    """xfrm_encap_tmpl: NAT-T UDP encapsulation (RFC 3948)."""

    sport: int
    dport: int
    type: int = UDP_ENCAP_ESPINUDP
    oa: str = ""


@dataclass(frozen=True)
class Mark:
    value: int
    mask: int = 0xFFFFFFFF


@dataclass(frozen=True)
class XfrmState:
    """One SA as the kernel sees it (xfrm_usersa_info + attributes)."""

    src: str
    dst: str
    spi: int
    proto: int = IPPROTO_ESP
    mode: int = XFRM_MODE_TRANSPORT
    reqid: int = 0
    replay_window: int = 0
    flags: int = 0
    selector: Selector | None = None
    crypt: Algo | None = None
    auth: Algo | None = None
    aead: Algo | None = None
    encap: Encap | None = None
    lifetime: LifetimeCfg = LifetimeCfg()
    mark: Mark | None = None
    if_id: int | None = None
    esn: bool = False
    seq: int = 0
    # Read-only fields filled by the kernel in dumps.
    curlft: LifetimeCur = LifetimeCur()
    stats_replay_window: int = 0

    @property
    def family(self) -> int:
        return _family(self.dst)

    def key(self) -> SAKey:
        return SAKey(self.dst, self.spi, self.proto, self.mark)


@dataclass(frozen=True)
class SAKey:
    """What identifies an SA to the kernel: destination, SPI, protocol (and its mark)."""

    dst: str
    spi: int
    proto: int = IPPROTO_ESP
    mark: Mark | None = None


@dataclass(frozen=True)
class Template:
    """xfrm_user_tmpl: which SA a policy requires (matched by proto, mode, reqid, addrs)."""

    family: int
    mode: int
    reqid: int = 0
    dst: str = ""
    src: str = ""
    spi: int = 0
    proto: int = IPPROTO_ESP
    share: int = 0
    optional: int = 0
    aalgos: int = 0xFFFFFFFF
    ealgos: int = 0xFFFFFFFF
    calgos: int = 0xFFFFFFFF

    def __post_init__(self) -> None:
        for name in ("dst", "src"):
            if getattr(self, name) in _UNSPECIFIED:
                object.__setattr__(self, name, "")

    def pack(self) -> bytes:
        return USER_TMPL.pack(
            XFRM_ID.pack(_pack_addr(self.dst), struct.pack("!I", self.spi), self.proto),
            self.family,
            _pack_addr(self.src),
            self.reqid,
            self.mode,
            self.share,
            self.optional,
            self.aalgos,
            self.ealgos,
            self.calgos,
        )

    @classmethod
    def unpack_untrusted(cls, raw: bytes) -> Template:
        xid, fam, saddr, reqid, mode, share, optional, aal, eal, cal = USER_TMPL.unpack(raw)
        daddr, spi, proto = XFRM_ID.unpack(xid)
        if fam not in (socket.AF_INET, socket.AF_INET6):
            raise XfrmDecodeError(f"template with unknown family {fam}")
        dst = _unpack_addr(daddr, fam)
        src = _unpack_addr(saddr, fam)
        unspecified = _UNSPECIFIED
        return cls(
            family=fam,
            mode=mode,
            reqid=reqid,
            dst="" if dst in unspecified else dst,
            src="" if src in unspecified else src,
            spi=struct.unpack("!I", spi)[0],
            proto=proto,
            share=share,
            optional=optional,
            aalgos=aal,
            ealgos=eal,
            calgos=cal,
        )


@dataclass(frozen=True)
class XfrmPolicy:
    """One policy (xfrm_userpolicy_info + templates and attributes)."""

    selector: Selector
    dir: int
    action: int = XFRM_POLICY_ALLOW
    priority: int = 0
    index: int = 0
    flags: int = 0
    share: int = 0
    templates: tuple[Template, ...] = ()
    lifetime: LifetimeCfg = LifetimeCfg()
    mark: Mark | None = None
    if_id: int | None = None
    curlft: LifetimeCur = LifetimeCur()

    def key(self) -> PolicyKey:
        return PolicyKey(self.selector, self.dir, self.mark, self.if_id)


@dataclass(frozen=True)
class PolicyKey:
    selector: Selector
    dir: int
    mark: Mark | None = None
    if_id: int | None = None


def with_lifetime(sa: XfrmState, lifetime: LifetimeCfg) -> XfrmState:
    return replace(sa, lifetime=lifetime)
