"""SAPair builders shared by host and guest (UML) tests."""

from __future__ import annotations

import os

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

SUITES: dict[str, tuple[Encr, int, Integ]] = {
    "gcm128": (Encr.AES_GCM_16, 128, Integ.NONE),
    "gcm256": (Encr.AES_GCM_16, 256, Integ.NONE),
    "chacha": (Encr.CHACHA20_POLY1305, 256, Integ.NONE),
    "cbc-sha256": (Encr.AES_CBC, 128, Integ.HMAC_SHA2_256_128),
    "cbc-sha384": (Encr.AES_CBC, 256, Integ.HMAC_SHA2_384_192),
    "cbc-sha512": (Encr.AES_CBC, 256, Integ.HMAC_SHA2_512_256),
}


def make_params(
    suite: str = "gcm128",
    *,
    mode: Mode = Mode.TRANSPORT,
    i_addr: str = "192.0.2.1",
    r_addr: str = "192.0.2.2",
    tsi: tuple[TrafficSelector, ...] | None = None,
    tsr: tuple[TrafficSelector, ...] | None = None,
    natt: tuple[int, int] | None = None,
    replay_window: int = 128,
) -> SAParams:
    encr, bits, integ = SUITES[suite]
    return SAParams(
        mode=mode,
        encr=encr,
        encr_key_bits=bits,
        integ=integ,
        initiator_addr=i_addr,
        responder_addr=r_addr,
        tsi=tsi or (TrafficSelector.host(i_addr),),
        tsr=tsr or (TrafficSelector.host(r_addr),),
        natt_initiator_port=None if natt is None else natt[0],
        natt_responder_port=None if natt is None else natt[1],
        replay_window=replay_window,
    )


def random_keys(params: SAParams, spi: int) -> DirectionKeys:
    return DirectionKeys(spi, os.urandom(params.encr_key_len), os.urandom(params.integ.key_len))


def make_pair(
    params: SAParams,
    role: str = "initiator",
    *,
    spis: tuple[int, int] = (0xC0000001, 0xC0000002),
    lifetimes: Lifetimes | None = None,
    reqid: int | None = None,
    keys: tuple[DirectionKeys, DirectionKeys] | None = None,
) -> SAPair:
    i_to_r, r_to_i = keys or (random_keys(params, spis[0]), random_keys(params, spis[1]))
    return SAPair(
        role=role,
        params=params,
        i_to_r=i_to_r,
        r_to_i=r_to_i,
        lifetimes=lifetimes or Lifetimes(),
        reqid=reqid,
    )


def mirror(pair: SAPair) -> SAPair:
    """The same SAs as the other peer sees them."""
    return SAPair(
        role="responder" if pair.role == "initiator" else "initiator",
        params=pair.params,
        i_to_r=pair.i_to_r,
        r_to_i=pair.r_to_i,
        lifetimes=pair.lifetimes,
        reqid=pair.reqid,
    )
