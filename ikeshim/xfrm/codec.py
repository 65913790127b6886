"""Message codec: XFRM SA/policy requests to bytes, kernel replies back to objects.

Encoders take our value objects; decoders read kernel bytes, end in ``_untrusted`` and
raise only :class:`~ikeshim.errors.XfrmDecodeError`.
"""

from __future__ import annotations

import socket
import struct

from ikeshim import netlink as nl
from ikeshim.errors import XfrmDecodeError
from ikeshim.xfrm.abi import (
    ADDRESS_FILTER,
    ALGO,
    ALGO_AEAD,
    ENCAP_TMPL,
    IPPROTO_ESP,
    LEGACY_REPLAY_MAX,
    LIFETIME_CUR,
    MARK,
    REPLAY_ESN,
    STATS,
    U32,
    USER_TMPL,
    USERPOLICY_ID,
    USERPOLICY_INFO,
    USERSA_ID,
    USERSA_INFO,
    XFRM_ID,
    XFRM_STATE_ESN,
    XFRMA_ADDRESS_FILTER,
    XFRMA_ALG_AEAD,
    XFRMA_ALG_AUTH,
    XFRMA_ALG_AUTH_TRUNC,
    XFRMA_ALG_CRYPT,
    XFRMA_ENCAP,
    XFRMA_IF_ID,
    XFRMA_MARK,
    XFRMA_REPLAY_ESN_VAL,
    XFRMA_TMPL,
)
from ikeshim.xfrm.model import (
    _UNSPECIFIED,
    Algo,
    Encap,
    LifetimeCfg,
    LifetimeCur,
    Mark,
    PolicyKey,
    SAKey,
    Selector,
    Template,
    XfrmPolicy,
    XfrmState,
    _be16,
    _family,
    _from_be16,
    _pack_addr,
    _unpack_addr,
)

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


def encode_sa_dump_filter(src: str, dst: str) -> bytes:
    """Attributes of an SA dump that returns only SAs from host ``src`` to host ``dst``.

    The kernel filters while dumping (``XFRMA_ADDRESS_FILTER``, full-length prefixes), so a
    host with thousands of SAs answers with the few that concern one peer.
    """
    fam = _family(src)
    if _family(dst) != fam:
        raise ValueError("dump filter addresses are of different families")
    bits = 32 if fam == socket.AF_INET else 128
    return nl.encode_attr(
        XFRMA_ADDRESS_FILTER,
        ADDRESS_FILTER.pack(_pack_addr(src), _pack_addr(dst), fam, bits, bits),
    )


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
