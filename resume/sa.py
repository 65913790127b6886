"""Description of the ESP SA pair that a completed resumption installs.

This is the contract between the protocol core (which derives keys and SPIs), the store
(which keeps the negotiated parameters of the last full IKE, never its keys) and
ikeshim (which turns the description into XFRM states and policies).  Algorithm numbers
are the IKEv2 transform IDs (RFC 7296 section 3.3.2, IANA "IKEv2 Parameters") so that a
record harvested from a daemon maps onto them without a translation table of our own.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Any


class Mode(enum.Enum):
    TRANSPORT = "transport"
    TUNNEL = "tunnel"


class Encr(enum.IntEnum):
    """IKEv2 Transform Type 1 IDs that ESP resumption supports."""

    AES_CBC = 12
    AES_GCM_16 = 20
    CHACHA20_POLY1305 = 28

    @property
    def is_aead(self) -> bool:
        return self is not Encr.AES_CBC

    @property
    def salt_len(self) -> int:
        """Bytes of implicit-nonce salt appended to the key (RFC 4106, RFC 7634)."""
        return 4 if self.is_aead else 0


class Integ(enum.IntEnum):
    """IKEv2 Transform Type 3 IDs; NONE is used with AEAD ciphers."""

    NONE = 0
    HMAC_SHA2_256_128 = 12
    HMAC_SHA2_384_192 = 13
    HMAC_SHA2_512_256 = 14

    @property
    def key_len(self) -> int:
        return {0: 0, 12: 32, 13: 48, 14: 64}[int(self)]

    @property
    def icv_bits(self) -> int:
        return {0: 0, 12: 128, 13: 192, 14: 256}[int(self)]


@dataclass(frozen=True)
class TrafficSelector:
    """One IKEv2 traffic selector (RFC 7296 3.13.1): an address range, a protocol, a port range."""

    start_addr: str
    end_addr: str
    protocol: int = 0
    start_port: int = 0
    end_port: int = 65535

    def __post_init__(self) -> None:
        a = ipaddress.ip_address(self.start_addr)
        b = ipaddress.ip_address(self.end_addr)
        if a.version != b.version or int(a) > int(b):
            raise ValueError(f"bad traffic selector range {self.start_addr}-{self.end_addr}")
        if not (0 <= self.protocol <= 255 and 0 <= self.start_port <= self.end_port <= 65535):
            raise ValueError("bad traffic selector protocol or ports")

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.start_addr).version

    @classmethod
    def from_network(cls, net: str, protocol: int = 0) -> TrafficSelector:
        n = ipaddress.ip_network(net, strict=False)
        return cls(str(n.network_address), str(n.broadcast_address), protocol)

    @classmethod
    def host(cls, addr: str, protocol: int = 0) -> TrafficSelector:
        return cls(addr, addr, protocol)

    def to_json(self) -> dict[str, Any]:
        return {
            "start_addr": self.start_addr,
            "end_addr": self.end_addr,
            "protocol": self.protocol,
            "start_port": self.start_port,
            "end_port": self.end_port,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrafficSelector:
        return cls(
            str(d["start_addr"]),
            str(d["end_addr"]),
            int(d.get("protocol", 0)),
            int(d.get("start_port", 0)),
            int(d.get("end_port", 65535)),
        )


@dataclass(frozen=True)
class Lifetimes:
    """Kernel SA lifetimes (XFRM soft/hard limits); None means unlimited."""

    soft_seconds: int | None = None
    hard_seconds: int | None = None
    soft_bytes: int | None = None
    hard_bytes: int | None = None
    soft_packets: int | None = None
    hard_packets: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Lifetimes:
        return cls(**{k: (None if v is None else int(v)) for k, v in d.items()})


@dataclass(frozen=True)
class SAParams:
    """What was negotiated by the last full IKE and is reused by resumption (no keys).

    Addresses are "initiator"/"responder" so that both peers store the same record;
    each side maps them to local/remote when it installs.
    """

    mode: Mode
    encr: Encr
    encr_key_bits: int
    integ: Integ
    initiator_addr: str
    responder_addr: str
    tsi: tuple[TrafficSelector, ...]
    tsr: tuple[TrafficSelector, ...]
    natt_initiator_port: int | None = None
    natt_responder_port: int | None = None
    replay_window: int = 128

    def __post_init__(self) -> None:
        if self.encr is Encr.CHACHA20_POLY1305 and self.encr_key_bits != 256:
            raise ValueError("ChaCha20-Poly1305 takes a 256-bit key")
        if self.encr in (Encr.AES_GCM_16, Encr.AES_CBC) and self.encr_key_bits not in (
            128,
            192,
            256,
        ):
            raise ValueError(f"AES key size {self.encr_key_bits} not supported")
        if self.encr.is_aead != (self.integ is Integ.NONE):
            raise ValueError("AEAD ciphers take no integrity algorithm; CBC needs one")
        ipaddress.ip_address(self.initiator_addr)
        ipaddress.ip_address(self.responder_addr)
        if (self.natt_initiator_port is None) != (self.natt_responder_port is None):
            raise ValueError("NAT-T needs both ports or neither")

    @property
    def encr_key_len(self) -> int:
        """Bytes of keying material for the cipher, salt included (as XFRM wants it)."""
        return self.encr_key_bits // 8 + self.encr.salt_len

    @property
    def key_material_len(self) -> int:
        """Bytes of KEYMAT for one direction: encryption key then integrity key (RFC 7296 2.17)."""
        return self.encr_key_len + self.integ.key_len

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "encr": int(self.encr),
            "encr_key_bits": self.encr_key_bits,
            "integ": int(self.integ),
            "initiator_addr": self.initiator_addr,
            "responder_addr": self.responder_addr,
            "tsi": [t.to_json() for t in self.tsi],
            "tsr": [t.to_json() for t in self.tsr],
            "natt_initiator_port": self.natt_initiator_port,
            "natt_responder_port": self.natt_responder_port,
            "replay_window": self.replay_window,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SAParams:
        return cls(
            mode=Mode(d["mode"]),
            encr=Encr(int(d["encr"])),
            encr_key_bits=int(d["encr_key_bits"]),
            integ=Integ(int(d["integ"])),
            initiator_addr=str(d["initiator_addr"]),
            responder_addr=str(d["responder_addr"]),
            tsi=tuple(TrafficSelector.from_json(t) for t in d["tsi"]),
            tsr=tuple(TrafficSelector.from_json(t) for t in d["tsr"]),
            natt_initiator_port=d.get("natt_initiator_port"),
            natt_responder_port=d.get("natt_responder_port"),
            replay_window=int(d.get("replay_window", 128)),
        )


@dataclass(frozen=True)
class DirectionKeys:
    """Keys and SPI of one ESP SA (one direction).  `spi` was chosen by that SA's receiver."""

    spi: int
    encr_key: bytes = field(repr=False)
    integ_key: bytes = field(repr=False)


@dataclass(frozen=True)
class SAPair:
    """Everything needed to install the two ESP SAs of a resumed CHILD_SA.

    `i_to_r` protects traffic from initiator to responder (its SPI was chosen by the
    responder), `r_to_i` the reverse.  `role` tells which side this object was produced
    for, so that the installer knows which SA is inbound.
    """

    role: str  # "initiator" or "responder"
    params: SAParams
    i_to_r: DirectionKeys
    r_to_i: DirectionKeys
    lifetimes: Lifetimes
    reqid: int | None = None

    @property
    def inbound(self) -> DirectionKeys:
        return self.r_to_i if self.role == "initiator" else self.i_to_r

    @property
    def outbound(self) -> DirectionKeys:
        return self.i_to_r if self.role == "initiator" else self.r_to_i

    @property
    def local_addr(self) -> str:
        p = self.params
        return p.initiator_addr if self.role == "initiator" else p.responder_addr

    @property
    def remote_addr(self) -> str:
        p = self.params
        return p.responder_addr if self.role == "initiator" else p.initiator_addr

    def describe(self) -> dict[str, Any]:
        """JSON for hooks: parameters, SPIs and (hex) keys.  Contains secrets by design."""
        return {
            "role": self.role,
            "params": self.params.to_json(),
            "lifetimes": self.lifetimes.to_json(),
            "reqid": self.reqid,
            "i_to_r": {
                "spi": self.i_to_r.spi,
                "encr_key": self.i_to_r.encr_key.hex(),
                "integ_key": self.i_to_r.integ_key.hex(),
            },
            "r_to_i": {
                "spi": self.r_to_i.spi,
                "encr_key": self.r_to_i.encr_key.hex(),
                "integ_key": self.r_to_i.integ_key.hex(),
            },
        }
