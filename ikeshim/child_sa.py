"""Find a CHILD_SA's two ESP SAs in the kernel, whichever daemon installed them.

``ikeresume xfrm describe`` (and an embedding daemon) names the CHILD_SA by its two SPIs
-- in order, or in any order as libreswan's updown hook has them -- or by the kernel reqid
both SAs carry; the SA towards the responder carries initiator-to-responder traffic.
Anything that does not single out exactly one SA each way is a :class:`HarvestError`
saying why (a rekey leaves two SAs with one reqid); the kernel's own refusals stay
:class:`~ikeshim.errors.XfrmError`.
"""

from __future__ import annotations

from collections.abc import Collection

from ikeshim.algorithms import child_sa_from_states
from ikeshim.errors import HarvestError, XfrmNotFoundError
from ikeshim.xfrm import IPPROTO_ESP, XFRM_MODE_TUNNEL, SAKey, XfrmSocket, XfrmState
from resume.sa import DirectionKeys, Mode, SAParams, TrafficSelector


def find_child_sa(
    x: XfrmSocket,
    initiator: str,
    responder: str,
    *,
    spi_i2r: int | None = None,
    spi_r2i: int | None = None,
    spis: Collection[int] = (),
    reqid: int | None = None,
) -> tuple[XfrmState, XfrmState]:
    """(initiator->responder SA, responder->initiator SA) of one CHILD_SA."""
    ordered = (spi_i2r, spi_r2i)
    named = (spi_i2r is not None, bool(spis), reqid is not None)
    if sum(named) != 1 or (spi_i2r is None) != (spi_r2i is None):
        raise HarvestError("name the CHILD_SA by its two SPIs (ordered or not) or its reqid")
    states = []
    for spi, (src, dst) in zip(ordered, ((initiator, responder), (responder, initiator)),
                               strict=True):  # fmt: skip
        if spi is not None:
            try:
                states.append(x.get_sa(SAKey(dst, spi, IPPROTO_ESP)))
            except XfrmNotFoundError:
                raise HarvestError(f"no ESP SA with SPI 0x{spi:08x} to {dst} here") from None
            continue
        found = [s for s in x.dump_sas(between=(src, dst)) if s.proto == IPPROTO_ESP
                 and (s.spi in spis if spis else s.reqid == reqid)]  # fmt: skip
        if len(found) != 1:
            what = f"SPI {' or '.join(map(hex, sorted(spis)))}" if spis else f"reqid {reqid}"
            why = "a rekey in progress? give the SPIs" if found else "wrong namespace?"
            raise HarvestError(f"{len(found)} ESP SAs {src} -> {dst} with {what} ({why})")
        states.append(found[0])
    return states[0], states[1]


def describe_child_sa(
    i_to_r: XfrmState,
    r_to_i: XfrmState,
    *,
    initiator: str,
    responder: str,
    tsi: tuple[TrafficSelector, ...],
    tsr: tuple[TrafficSelector, ...],
    mode: Mode | None = None,
    replay_window: int = 128,
) -> tuple[SAParams, DirectionKeys, DirectionKeys]:
    """Parameters and keys of the CHILD_SA; the mode defaults to the kernel SA's."""
    if mode is None:
        mode = Mode.TUNNEL if i_to_r.mode == XFRM_MODE_TUNNEL else Mode.TRANSPORT
    return child_sa_from_states(
        i_to_r, r_to_i, mode=mode, initiator_addr=initiator, responder_addr=responder,
        tsi=tsi, tsr=tsr, replay_window=replay_window,
    )  # fmt: skip
