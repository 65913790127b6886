"""Credential factories for store tests (importable by other packages' tests too)."""

from __future__ import annotations

import os

from resume.credential import Credential, PaperKeys, ProtocolMode
from resume.sa import DirectionKeys, Encr, Integ, Mode, SAParams, TrafficSelector

PARAMS = SAParams(
    mode=Mode.TUNNEL,
    encr=Encr.AES_GCM_16,
    encr_key_bits=256,
    integ=Integ.NONE,
    initiator_addr="192.0.2.10",
    responder_addr="198.51.100.1",
    tsi=(TrafficSelector.host("192.0.2.10"),),
    tsr=(TrafficSelector.from_network("10.8.0.0/16"),),
    natt_initiator_port=4500,
    natt_responder_port=4500,
)


def fqdn(name: str) -> bytes:
    """IKE ID payload body: ID_FQDN, three reserved bytes, the name."""
    return b"\x02\x00\x00\x00" + name.encode()


def make_credential(
    generation: int = 0,
    *,
    peer: str = "alice.example",
    gw: str = "gw.example",
    paper: bool = False,
    params: SAParams = PARAMS,
) -> Credential:
    pk = None
    if paper:
        pk = PaperKeys(
            DirectionKeys(0x1000 + generation, os.urandom(36), b""),
            DirectionKeys(0x2000 + generation, os.urandom(36), b""),
        )
    return Credential(
        mode=ProtocolMode.PAPER if paper else ProtocolMode.HARDENED,
        handle=os.urandom(16),
        generation=generation,
        secret=os.urandom(32),
        id_i=fqdn(peer),
        id_r=fqdn(gw),
        params=params,
        paper_keys=pk,
    )


def successor(c: Credential) -> Credential:
    """What the core would hand over after a resumption: same peers, next generation."""
    n = make_credential(c.generation + 1, params=c.params, paper=c.paper_keys is not None)
    return Credential(
        mode=c.mode,
        handle=n.handle,
        generation=n.generation,
        secret=n.secret,
        id_i=c.id_i,
        id_r=c.id_r,
        params=c.params,
        paper_keys=n.paper_keys,
    )
