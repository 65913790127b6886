"""IKEv2 transform IDs <-> Linux crypto API names, both ways.

Forward (install): the resumption core speaks IKEv2 IDs (``resume.sa.Encr``/``Integ``).
Backward (harvest): XFRM dumps give kernel names and key lengths, which must map back to
exactly one IKEv2 transform, or the harvested record would resume with different crypto.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ikeshim.errors import HarvestError
from ikeshim.xfrm import Algo, XfrmState
from resume.sa import DirectionKeys, Encr, Integ, Mode, SAParams, TrafficSelector

AEAD_NAMES = {
    Encr.AES_GCM_16: "rfc4106(gcm(aes))",
    Encr.CHACHA20_POLY1305: "rfc7539esp(chacha20,poly1305)",
}
CRYPT_NAMES = {Encr.AES_CBC: "cbc(aes)"}
AUTH_NAMES = {
    Integ.HMAC_SHA2_256_128: "hmac(sha256)",
    Integ.HMAC_SHA2_384_192: "hmac(sha384)",
    Integ.HMAC_SHA2_512_256: "hmac(sha512)",
}
AEAD_ICV_BITS = 128  # ESP AES-GCM-16 and ChaCha20-Poly1305 both use a 16-byte ICV


@dataclass(frozen=True)
class KernelAlgos:
    crypt: Algo | None
    auth: Algo | None
    aead: Algo | None


def kernel_algos(params: SAParams, keys: DirectionKeys) -> KernelAlgos:
    """Kernel algorithms (with keys) for one direction of an SA described by ``params``."""
    if len(keys.encr_key) != params.encr_key_len:
        raise ValueError(
            f"encryption key is {len(keys.encr_key)} bytes, {params.encr.name} "
            f"{params.encr_key_bits} needs {params.encr_key_len} (salt included)"
        )
    if len(keys.integ_key) != params.integ.key_len:
        raise ValueError(
            f"integrity key is {len(keys.integ_key)} bytes, {params.integ.name} needs "
            f"{params.integ.key_len}"
        )
    if params.encr.is_aead:
        return KernelAlgos(
            None, None, Algo(AEAD_NAMES[params.encr], bytes(keys.encr_key), AEAD_ICV_BITS)
        )
    return KernelAlgos(
        Algo(CRYPT_NAMES[params.encr], bytes(keys.encr_key)),
        Algo(AUTH_NAMES[params.integ], bytes(keys.integ_key), params.integ.icv_bits),
        None,
    )


@dataclass(frozen=True)
class HarvestedCrypto:
    encr: Encr
    encr_key_bits: int
    integ: Integ
    keys: DirectionKeys


def crypto_from_state(state: XfrmState) -> HarvestedCrypto:
    """Map a kernel SA's algorithms back to IKEv2 transforms; refuse anything else."""
    if state.aead is not None:
        a = state.aead
        by_name = {name: e for e, name in AEAD_NAMES.items()}
        if a.name not in by_name:
            raise HarvestError(f"AEAD {a.name} has no resumption mapping")
        encr = by_name[a.name]
        if a.extra_bits != AEAD_ICV_BITS:
            raise HarvestError(f"{a.name} with a {a.extra_bits}-bit ICV is not supported")
        bits = (len(a.key) - encr.salt_len) * 8
        return HarvestedCrypto(encr, bits, Integ.NONE, DirectionKeys(state.spi, a.key, b""))
    if state.crypt is None or state.auth is None:
        raise HarvestError("SA without encryption+integrity or AEAD (AH or NULL?)")
    if state.crypt.name != CRYPT_NAMES[Encr.AES_CBC]:
        raise HarvestError(f"cipher {state.crypt.name} has no resumption mapping")
    integ_by_name = {name: i for i, name in AUTH_NAMES.items()}
    if state.auth.name not in integ_by_name:
        raise HarvestError(f"integrity {state.auth.name} has no resumption mapping")
    integ = integ_by_name[state.auth.name]
    if state.auth.extra_bits not in (None, integ.icv_bits):
        raise HarvestError(f"{state.auth.name} truncated to {state.auth.extra_bits} bits")
    return HarvestedCrypto(
        Encr.AES_CBC,
        len(state.crypt.key) * 8,
        integ,
        DirectionKeys(state.spi, state.crypt.key, state.auth.key),
    )


def child_sa_from_states(
    i_to_r: XfrmState,
    r_to_i: XfrmState,
    *,
    mode: Mode,
    initiator_addr: str,
    responder_addr: str,
    tsi: tuple[TrafficSelector, ...],
    tsr: tuple[TrafficSelector, ...],
    replay_window: int = 128,
) -> tuple[SAParams, DirectionKeys, DirectionKeys]:
    """The two kernel SAs of a CHILD_SA -> its parameters and keys (what generation 0 is
    derived from), whichever daemon negotiated it; HarvestError if they cannot resume.

    ``i_to_r`` carries initiator-to-responder traffic (its destination is the responder);
    its NAT-T encapsulation, if any, gives (initiator port, responder port).
    """
    c_i2r, c_r2i = crypto_from_state(i_to_r), crypto_from_state(r_to_i)
    algos = (c_i2r.encr, c_i2r.encr_key_bits, c_i2r.integ)
    if algos != (c_r2i.encr, c_r2i.encr_key_bits, c_r2i.integ):
        raise HarvestError("directions use different algorithms")
    encap = i_to_r.encap
    try:
        params = SAParams(
            mode=mode,
            encr=c_i2r.encr,
            encr_key_bits=c_i2r.encr_key_bits,
            integ=c_i2r.integ,
            initiator_addr=str(ipaddress.ip_address(initiator_addr)),
            responder_addr=str(ipaddress.ip_address(responder_addr)),
            tsi=tsi,
            tsr=tsr,
            natt_initiator_port=None if encap is None else encap.sport,
            natt_responder_port=None if encap is None else encap.dport,
            replay_window=replay_window,
        )
    except ValueError as exc:
        raise HarvestError(str(exc)) from None
    return params, c_i2r.keys, c_r2i.keys
