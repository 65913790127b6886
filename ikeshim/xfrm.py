"""Our XFRM netlink client: SAs and policies in the Linux kernel, encoded with ``struct``.

The kernel's layout (linux/xfrm.h, x86-64 and every other 64-bit ABI we run on) is written
out field by field below; ``tests/ikeshim`` checks it against a real kernel in User-Mode
Linux by adding objects and comparing a dump field by field.

Objects are plain frozen dataclasses (:class:`XfrmState`, :class:`XfrmPolicy`), so the
installer can build them without a socket and tests can compare them.  Two sockets share one
sans-I/O request engine (:class:`ikeshim.netlink.Exchange`): :class:`XfrmSocket` (blocking,
for CLIs and threads) and :class:`AsyncXfrmSocket` (trio, non-blocking first, awaiting
readability only when the kernel has not answered yet).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import itertools
import os
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ikeshim import netlink as nl
from ikeshim.errors import XfrmDecodeError, XfrmError, XfrmNotFoundError

# --- constants (linux/xfrm.h) -------------------------------------------------------------

XFRM_MSG_NEWSA = 0x10
XFRM_MSG_DELSA = 0x11
XFRM_MSG_GETSA = 0x12
XFRM_MSG_NEWPOLICY = 0x13
XFRM_MSG_DELPOLICY = 0x14
XFRM_MSG_GETPOLICY = 0x15
XFRM_MSG_ALLOCSPI = 0x16
XFRM_MSG_ACQUIRE = 0x17
XFRM_MSG_EXPIRE = 0x18
XFRM_MSG_UPDPOLICY = 0x19
XFRM_MSG_UPDSA = 0x1A
XFRM_MSG_POLEXPIRE = 0x1B
XFRM_MSG_FLUSHSA = 0x1C
XFRM_MSG_FLUSHPOLICY = 0x1D

XFRMA_ALG_AUTH = 1
XFRMA_ALG_CRYPT = 2
XFRMA_ALG_COMP = 3
XFRMA_ENCAP = 4
XFRMA_TMPL = 5
XFRMA_SA = 6
XFRMA_POLICY = 7
XFRMA_LTIME_VAL = 9
XFRMA_REPLAY_VAL = 10
XFRMA_SRCADDR = 13
XFRMA_LASTUSED = 15
XFRMA_POLICY_TYPE = 16
XFRMA_ALG_AEAD = 18
XFRMA_ALG_AUTH_TRUNC = 20
XFRMA_MARK = 21
XFRMA_REPLAY_ESN_VAL = 23
XFRMA_SA_EXTRA_FLAGS = 24
XFRMA_PAD = 27
XFRMA_IF_ID = 31

XFRMNLGRP_ACQUIRE = 1
XFRMNLGRP_EXPIRE = 2
XFRMNLGRP_SA = 3
XFRMNLGRP_POLICY = 4

XFRM_MODE_TRANSPORT = 0
XFRM_MODE_TUNNEL = 1

XFRM_POLICY_IN = 0
XFRM_POLICY_OUT = 1
XFRM_POLICY_FWD = 2
XFRM_POLICY_ALLOW = 0
XFRM_POLICY_BLOCK = 1

XFRM_STATE_ESN = 128
XFRM_INF = 0xFFFFFFFFFFFFFFFF
UDP_ENCAP_ESPINUDP = 2
IPPROTO_ESP = 50
IPPROTO_AH = 51

# Kernel limit of the legacy 32-bit replay bitmap; larger windows need XFRMA_REPLAY_ESN_VAL.
LEGACY_REPLAY_MAX = 32

# --- struct layouts -------------------------------------------------------------------------

# xfrm_selector: daddr, saddr, dport, dport_mask, sport, sport_mask (network order, packed
# here as raw 2-byte fields), family, prefixlen_d, prefixlen_s, proto, pad, ifindex, user.
SELECTOR = struct.Struct("=16s16s2s2s2s2sHBBB3xiI")
LIFETIME_CFG = struct.Struct("=8Q")
LIFETIME_CUR = struct.Struct("=4Q")
XFRM_ID = struct.Struct("=16s4sB3x")
STATS = struct.Struct("=3I")
# xfrm_usersa_info: sel, id, saddr, lft, curlft, stats, seq, reqid, family, mode,
# replay_window, flags, pad to 224.
USERSA_INFO = struct.Struct("=56s24s16s64s32s12sIIHBBB7x")
USERSA_ID = struct.Struct("=16s4sHB1x")
# xfrm_userpolicy_info: sel, lft, curlft, priority, index, dir, action, flags, share, pad.
USERPOLICY_INFO = struct.Struct("=56s64s32sIIBBBB4x")
USERPOLICY_ID = struct.Struct("=56sIB3x")
# xfrm_user_tmpl: id, family, pad, saddr, reqid, mode, share, optional, pad, aalgos, ealgos,
# calgos.
USER_TMPL = struct.Struct("=24sH2x16sIBBBx3I")
ALGO = struct.Struct("=64sI")
ALGO_AUTH = struct.Struct("=64sII")
ALGO_AEAD = struct.Struct("=64sII")
ENCAP_TMPL = struct.Struct("=H2s2s2x16s")
REPLAY_ESN = struct.Struct("=6I")
REPLAY_LEGACY = struct.Struct("=3I")
MARK = struct.Struct("=II")
U32 = struct.Struct("=I")
USER_EXPIRE = struct.Struct("=224sB7x")
USER_POLEXPIRE = struct.Struct("=168sB7x")

assert SELECTOR.size == 56 and USERSA_INFO.size == 224 and USERPOLICY_INFO.size == 168  # noqa: S101
assert USER_TMPL.size == 64 and ENCAP_TMPL.size == 24 and USERSA_ID.size == 24  # noqa: S101
assert USERPOLICY_ID.size == 64  # noqa: S101


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
            if v is not None and not 0 < v < 1 << 62:
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
        vals = LIFETIME_CFG.unpack(raw)
        counts = [None if v == XFRM_INF else v for v in vals[:4]]
        # Seconds: 0 is unlimited; so is anything the timer would read as negative.
        secs = [None if v == 0 or v >= 1 << 63 else v for v in vals[4:]]
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


# --- encoding -------------------------------------------------------------------------------


def _algo_attr(attr: int, algo: Algo) -> bytes:
    name = algo.name.encode()
    if len(name) >= 64:
        raise ValueError(f"algorithm name too long: {algo.name}")
    bits = len(algo.key) * 8
    if attr == XFRMA_ALG_CRYPT:
        return nl.encode_attr(attr, ALGO.pack(name, bits) + algo.key)
    if algo.extra_bits is None:
        raise ValueError(f"{algo.name} needs an ICV/truncation length")
    return nl.encode_attr(attr, ALGO_AEAD.pack(name, bits, algo.extra_bits) + algo.key)


def _common_attrs(mark: Mark | None, if_id: int | None) -> bytes:
    out = b""
    if mark is not None:
        out += nl.encode_attr(XFRMA_MARK, MARK.pack(mark.value, mark.mask))
    if if_id is not None:
        out += nl.encode_attr(XFRMA_IF_ID, U32.pack(if_id))
    return out


def encode_state(sa: XfrmState) -> bytes:
    """Payload of XFRM_MSG_NEWSA/UPDSA for ``sa``."""
    fam = sa.family
    if _family(sa.src) != fam:
        raise ValueError("SA source and destination are of different families")
    sel = sa.selector or Selector(fam)
    use_esn_attr = sa.esn or sa.replay_window > LEGACY_REPLAY_MAX
    if use_esn_attr and sa.proto != IPPROTO_ESP:
        raise ValueError("replay windows above 32 and ESN need ESP")
    flags = sa.flags | (XFRM_STATE_ESN if sa.esn else 0)
    info = USERSA_INFO.pack(
        sel.pack(),
        XFRM_ID.pack(_pack_addr(sa.dst), struct.pack("!I", sa.spi), sa.proto),
        _pack_addr(sa.src),
        sa.lifetime.pack(),
        b"\0" * LIFETIME_CUR.size,
        b"\0" * STATS.size,
        sa.seq,
        sa.reqid,
        fam,
        sa.mode,
        0 if use_esn_attr else sa.replay_window,
        flags,
    )
    attrs = b""
    if sa.aead is not None:
        if sa.crypt is not None or sa.auth is not None:
            raise ValueError("an AEAD SA has no separate encryption or integrity algorithm")
        attrs += _algo_attr(XFRMA_ALG_AEAD, sa.aead)
    if sa.crypt is not None:
        attrs += _algo_attr(XFRMA_ALG_CRYPT, sa.crypt)
    if sa.auth is not None:
        attrs += _algo_attr(XFRMA_ALG_AUTH_TRUNC, sa.auth)
    if sa.encap is not None:
        e = sa.encap
        attrs += nl.encode_attr(
            XFRMA_ENCAP, ENCAP_TMPL.pack(e.type, _be16(e.sport), _be16(e.dport), _pack_addr(e.oa))
        )
    if use_esn_attr:
        bmp_len = max(1, (sa.replay_window + 31) // 32)
        attrs += nl.encode_attr(
            XFRMA_REPLAY_ESN_VAL,
            REPLAY_ESN.pack(bmp_len, 0, 0, 0, 0, sa.replay_window) + b"\0" * (4 * bmp_len),
        )
    attrs += _common_attrs(sa.mark, sa.if_id)
    return info + attrs


def encode_sa_id(key: SAKey) -> bytes:
    payload = USERSA_ID.pack(
        _pack_addr(key.dst), struct.pack("!I", key.spi), _family(key.dst), key.proto
    )
    return payload + _common_attrs(key.mark, None)


def encode_policy(pol: XfrmPolicy) -> bytes:
    info = USERPOLICY_INFO.pack(
        pol.selector.pack(),
        pol.lifetime.pack(),
        b"\0" * LIFETIME_CUR.size,
        pol.priority,
        pol.index,
        pol.dir,
        pol.action,
        pol.flags,
        pol.share,
    )
    attrs = b""
    if pol.templates:
        attrs += nl.encode_attr(XFRMA_TMPL, b"".join(t.pack() for t in pol.templates))
    attrs += _common_attrs(pol.mark, pol.if_id)
    return info + attrs


def encode_policy_id(key: PolicyKey) -> bytes:
    return USERPOLICY_ID.pack(key.selector.pack(), 0, key.dir) + _common_attrs(key.mark, key.if_id)


# --- decoding -------------------------------------------------------------------------------


def _decode_algo_untrusted(value: bytes, with_extra: bool) -> Algo:
    st = ALGO_AEAD if with_extra else ALGO
    if len(value) < st.size:
        raise XfrmDecodeError("truncated algorithm attribute")
    fields_ = st.unpack_from(value, 0)
    raw_name, bits = fields_[0], fields_[1]
    nbytes = (bits + 7) // 8
    if len(value) < st.size + nbytes:
        raise XfrmDecodeError("algorithm key shorter than its declared length")
    try:
        name = raw_name.split(b"\0", 1)[0].decode("ascii")
    except UnicodeDecodeError as exc:
        raise XfrmDecodeError("non-ASCII algorithm name") from exc
    return Algo(name, value[st.size : st.size + nbytes], fields_[2] if with_extra else None)


def _decode_mark_untrusted(value: bytes) -> Mark:
    if len(value) < MARK.size:
        raise XfrmDecodeError("truncated XFRMA_MARK")
    v, m = MARK.unpack_from(value, 0)
    return Mark(v, m)


def _decode_u32_untrusted(value: bytes, what: str) -> int:
    if len(value) < U32.size:
        raise XfrmDecodeError(f"truncated {what}")
    return int(U32.unpack_from(value, 0)[0])


def decode_state_untrusted(payload: bytes) -> XfrmState:
    """Parse an XFRM_MSG_NEWSA payload (a dump entry, a GET reply or an SA event)."""
    if len(payload) < USERSA_INFO.size:
        raise XfrmDecodeError("truncated xfrm_usersa_info")
    sel, xid, saddr, lft, cur, stats, seq, reqid, fam, mode, rwin, flags = USERSA_INFO.unpack_from(
        payload, 0
    )
    if fam not in (socket.AF_INET, socket.AF_INET6):
        raise XfrmDecodeError(f"SA with unknown family {fam}")
    daddr, spi, proto = XFRM_ID.unpack(xid)
    cur_bytes, cur_packets, add_time, use_time = LIFETIME_CUR.unpack(cur)
    crypt = auth = aead = None
    encap = None
    mark = None
    if_id = None
    esn_window: int | None = None
    for atype, value in nl.iter_attrs_untrusted(payload, USERSA_INFO.size):
        if atype == XFRMA_ALG_CRYPT:
            crypt = _decode_algo_untrusted(value, False)
        elif atype == XFRMA_ALG_AUTH_TRUNC:
            auth = _decode_algo_untrusted(value, True)
        elif atype == XFRMA_ALG_AUTH and auth is None:
            a = _decode_algo_untrusted(value, False)
            auth = Algo(a.name, a.key, None)
        elif atype == XFRMA_ALG_AEAD:
            aead = _decode_algo_untrusted(value, True)
        elif atype == XFRMA_ENCAP:
            if len(value) < ENCAP_TMPL.size:
                raise XfrmDecodeError("truncated XFRMA_ENCAP")
            et, sp, dp, oa = ENCAP_TMPL.unpack_from(value, 0)
            oa_s = _unpack_addr(oa, fam)
            encap = Encap(_from_be16(sp), _from_be16(dp), et, "" if oa_s in _UNSPECIFIED else oa_s)
        elif atype == XFRMA_REPLAY_ESN_VAL:
            if len(value) < REPLAY_ESN.size:
                raise XfrmDecodeError("truncated XFRMA_REPLAY_ESN_VAL")
            esn_window = int(REPLAY_ESN.unpack_from(value, 0)[5])
        elif atype == XFRMA_MARK:
            mark = _decode_mark_untrusted(value)
        elif atype == XFRMA_IF_ID:
            if_id = _decode_u32_untrusted(value, "XFRMA_IF_ID")
    return XfrmState(
        src=_unpack_addr(saddr, fam),
        dst=_unpack_addr(daddr, fam),
        spi=struct.unpack("!I", spi)[0],
        proto=proto,
        mode=mode,
        reqid=reqid,
        replay_window=esn_window if esn_window is not None else rwin,
        flags=flags & ~XFRM_STATE_ESN,
        selector=Selector.unpack_untrusted(sel),
        crypt=crypt,
        auth=auth,
        aead=aead,
        encap=encap,
        lifetime=LifetimeCfg.unpack(lft),
        mark=mark,
        if_id=if_id,
        esn=bool(flags & XFRM_STATE_ESN),
        seq=seq,
        curlft=LifetimeCur(cur_bytes, cur_packets, add_time, use_time),
        stats_replay_window=STATS.unpack(stats)[0],
    )


def decode_policy_untrusted(payload: bytes) -> XfrmPolicy:
    """Parse an XFRM_MSG_NEWPOLICY payload (dump entry, GET reply or policy event)."""
    if len(payload) < USERPOLICY_INFO.size:
        raise XfrmDecodeError("truncated xfrm_userpolicy_info")
    sel, lft, cur, prio, index, pdir, action, flags, share = USERPOLICY_INFO.unpack_from(payload, 0)
    templates: list[Template] = []
    mark = None
    if_id = None
    for atype, value in nl.iter_attrs_untrusted(payload, USERPOLICY_INFO.size):
        if atype == XFRMA_TMPL:
            if len(value) % USER_TMPL.size:
                raise XfrmDecodeError("XFRMA_TMPL is not a whole number of templates")
            for off in range(0, len(value), USER_TMPL.size):
                templates.append(Template.unpack_untrusted(value[off : off + USER_TMPL.size]))
        elif atype == XFRMA_MARK:
            mark = _decode_mark_untrusted(value)
        elif atype == XFRMA_IF_ID:
            if_id = _decode_u32_untrusted(value, "XFRMA_IF_ID")
    return XfrmPolicy(
        selector=Selector.unpack_untrusted(sel),
        dir=pdir,
        action=action,
        priority=prio,
        index=index,
        flags=flags,
        share=share,
        templates=tuple(templates),
        lifetime=LifetimeCfg.unpack(lft),
        mark=mark,
        if_id=if_id,
        curlft=LifetimeCur(*LIFETIME_CUR.unpack(cur)),
    )


def decode_sa_id_untrusted(payload: bytes) -> SAKey:
    if len(payload) < USERSA_ID.size:
        raise XfrmDecodeError("truncated xfrm_usersa_id")
    daddr, spi, fam, proto = USERSA_ID.unpack_from(payload, 0)
    return SAKey(_unpack_addr(daddr, fam), struct.unpack("!I", spi)[0], proto)


# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SAEvent:
    """An SA was added/updated (``kind`` "new"/"update") or deleted ("delete")."""

    kind: str
    state: XfrmState | None
    key: SAKey


@dataclass(frozen=True)
class SAExpireEvent:
    """The kernel reached a soft (``hard`` False) or hard lifetime limit of an SA."""

    state: XfrmState
    hard: bool


@dataclass(frozen=True)
class PolicyEvent:
    kind: str  # "new", "update", "delete", "expire"
    policy: XfrmPolicy | None
    hard: bool = False


@dataclass(frozen=True)
class OtherEvent:
    type: int


XfrmEvent = SAEvent | SAExpireEvent | PolicyEvent | OtherEvent


def decode_event_untrusted(msg: nl.NetlinkMessage) -> XfrmEvent:
    """Decode one multicast message; raises XfrmDecodeError only."""
    t = msg.type
    p = msg.payload
    if t in (XFRM_MSG_NEWSA, XFRM_MSG_UPDSA):
        st = decode_state_untrusted(p)
        return SAEvent("new" if t == XFRM_MSG_NEWSA else "update", st, st.key())
    if t == XFRM_MSG_DELSA:
        # The kernel sends xfrm_usersa_id followed by an XFRMA_SA attribute with the state.
        key = decode_sa_id_untrusted(p)
        state = None
        for atype, value in nl.iter_attrs_untrusted(p, USERSA_ID.size):
            if atype == XFRMA_SA:
                state = decode_state_untrusted(value)
        return SAEvent("delete", state, key)
    if t == XFRM_MSG_EXPIRE:
        if len(p) < USER_EXPIRE.size:
            raise XfrmDecodeError("truncated xfrm_user_expire")
        raw_state, hard = USER_EXPIRE.unpack_from(p, 0)
        return SAExpireEvent(decode_state_untrusted(raw_state + p[USER_EXPIRE.size :]), bool(hard))
    if t in (XFRM_MSG_NEWPOLICY, XFRM_MSG_UPDPOLICY):
        return PolicyEvent(
            "new" if t == XFRM_MSG_NEWPOLICY else "update", decode_policy_untrusted(p)
        )
    if t == XFRM_MSG_DELPOLICY:
        # xfrm_userpolicy_id followed by XFRMA_POLICY holding the policy.
        if len(p) < USERPOLICY_ID.size:
            raise XfrmDecodeError("truncated xfrm_userpolicy_id")
        pol: XfrmPolicy | None = None
        for atype, value in nl.iter_attrs_untrusted(p, USERPOLICY_ID.size):
            if atype == XFRMA_POLICY:
                pol = decode_policy_untrusted(value)
        return PolicyEvent("delete", pol)
    if t == XFRM_MSG_POLEXPIRE:
        if len(p) < USER_POLEXPIRE.size:
            raise XfrmDecodeError("truncated xfrm_user_polexpire")
        raw_pol, hard = USER_POLEXPIRE.unpack_from(p, 0)
        return PolicyEvent("expire", decode_policy_untrusted(raw_pol), bool(hard))
    return OtherEvent(t)


# --- sockets --------------------------------------------------------------------------------

RECV_BUFSIZE = 1 << 20


def _open_socket(groups: Iterable[int], blocking: bool) -> socket.socket:
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_XFRM)
    except OSError as exc:
        raise XfrmError(
            "open socket", exc.errno or 0, f"cannot open a NETLINK_XFRM socket: {exc}"
        ) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        for opt in (nl.NETLINK_CAP_ACK, nl.NETLINK_EXT_ACK):
            # Old kernels lack these: errors then come without the kernel's message.
            with contextlib.suppress(OSError):
                sock.setsockopt(nl.SOL_NETLINK, opt, 1)
        sock.bind((0, 0))
        for g in groups:
            try:
                sock.setsockopt(nl.SOL_NETLINK, nl.NETLINK_ADD_MEMBERSHIP, g)
            except OSError as exc:
                raise XfrmError(
                    "subscribe", exc.errno or 0, f"cannot join XFRM group {g}: {exc}"
                ) from exc
        sock.setblocking(blocking)
    except BaseException:
        sock.close()
        raise
    return sock


class _RequestBuilder:
    """Shared request construction (sequence numbers, flags, op names)."""

    def __init__(self) -> None:
        self._seq = itertools.count(int.from_bytes(os.urandom(2), "big") + 1)

    def build(
        self,
        op: str,
        msg_type: int,
        payload: bytes,
        *,
        dump: bool = False,
        get: bool = False,
        create_flags: int = 0,
    ) -> tuple[bytes, nl.Exchange]:
        seq = next(self._seq) & 0xFFFFFFFF
        flags = nl.NLM_F_REQUEST | create_flags
        if dump:
            flags |= nl.NLM_F_DUMP
        elif not get:
            flags |= nl.NLM_F_ACK
        data = nl.encode_message(msg_type, flags, seq, payload)
        return data, nl.Exchange(op, seq, dump=dump, expect_reply=get)


class XfrmOps:
    """The XFRM operations, written once over an abstract ``_run(request) -> replies``."""

    def _run(self, data: bytes, ex: nl.Exchange) -> list[nl.NetlinkMessage]:
        raise NotImplementedError

    _rb: _RequestBuilder

    def add_sa(self, sa: XfrmState, *, update: bool = False) -> None:
        """Add (EEXIST if present) or, with ``update``, replace an SA."""
        mtype = XFRM_MSG_UPDSA if update else XFRM_MSG_NEWSA
        op = "update SA" if update else "add SA"
        self._run(*self._rb.build(op, mtype, encode_state(sa)))

    def update_sa(self, sa: XfrmState) -> None:
        self.add_sa(sa, update=True)

    def delete_sa(self, key: SAKey) -> None:
        self._run(*self._rb.build("delete SA", XFRM_MSG_DELSA, encode_sa_id(key)))

    def get_sa(self, key: SAKey) -> XfrmState:
        msgs = self._run(*self._rb.build("get SA", XFRM_MSG_GETSA, encode_sa_id(key), get=True))
        st: XfrmState = _single(msgs, XFRM_MSG_NEWSA, decode_state_untrusted, "get SA")
        return st

    def dump_sas(self) -> list[XfrmState]:
        msgs = self._run(*self._rb.build("dump SAs", XFRM_MSG_GETSA, b"", dump=True))
        return [decode_state_untrusted(m.payload) for m in msgs if m.type == XFRM_MSG_NEWSA]

    def flush_sas(self, proto: int = IPPROTO_ESP) -> None:
        self._run(*self._rb.build("flush SAs", XFRM_MSG_FLUSHSA, struct.pack("=B3x", proto)))

    def add_policy(self, pol: XfrmPolicy, *, update: bool = False) -> None:
        mtype = XFRM_MSG_UPDPOLICY if update else XFRM_MSG_NEWPOLICY
        op = "update policy" if update else "add policy"
        self._run(*self._rb.build(op, mtype, encode_policy(pol)))

    def update_policy(self, pol: XfrmPolicy) -> None:
        self.add_policy(pol, update=True)

    def delete_policy(self, key: PolicyKey) -> None:
        self._run(*self._rb.build("delete policy", XFRM_MSG_DELPOLICY, encode_policy_id(key)))

    def get_policy(self, key: PolicyKey) -> XfrmPolicy:
        msgs = self._run(
            *self._rb.build("get policy", XFRM_MSG_GETPOLICY, encode_policy_id(key), get=True)
        )
        pol: XfrmPolicy = _single(msgs, XFRM_MSG_NEWPOLICY, decode_policy_untrusted, "get policy")
        return pol

    def find_policy(self, key: PolicyKey) -> XfrmPolicy | None:
        try:
            return self.get_policy(key)
        except XfrmNotFoundError:
            return None

    def dump_policies(self) -> list[XfrmPolicy]:
        msgs = self._run(*self._rb.build("dump policies", XFRM_MSG_GETPOLICY, b"", dump=True))
        return [decode_policy_untrusted(m.payload) for m in msgs if m.type == XFRM_MSG_NEWPOLICY]

    def flush_policies(self) -> None:
        self._run(*self._rb.build("flush policies", XFRM_MSG_FLUSHPOLICY, b""))


def _single(
    msgs: Sequence[nl.NetlinkMessage],
    mtype: int,
    decode: Callable[[bytes], Any],
    op: str,
) -> Any:
    for m in msgs:
        if m.type == mtype:
            return decode(m.payload)
    raise XfrmDecodeError(f"{op}: no reply of the expected type")


class XfrmSocket(XfrmOps):
    """Blocking XFRM client (one request at a time).  Use as a context manager.

    ``timeout`` bounds how long one request waits for the kernel (which answers in
    microseconds unless something is badly wrong).
    """

    def __init__(self, *, timeout: float = 5.0) -> None:
        self._sock = _open_socket((), blocking=True)
        self._sock.settimeout(timeout)
        self._buf = bytearray(RECV_BUFSIZE)
        self._rb = _RequestBuilder()
        self.last_exchange: nl.Exchange | None = None

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> XfrmSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def _run(self, data: bytes, ex: nl.Exchange) -> list[nl.NetlinkMessage]:
        self.last_exchange = ex  # for diagnostics: datagrams a dump took
        try:
            self._sock.sendto(data, (0, 0))
            while not ex.done:
                n = self._sock.recv_into(self._buf)
                ex.feed_untrusted(memoryview(self._buf)[:n])
        except TimeoutError as exc:
            raise XfrmError(ex.op, errno.ETIMEDOUT, "no reply from the kernel") from exc
        except OSError as exc:
            raise XfrmError(ex.op, exc.errno or 0, str(exc)) from exc
        return ex.messages


class AsyncXfrmSocket:
    """trio XFRM client: the same operations, awaited.

    Tries the non-blocking receive first and awaits readability only when the kernel has not
    answered yet (netlink answers synchronously, so most requests never park in trio).
    """

    def __init__(self) -> None:
        self._sock = _open_socket((), blocking=False)
        self._buf = bytearray(RECV_BUFSIZE)
        self._rb = _RequestBuilder()
        import trio

        self._lock = trio.Lock()

    def close(self) -> None:
        self._sock.close()

    async def __aenter__(self) -> AsyncXfrmSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def _run(self, data: bytes, ex: nl.Exchange) -> list[nl.NetlinkMessage]:
        import trio

        async with self._lock:
            try:
                self._sock.sendto(data, (0, 0))
                while not ex.done:
                    try:
                        n = self._sock.recv_into(self._buf)
                    except BlockingIOError:
                        await trio.lowlevel.wait_readable(self._sock)
                        continue
                    ex.feed_untrusted(memoryview(self._buf)[:n])
            except OSError as exc:
                raise XfrmError(ex.op, exc.errno or 0, str(exc)) from exc
        return ex.messages

    async def add_sa(self, sa: XfrmState, *, update: bool = False) -> None:
        mtype = XFRM_MSG_UPDSA if update else XFRM_MSG_NEWSA
        await self._run(
            *self._rb.build("update SA" if update else "add SA", mtype, encode_state(sa))
        )

    async def delete_sa(self, key: SAKey) -> None:
        await self._run(*self._rb.build("delete SA", XFRM_MSG_DELSA, encode_sa_id(key)))

    async def get_sa(self, key: SAKey) -> XfrmState:
        msgs = await self._run(
            *self._rb.build("get SA", XFRM_MSG_GETSA, encode_sa_id(key), get=True)
        )
        st: XfrmState = _single(msgs, XFRM_MSG_NEWSA, decode_state_untrusted, "get SA")
        return st

    async def dump_sas(self) -> list[XfrmState]:
        msgs = await self._run(*self._rb.build("dump SAs", XFRM_MSG_GETSA, b"", dump=True))
        return [decode_state_untrusted(m.payload) for m in msgs if m.type == XFRM_MSG_NEWSA]

    async def add_policy(self, pol: XfrmPolicy, *, update: bool = False) -> None:
        mtype = XFRM_MSG_UPDPOLICY if update else XFRM_MSG_NEWPOLICY
        await self._run(
            *self._rb.build("update policy" if update else "add policy", mtype, encode_policy(pol))
        )

    async def delete_policy(self, key: PolicyKey) -> None:
        await self._run(*self._rb.build("delete policy", XFRM_MSG_DELPOLICY, encode_policy_id(key)))

    async def dump_policies(self) -> list[XfrmPolicy]:
        msgs = await self._run(*self._rb.build("dump policies", XFRM_MSG_GETPOLICY, b"", dump=True))
        return [decode_policy_untrusted(m.payload) for m in msgs if m.type == XFRM_MSG_NEWPOLICY]


class XfrmEventSocket:
    """Subscription to XFRM multicast groups (SA, policy, expire by default).

    ``receive_untrusted`` returns the events of one datagram; with ``blocking`` False it
    returns [] when nothing is pending (for trio: await ``wait_readable`` on :meth:`fileno`,
    see :meth:`next_events`).  Undecodable messages raise :class:`XfrmDecodeError`.
    """

    DEFAULT_GROUPS = (XFRMNLGRP_SA, XFRMNLGRP_POLICY, XFRMNLGRP_EXPIRE)

    def __init__(self, groups: Iterable[int] = DEFAULT_GROUPS, *, blocking: bool = False) -> None:
        self._sock = _open_socket(groups, blocking=blocking)
        self._buf = bytearray(RECV_BUFSIZE)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> XfrmEventSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def receive_untrusted(self) -> list[XfrmEvent]:
        try:
            n = self._sock.recv_into(self._buf)
        except BlockingIOError:
            return []
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                raise XfrmError(
                    "receive events",
                    exc.errno,
                    "event queue overflowed; events were lost, resynchronise with a dump",
                ) from exc
            raise XfrmError("receive events", exc.errno or 0, str(exc)) from exc
        return [
            decode_event_untrusted(m)
            for m in nl.parse_messages_untrusted(memoryview(self._buf)[:n])
            if m.type >= 0x10
        ]

    async def next_events(self) -> list[XfrmEvent]:
        """trio: wait until at least one event arrives and return them."""
        import trio

        while True:
            events = self.receive_untrusted()
            if events:
                return events
            await trio.lowlevel.wait_readable(self._sock)


def with_lifetime(sa: XfrmState, lifetime: LifetimeCfg) -> XfrmState:
    return replace(sa, lifetime=lifetime)


IP_XFRM_POLICY = 17
IPV6_XFRM_POLICY = 35


def bypass_socket(sock: socket.socket) -> None:
    """Exempt one socket's traffic from IPsec policies (as charon does for its IKE sockets).

    Why: the host-to-host policies a resumption installs match every packet between the two
    peers, resumption datagrams included.  When those SAs expire (their hard lifetime is the
    cache policy's remaining budget) the policies stay and drop the next resumption attempt,
    its NACK included.  A per-socket ALLOW policy in both directions keeps the resumption
    channel in clear, as the IKE channel is.  Needs CAP_NET_ADMIN.
    """
    if sock.family == socket.AF_INET6:
        level, opt = socket.IPPROTO_IPV6, IPV6_XFRM_POLICY
    elif sock.family == socket.AF_INET:
        level, opt = socket.IPPROTO_IP, IP_XFRM_POLICY
    else:
        raise ValueError("bypass_socket needs an IPv4 or IPv6 socket")
    for direction in (XFRM_POLICY_IN, XFRM_POLICY_OUT):
        info = USERPOLICY_INFO.pack(
            Selector(sock.family).pack(),
            b"\0" * LIFETIME_CFG.size,
            b"\0" * LIFETIME_CUR.size,
            0,
            0,
            direction,
            XFRM_POLICY_ALLOW,
            0,
            0,
        )
        try:
            sock.setsockopt(level, opt, info)
        except OSError as exc:
            raise xfrm_error_from_os("bypass socket", exc) from exc


def xfrm_error_from_os(op: str, exc: OSError) -> XfrmError:
    from ikeshim.errors import xfrm_error

    return xfrm_error(op, exc.errno or 0)
