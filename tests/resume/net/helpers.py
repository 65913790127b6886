"""Objects shared by the network-shell tests (no protocol core needed)."""

from __future__ import annotations

from resume.sa import (
    DirectionKeys,
    Encr,
    Integ,
    Lifetimes,
    Mode,
    SAPair,
    SAParams,
    TrafficSelector,
)


def sa_pair(role: str = "responder") -> SAPair:
    params = SAParams(
        mode=Mode.TRANSPORT,
        encr=Encr.AES_GCM_16,
        encr_key_bits=128,
        integ=Integ.NONE,
        initiator_addr="192.0.2.2",
        responder_addr="192.0.2.1",
        tsi=(TrafficSelector.host("192.0.2.2"),),
        tsr=(TrafficSelector.host("192.0.2.1"),),
    )
    return SAPair(
        role=role,
        params=params,
        i_to_r=DirectionKeys(0x1000, b"\x01" * 20, b""),
        r_to_i=DirectionKeys(0x2000, b"\x02" * 20, b""),
        lifetimes=Lifetimes(hard_seconds=60),
    )
