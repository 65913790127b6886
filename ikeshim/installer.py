"""Install the ESP SA pair of a resumed CHILD_SA (and its policies) into the kernel.

Used by the responder service and the initiator client after a resumption: both hold an
:class:`resume.sa.SAPair` (``role`` tells which SA is inbound) and call
:func:`install_sa_pair`.  The whole installation is all-or-nothing: every kernel change is
paired with its undo, and a failure half-way undoes what was done, in reverse order, before
the error propagates -- a half-installed pair would black-hole traffic (policies without SAs)
or leave live keys in the kernel that no one will remove.

Replacing the SAs of a previous session (``replace=``) is make-before-break: the new SAs are
added, the policies are updated in place to require the new reqid, and only then are the old
SAs deleted.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

from ikeshim.algorithms import kernel_algos
from ikeshim.errors import XfrmError, XfrmExistsError, XfrmNotFoundError
from ikeshim.xfrm import (
    XFRM_MODE_TRANSPORT,
    XFRM_MODE_TUNNEL,
    XFRM_POLICY_FWD,
    XFRM_POLICY_IN,
    XFRM_POLICY_OUT,
    Encap,
    LifetimeCfg,
    LifetimeCur,
    Mark,
    PolicyKey,
    SAKey,
    Selector,
    Template,
    XfrmOps,
    XfrmPolicy,
    XfrmState,
)
from resume.sa import DirectionKeys, Lifetimes, Mode, SAPair, TrafficSelector

# Maximum policies one traffic-selector pair may expand into (ranges that are not prefixes
# split into several kernel selectors); beyond this the SA description is refused.
MAX_SELECTORS = 64
DEFAULT_PRIORITY = 1500


@dataclass(frozen=True)
class InstallOptions:
    """Knobs of an installation; the defaults suit a host running only our SAs.

    ``reqid`` None uses ``SAPair.reqid`` or derives one from the SPIs (in a range strongSwan
    does not allocate from).  ``fwd`` None installs FWD policies in tunnel mode only.
    ``remove_superseded``: once the new pair is in, delete the SAs between the same two
    hosts that the replaced policies required (the previous session's, whether a daemon or
    an earlier resumption installed them); they can carry no traffic any more.
    """

    reqid: int | None = None
    mark: Mark | None = None
    if_id: int | None = None
    priority: int = DEFAULT_PRIORITY
    policies: bool = True
    fwd: bool | None = None
    esn: bool = False
    remove_superseded: bool = True


@dataclass(frozen=True)
class InstalledSA:
    """What :func:`install_sa_pair` put in the kernel: enough to remove it again."""

    inbound: SAKey
    outbound: SAKey
    policies: tuple[PolicyKey, ...] = field(default=())
    reqid: int = 0
    removed: tuple[SAKey, ...] = field(default=())


def lifetime_cfg(lt: Lifetimes) -> LifetimeCfg:
    """resume.sa.Lifetimes (from the cache policy) -> kernel soft/hard limits."""
    return LifetimeCfg(
        soft_bytes=lt.soft_bytes,
        hard_bytes=lt.hard_bytes,
        soft_packets=lt.soft_packets,
        hard_packets=lt.hard_packets,
        soft_add_seconds=lt.soft_seconds,
        hard_add_seconds=lt.hard_seconds,
    )


def derive_reqid(pair: SAPair) -> int:
    """A stable reqid both directions share, outside strongSwan's small counter range."""
    spis = sorted((pair.i_to_r.spi, pair.r_to_i.spi))
    digest = hashlib.sha256(b"ikeresume reqid" + b"".join(s.to_bytes(4, "big") for s in spis))
    return 0x40000000 | (int.from_bytes(digest.digest()[:4], "big") & 0x3FFFFFFF)


def _reqid(pair: SAPair, options: InstallOptions) -> int:
    if options.reqid is not None:
        return options.reqid
    if pair.reqid is not None:
        return pair.reqid
    return derive_reqid(pair)


def _family(addr: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET


def build_states(
    pair: SAPair, options: InstallOptions = InstallOptions()
) -> tuple[XfrmState, XfrmState]:
    """The (inbound, outbound) kernel SAs for ``pair`` as seen from ``pair.role``."""
    p = pair.params
    if _family(p.initiator_addr) != _family(p.responder_addr):
        raise ValueError("initiator and responder addresses are of different families")
    reqid = _reqid(pair, options)
    mode = XFRM_MODE_TUNNEL if p.mode is Mode.TUNNEL else XFRM_MODE_TRANSPORT
    lt = lifetime_cfg(pair.lifetimes)
    local_port: int | None = None
    remote_port: int | None = None
    if p.natt_initiator_port is not None and p.natt_responder_port is not None:
        i_port, r_port = p.natt_initiator_port, p.natt_responder_port
        local_port, remote_port = (i_port, r_port) if pair.role == "initiator" else (r_port, i_port)

    def one(
        keys: DirectionKeys, src: str, dst: str, sport: int | None, dport: int | None
    ) -> XfrmState:
        algos = kernel_algos(p, keys)
        tunnel_sel = Selector(_family(dst))
        sel = Selector.hosts(src, dst) if mode == XFRM_MODE_TRANSPORT else tunnel_sel
        return XfrmState(
            src=src,
            dst=dst,
            spi=keys.spi,
            mode=mode,
            reqid=reqid,
            replay_window=p.replay_window,
            selector=sel,
            crypt=algos.crypt,
            auth=algos.auth,
            aead=algos.aead,
            encap=None if sport is None or dport is None else Encap(sport, dport),
            lifetime=lt,
            mark=options.mark,
            if_id=options.if_id,
            esn=options.esn,
        )

    if pair.role not in ("initiator", "responder"):
        raise ValueError(f"SAPair.role must be initiator or responder, not {pair.role!r}")
    local, remote = pair.local_addr, pair.remote_addr
    inbound = one(pair.inbound, remote, local, remote_port, local_port)
    outbound = one(pair.outbound, local, remote, local_port, remote_port)
    return inbound, outbound


def _prefixes(ts: TrafficSelector) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    a = ipaddress.ip_address(ts.start_addr)
    b = ipaddress.ip_address(ts.end_addr)
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = list(
        ipaddress.summarize_address_range(a, b)
    )
    return nets


def _port_blocks(start: int, end: int) -> list[tuple[int, int]]:
    """Split a port range into (port, mask) blocks the XFRM selector can express."""
    if start == 0 and end == 65535:
        return [(0, 0)]
    out: list[tuple[int, int]] = []
    port = start
    while port <= end:
        size = 1
        while port % (size * 2) == 0 and port + size * 2 - 1 <= end and size < 65536:
            size *= 2
        out.append((port, (0xFFFF & ~(size - 1))))
        port += size
    return out


def _selectors(src: TrafficSelector, dst: TrafficSelector) -> list[Selector]:
    """Kernel selectors matching packets from ``src`` to ``dst`` (same IP version)."""
    if src.version != dst.version:
        return []
    proto = src.protocol or dst.protocol
    if src.protocol and dst.protocol and src.protocol != dst.protocol:
        return []
    fam = socket.AF_INET6 if src.version == 6 else socket.AF_INET
    sports = _port_blocks(src.start_port, src.end_port) if proto else [(0, 0)]
    dports = _port_blocks(dst.start_port, dst.end_port) if proto else [(0, 0)]
    out = []
    for sn in _prefixes(src):
        for dn in _prefixes(dst):
            for sp, spm in sports:
                for dp, dpm in dports:
                    out.append(
                        Selector(
                            family=fam,
                            daddr=str(dn.network_address),
                            saddr=str(sn.network_address),
                            prefixlen_d=dn.prefixlen,
                            prefixlen_s=sn.prefixlen,
                            proto=proto,
                            dport=dp,
                            dport_mask=dpm,
                            sport=sp,
                            sport_mask=spm,
                        )
                    )
                    if len(out) > MAX_SELECTORS:
                        raise ValueError(
                            "traffic selectors expand into more than "
                            f"{MAX_SELECTORS} kernel selectors"
                        )
    return out


def build_policies(pair: SAPair, options: InstallOptions = InstallOptions()) -> list[XfrmPolicy]:
    """OUT, IN (and FWD in tunnel mode) policies requiring the pair's SAs."""
    p = pair.params
    reqid = _reqid(pair, options)
    outer = _family(pair.local_addr)
    local_ts, remote_ts = (p.tsi, p.tsr) if pair.role == "initiator" else (p.tsr, p.tsi)
    tunnel = p.mode is Mode.TUNNEL
    fwd = tunnel if options.fwd is None else options.fwd
    policies: list[XfrmPolicy] = []

    def tmpl(src: str, dst: str) -> Template:
        if tunnel:
            return Template(outer, XFRM_MODE_TUNNEL, reqid, dst=dst, src=src)
        return Template(outer, XFRM_MODE_TRANSPORT, reqid)

    out_t = tmpl(pair.local_addr, pair.remote_addr)
    in_t = tmpl(pair.remote_addr, pair.local_addr)
    for lts in local_ts:
        for rts in remote_ts:
            for sel in _selectors(lts, rts):
                policies.append(_policy(sel, XFRM_POLICY_OUT, out_t, options))
            for sel in _selectors(rts, lts):
                policies.append(_policy(sel, XFRM_POLICY_IN, in_t, options))
                if fwd:
                    policies.append(_policy(sel, XFRM_POLICY_FWD, in_t, options))
    if not policies:
        raise ValueError("traffic selectors produce no policy (IP versions do not match?)")
    return policies


def _policy(sel: Selector, direction: int, t: Template, options: InstallOptions) -> XfrmPolicy:
    return XfrmPolicy(
        selector=sel,
        dir=direction,
        priority=options.priority,
        templates=(t,),
        mark=options.mark,
        if_id=options.if_id,
    )


def _rollback(undo: list[Callable[[], None]], error: BaseException) -> None:
    for step in reversed(undo):
        try:
            step()
        except XfrmError as exc:  # keep undoing; report what could not be undone
            error.add_note(f"rollback step failed: {exc}")


def _same_sa(a: XfrmState, b: XfrmState) -> bool:
    """The same SA: addresses, SPI, protocol, mode, reqid (what the policies require),
    encapsulation, mark, interface and every algorithm with its key.  (Not the lifetimes:
    a late re-install asks for what remains of them.)"""
    def ident(s: XfrmState) -> tuple[object, ...]:
        return (s.src, s.dst, s.spi, s.proto, s.mode, s.reqid, s.crypt, s.auth, s.aead,
                s.encap, s.mark, s.if_id)  # fmt: skip

    return ident(a) == ident(b)


def _add_sa(x: XfrmOps, sa: XfrmState) -> bool:
    """Add ``sa``; True if added, False if this very SA (same SPI and keys) is already in
    the kernel -- a re-install after a crash (the responder's outbox replay) counts as
    installed.  Another SA with the same SPI is a collision: XfrmExistsError."""
    try:
        x.add_sa(sa)
    except XfrmExistsError:
        try:
            present = x.get_sa(sa.key())
        except XfrmNotFoundError:  # expired between the two requests: add it after all
            x.add_sa(sa)
            return True
        if _same_sa(present, sa):
            return False
        raise
    return True


def install_sa_pair(
    x: XfrmOps,
    pair: SAPair,
    options: InstallOptions = InstallOptions(),
    *,
    replace_old: InstalledSA | None = None,
) -> InstalledSA:
    """Install inbound+outbound SAs and their policies; all-or-nothing; idempotent.

    Installing a pair that is already in the kernel (same SPIs and keys: a re-install
    after a crash) succeeds and changes nothing; an SA with the same SPI but other keys
    is a collision (XfrmExistsError).

    With ``replace_old`` (the :class:`InstalledSA` of the session being resumed or rekeyed),
    the old SAs and any old policies the new ones do not overwrite are removed after the
    new ones are in place.  Raises :class:`ikeshim.errors.XfrmError` (with everything this
    call added already removed again).
    """
    inbound, outbound = build_states(pair, options)
    policies = build_policies(pair, options) if options.policies else []
    undo: list[Callable[[], None]] = []
    superseded: set[int] = set()
    try:
        for sa in (inbound, outbound):
            if _add_sa(x, sa):
                undo.append(partial(x.delete_sa, sa.key()))
        for pol in policies:
            # Common case first: no policy for this selector yet (one round trip).
            try:
                x.add_policy(pol)
            except XfrmExistsError:
                pass
            else:
                undo.append(partial(x.delete_policy, pol.key()))
                continue
            # Take over the previous session's policy, remembering it for the rollback.
            prior = x.get_policy(pol.key())
            superseded.update(t.reqid for t in prior.templates if t.reqid)
            x.update_policy(pol)
            undo.append(partial(x.update_policy, replace(prior, curlft=LifetimeCur(), index=0)))
    except BaseException as exc:
        _rollback(undo, exc)
        raise
    reqid = _reqid(pair, options)
    removed: list[SAKey] = []
    if replace_old is not None:
        remove_sa_pair(x, replace_old, keep_policies=tuple(p.key() for p in policies))
        removed += [replace_old.inbound, replace_old.outbound]
    superseded.discard(reqid)
    if options.remove_superseded and superseded:
        removed += _remove_superseded(x, pair, superseded, {inbound.key(), outbound.key()})
    return InstalledSA(
        inbound.key(), outbound.key(), tuple(p.key() for p in policies), reqid, tuple(removed)
    )


def _remove_superseded(x: XfrmOps, pair: SAPair, reqids: set[int], keep: set[SAKey]) -> list[SAKey]:
    """Delete SAs between this pair's hosts whose reqid only the replaced policies used.

    Two kernel-filtered dumps (one per direction) instead of a dump of every SA: on a
    gateway with thousands of tunnels the installer must not walk them all.
    """
    local, remote = pair.local_addr, pair.remote_addr
    removed = []
    for st in x.dump_sas(between=(local, remote)) + x.dump_sas(between=(remote, local)):
        if st.reqid not in reqids or st.key() in keep:
            continue
        try:
            x.delete_sa(st.key())
        except XfrmNotFoundError:
            continue  # expired meanwhile
        removed.append(st.key())
    return removed


def remove_sa_pair(
    x: XfrmOps, installed: InstalledSA, *, keep_policies: tuple[PolicyKey, ...] = ()
) -> None:
    """Delete an installed pair (SAs, then its policies except ``keep_policies``).

    Objects already gone (hard lifetime expiry) are not an error; other failures are
    raised after every deletion was attempted.
    """
    keep = set(keep_policies)
    first: XfrmError | None = None
    steps: list[Callable[[], None]] = [
        partial(x.delete_policy, k) for k in installed.policies if k not in keep
    ]
    steps += [partial(x.delete_sa, installed.inbound), partial(x.delete_sa, installed.outbound)]
    for step in steps:
        try:
            step()
        except XfrmNotFoundError:
            continue
        except XfrmError as exc:
            if first is None:
                first = exc
            else:
                first.add_note(f"also: {exc}")
    if first is not None:
        raise first

