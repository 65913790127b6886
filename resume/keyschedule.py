"""Key schedule of the resumption exchange: every derivation, label and byte layout.

Hardened mode (default).  The cached *resumption secret* S never keys anything directly:

    ctx      = lp(ID_I) | lp(ID_R) | lp(handle) | u32(generation) | params_digest
    PRK      = HKDF-Extract(salt = lp(N_I) | lp(N_R), IKM = S | DH | SS)
               DH = X25519 shared secret or empty, SS = ML-KEM-768 shared secret or empty
    K_mac_i  = HKDF-Expand(PRK, "ikeresume v1 mac i" | ctx, 32)
    K_mac_r  = HKDF-Expand(PRK, "ikeresume v1 mac r" | ctx, 32)
    KEYMAT   = HKDF-Expand(PRK, "ikeresume v1 esp keymat" | ctx | u32(SPI_i2r) | u32(SPI_r2i),
                           2 * keymat_len)        i->r encr|integ, then r->i encr|integ
    S'       = HKDF-Expand(PRK, "ikeresume v1 successor" | ctx, 32)
    handle'  = HMAC-SHA256(S', "ikeresume v1 handle")[:16]
    MAC_2    = HMAC-SHA256(K_mac_r, "ikeresume v1 msg2 responder" | lp(m1) | m2_prefix)
    MAC_3    = HMAC-SHA256(K_mac_i, "ikeresume v1 msg3 initiator" | lp(m1) | lp(m2) | m3_prefix)

where m1 and m2 are the *compact* forms (``resume.wire.compact_message``: an ML-KEM key or
ciphertext replaced by its SHA-256; a message without ML-KEM is its own compact form).

``lp(x)`` is a 2-byte big-endian length then x; ``u32``/``u64`` big-endian.  Why this shape:
both nonces (and the X25519 secret) enter the extract step so every key of a run is fresh;
the identities, handle, generation and algorithms enter every expand so a key can never be
used for another peer, generation or parameter set; the two SPIs bind KEYMAT to the SAs it
keys; the direction labels make a reflected MAC useless; the successor depends on the run, so
the ratchet moves forward only through a run both sides authenticated.

Paper mode reproduces the 2007 proposal verbatim (``paper_mac``) and is insecure for ESP:
see ``specs/protocol.md``.

HMAC (RFC 2104) and HKDF (RFC 5869) are computed on :mod:`hashlib` (OpenSSL): a key used
several times (the server secret, a run's PRK) has its pads absorbed once
(:class:`HmacKey`) and then costs two hash-state copies per use instead of a new HMAC
context -- the responder answers every message 1 and 3 with a dozen HMACs; a key used once
goes through OpenSSL's one-shot ``hmac.digest`` (:func:`hmac_sha256`), the fastest per
call for that case.  The tests prove the bytes equal ``cryptography``'s HMAC/HKDF for
arbitrary inputs; X25519 stays on ``cryptography``.
"""

from __future__ import annotations

import hashlib
import hmac as _stdlib_hmac
import ipaddress
import socket
import struct
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from resume.credential import Credential, PaperKeys, ProtocolMode
from resume.errors import DecodeError
from resume.memo import IdentityMemo, Memo
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
from resume.wire import HANDLE_LEN, MIN_ESP_SPI

L_BOOTSTRAP = b"ikeresume v1 bootstrap"
L_HANDLE = b"ikeresume v1 handle"
L_PARAMS = b"ikeresume v1 params"
L_MAC_I = b"ikeresume v1 mac i"
L_MAC_R = b"ikeresume v1 mac r"
L_ESP = b"ikeresume v1 esp keymat"
L_SUCCESSOR = b"ikeresume v1 successor"
L_MSG2 = b"ikeresume v1 msg2 responder"
L_MSG3 = b"ikeresume v1 msg3 initiator"
L_RESPONDER_VALUES = b"ikeresume v1 responder values"
L_FINGERPRINT = b"ikeresume v1 fingerprint"

SECRET_LEN = 32

_sha256 = hashlib.sha256
_sha512 = hashlib.sha512
_BLOCK = {64: hashlib.sha256, 128: hashlib.sha512}
#: RFC 2104 pads as integers: XOR on ints has no secret-indexed table lookup (unlike
#: ``bytes.translate``).
_IPAD = {n: int.from_bytes(b"\x36" * n, "big") for n in _BLOCK}
_OPAD = {n: int.from_bytes(b"\x5c" * n, "big") for n in _BLOCK}
_U16 = struct.Struct(">H")
_new_tuple = tuple.__new__
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_U32X2 = struct.Struct(">II")


def lp(data: bytes) -> bytes:
    """2-byte big-endian length prefix (every variable-length field in a derivation)."""
    if len(data) > 0xFFFF:
        raise ValueError("field too long for a 2-byte length prefix")
    return _U16.pack(len(data)) + data


def _pads(key: bytes, block: int) -> tuple[bytes, bytes]:
    """RFC 2104: the key (hashed first if longer than a block), zero-padded to a block,
    XORed with ipad and opad."""
    if len(key) > block:
        key = _BLOCK[block](key).digest()
    k = int.from_bytes(key, "big") << (8 * (block - len(key)))
    return (k ^ _IPAD[block]).to_bytes(block, "big"), (k ^ _OPAD[block]).to_bytes(block, "big")


class HmacKey:
    """HMAC with one key whose pads are absorbed once (RFC 2104 on hashlib).

    Why: a key used several times (a run's PRK: up to six HKDF blocks; the server secret:
    every message 1 and 3) then costs two hash-state copies per MAC.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes, block: int = 64) -> None:
        ipad, opad = _pads(key, block)
        new = _BLOCK[block]
        self._inner = new(ipad)
        self._outer = new(opad)

    def __repr__(self) -> str:
        return "HmacKey(<secret>)"

    def with_prefix(self, prefix: bytes) -> HmacKey:
        """The same key with ``prefix`` absorbed: ``k.with_prefix(p).mac(d) == k.mac(p + d)``."""
        k = HmacKey.__new__(HmacKey)
        k._inner = self._inner.copy()
        k._inner.update(prefix)
        k._outer = self._outer
        return k

    def mac(self, data: bytes) -> bytes:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def expand(self, info: bytes, length: int) -> bytes:
        """RFC 5869 HKDF-Expand with this key as PRK."""
        if length == 32:  # every key but KEYMAT: one block
            return self.mac(info + b"\x01")
        if not 0 < length <= 255 * 32:
            raise ValueError(f"HKDF-Expand cannot produce {length} bytes")
        inner0, outer0 = self._inner, self._outer
        out: list[bytes] = []
        t = b""
        for i in range(1, (length + 31) // 32 + 1):
            inner = inner0.copy()
            inner.update(t + info + _COUNTER[i])
            outer = outer0.copy()
            outer.update(inner.digest())
            t = outer.digest()
            out.append(t)
        return b"".join(out)[:length]


_COUNTER = [bytes((i,)) for i in range(256)]


_hmac_digest = _stdlib_hmac.digest


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA-256 (RFC 2104) for a key used once (7 calls per exchange).

    ``hmac.digest`` is OpenSSL's one-shot HMAC: one call into C, measured 2.6 us against
    3.6 us for the pads computed in Python (python -m timeit, 32-byte key, 150 bytes).
    """
    return _hmac_digest(key, data, "sha256")


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    """RFC 5869 HKDF-Extract with SHA-256 (an empty salt means 32 zero bytes)."""
    return hmac_sha256(salt or b"\x00" * 32, ikm)


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF-Expand with SHA-256."""
    return HmacKey(prk).expand(info, length)


def macs_equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison (every MAC and cookie check goes through here)."""
    return _stdlib_hmac.compare_digest(a, b)


def fingerprint(secret: bytes) -> str:
    """A short, one-way label safe to print or log in place of a key."""
    return hashlib.sha256(L_FINGERPRINT + secret).hexdigest()[:16]


def handle_for(secret: bytes) -> bytes:
    """The lookup handle of a hardened credential: public, unlinkable to the previous one."""
    return hmac_sha256(secret, L_HANDLE)[:HANDLE_LEN]


_MODE_CODE = {Mode.TRANSPORT: 1, Mode.TUNNEL: 2}


def mode_code(mode: Mode) -> int:
    return _MODE_CODE[mode]


def _packed(addr: str) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET, addr)
    except OSError:
        return ipaddress.ip_address(addr).packed


def _ts_bytes(ts: TrafficSelector) -> bytes:
    a, b = _packed(ts.start_addr), _packed(ts.end_addr)
    ts_type = 7 if len(a) == 4 else 8  # TS_IPV4_ADDR_RANGE / TS_IPV6_ADDR_RANGE
    return struct.pack(">BBHH", ts_type, ts.protocol, ts.start_port, ts.end_port) + a + b


def params_bytes(params: SAParams) -> bytes:
    """Canonical encoding of what both peers must agree on (addresses and ports excluded:
    they may change between sessions, e.g. NAT rebinding; the installer uses observed ones)."""
    out = [
        struct.pack(
            ">BHHH",
            _MODE_CODE[params.mode],
            int(params.encr),
            params.encr_key_bits,
            int(params.integ),
        ),
        struct.pack(">B", len(params.tsi)),
        *(_ts_bytes(t) for t in params.tsi),
        struct.pack(">B", len(params.tsr)),
        *(_ts_bytes(t) for t in params.tsr),
    ]
    return b"".join(out)


class ParamsInfo(NamedTuple):
    """What the hot path needs from an ``SAParams``, computed once per object."""

    digest: bytes  # params_digest
    wire: tuple[int, int, int, int]  # (ENCR, key bits, INTEG, mode code) as in RESUME_SA
    encr_len: int  # encryption key bytes incl. salt
    keymat_len: int  # KEYMAT bytes of one direction


_MEMO_SIZE = 4096
_BY_ID: IdentityMemo[SAParams, ParamsInfo] = IdentityMemo(_MEMO_SIZE)
_BY_VALUE: Memo[tuple[object, ...], ParamsInfo] = Memo(_MEMO_SIZE)


def _params_key(p: SAParams) -> tuple[object, ...]:
    """Exactly the fields ``ParamsInfo`` depends on, as plain values (cheaper to hash and
    compare than the nested dataclasses)."""
    return (
        p.mode,
        p.encr,
        p.encr_key_bits,
        p.integ,
        tuple([(t.start_addr, t.end_addr, t.protocol, t.start_port, t.end_port) for t in p.tsi]),
        tuple([(t.start_addr, t.end_addr, t.protocol, t.start_port, t.end_port) for t in p.tsr]),
    )


def params_info(params: SAParams) -> ParamsInfo:
    """Memoised by object identity, then by value.

    Why both: hashing a nested frozen dataclass costs a quarter of computing the digest, and
    the same object usually comes twice (message 1 and 3); but a store builds a new
    ``SAParams`` per lookup, while a deployment has only a few distinct parameter sets.
    SAParams holds no secret, so keeping it costs memory only.
    """
    hit = _BY_ID.get(params)
    if hit is not None:
        return hit
    key = _params_key(params)
    info = _BY_VALUE.get(key)
    if info is None:
        e, klen = key_lengths(params)
        info = ParamsInfo(
            hashlib.sha256(L_PARAMS + params_bytes(params)).digest(),
            (int(params.encr), params.encr_key_bits, int(params.integ), _MODE_CODE[params.mode]),
            e,
            klen,
        )
        _BY_VALUE.put(key, info)
    return _BY_ID.put(params, info)


def params_digest(params: SAParams) -> bytes:
    """SHA-256 over ``params_bytes``."""
    return params_info(params).digest


def context(cred: Credential) -> bytes:
    """``ctx``: binds identities, handle, generation and algorithms into every derived key."""
    id_i, id_r, handle = cred.id_i, cred.id_r, cred.handle
    return b"".join(
        (
            _U16.pack(len(id_i)),
            id_i,
            _U16.pack(len(id_r)),
            id_r,
            _U16.pack(len(handle)),
            handle,
            _U32.pack(cred.generation),
            params_info(cred.params).digest,
        )
    )


class RunSecrets:
    """PRK and ctx of one run; each key is expanded only when asked for.

    Why lazy: the responder needs only K_mac_r to answer message 1; KEYMAT and the
    successor are expanded once message 3 has been verified.  The PRK's HMAC pads are
    absorbed on the second expansion (a message 1 needs one, a message 3 five or six).
    """

    __slots__ = ("_key", "_mac_i", "_mac_r", "_used", "ctx", "prk")

    def __init__(self, prk: bytes, ctx: bytes, many: bool = False) -> None:
        self.prk = prk
        self.ctx = ctx
        self._mac_i = b""
        self._mac_r = b""
        self._key: HmacKey | None = HmacKey(prk) if many else None
        self._used = False

    def __repr__(self) -> str:
        return "RunSecrets(<secret>)"

    def _expand(self, info: bytes, length: int) -> bytes:
        key = self._key
        if key is None:
            if not self._used and length == 32:
                self._used = True
                return hmac_sha256(self.prk, info + b"\x01")
            key = self._key = HmacKey(self.prk)
        return key.expand(info, length)

    def mac_i(self) -> bytes:
        if not self._mac_i:
            self._mac_i = self._expand(L_MAC_I + self.ctx, 32)
        return self._mac_i

    def mac_r(self) -> bytes:
        if not self._mac_r:
            self._mac_r = self._expand(L_MAC_R + self.ctx, 32)
        return self._mac_r

    def keymat(self, spi_i2r: int, spi_r2i: int, length: int) -> bytes:
        return self._expand(L_ESP + self.ctx + _U32X2.pack(spi_i2r, spi_r2i), length)

    def successor_secret(self) -> bytes:
        return self._expand(L_SUCCESSOR + self.ctx, SECRET_LEN)


def run_secrets(
    cred: Credential,
    nonce_i: bytes,
    nonce_r: bytes,
    dh: bytes,
    many: bool = False,
    ss: bytes = b"",
) -> RunSecrets:
    """``PRK = HKDF-Extract(lp(N_I) | lp(N_R), S | DH | SS)`` and ``ctx`` of the credential
    (``DH``: the X25519 secret, ``SS``: the ML-KEM-768 shared secret; each may be empty).
    ``many``: the caller will expand several keys (absorb the PRK's pads at once)."""
    return RunSecrets(
        hkdf_extract(lp(nonce_i) + lp(nonce_r), cred.secret + dh + ss), context(cred), many
    )


@dataclass(frozen=True)
class RunKeys:
    """Everything one hardened run derives (both sides compute the same values)."""

    prk: bytes = field(repr=False)
    mac_i: bytes = field(repr=False)
    mac_r: bytes = field(repr=False)
    keymat: bytes = field(repr=False)
    successor_secret: bytes = field(repr=False)
    successor_handle: bytes


def derive_run(
    cred: Credential,
    nonce_i: bytes,
    nonce_r: bytes,
    dh: bytes,
    spi_i2r: int,
    spi_r2i: int,
    ss: bytes = b"",
) -> RunKeys:
    """All keys of one hardened run.  ``spi_i2r`` was chosen by the responder, ``spi_r2i``
    by the initiator (each receiver picks the SPI of the SA it receives on)."""
    rs = run_secrets(cred, nonce_i, nonce_r, dh, ss=ss)
    return complete_run(cred, rs, spi_i2r, spi_r2i)


def complete_run(cred: Credential, rs: RunSecrets, spi_i2r: int, spi_r2i: int) -> RunKeys:
    successor = rs.successor_secret()
    return RunKeys(
        prk=rs.prk,
        mac_i=rs.mac_i(),
        mac_r=rs.mac_r(),
        keymat=rs.keymat(spi_i2r, spi_r2i, 2 * params_info(cred.params).keymat_len),
        successor_secret=successor,
        successor_handle=handle_for(successor),
    )


def mac_msg2(mac_key_r: bytes, msg1: bytes, msg2_prefix: bytes) -> bytes:
    return hmac_sha256(mac_key_r, b"".join((L_MSG2, lp(msg1), msg2_prefix)))


def mac_msg3(mac_key_i: bytes, msg1: bytes, msg2: bytes, msg3_prefix: bytes) -> bytes:
    return hmac_sha256(mac_key_i, b"".join((L_MSG3, lp(msg1), lp(msg2), msg3_prefix)))


_KEY_LENGTHS = {
    (encr, bits, integ): ((bits // 8) + encr.salt_len, (bits // 8) + encr.salt_len + integ.key_len)
    for encr in Encr
    for bits in (128, 192, 256)
    for integ in Integ
}


def key_lengths(params: SAParams) -> tuple[int, int]:
    """(encryption key length incl. salt, KEYMAT length of one direction)."""
    hit = _KEY_LENGTHS.get((params.encr, params.encr_key_bits, params.integ))
    return hit if hit is not None else (params.encr_key_len, params.key_material_len)


def split_keymat(
    params: SAParams, keymat: bytes, spi_i2r: int, spi_r2i: int
) -> tuple[DirectionKeys, DirectionKeys]:
    """KEYMAT -> (i_to_r, r_to_i), each encryption key (salt included) then integrity key."""
    e, klen = key_lengths(params)
    if len(keymat) != 2 * klen:
        raise ValueError("KEYMAT length does not match the parameters")
    a, b = keymat[:klen], keymat[klen:]
    return (
        DirectionKeys(spi_i2r, a[:e], a[e:]),
        DirectionKeys(spi_r2i, b[:e], b[e:]),
    )


def sa_pair(
    role: str,
    cred: Credential,
    keys: RunKeys,
    spi_i2r: int,
    spi_r2i: int,
    lifetimes: Lifetimes,
) -> SAPair:
    i2r, r2i = split_keymat(cred.params, keys.keymat, spi_i2r, spi_r2i)
    return SAPair(role=role, params=cred.params, i_to_r=i2r, r_to_i=r2i, lifetimes=lifetimes)


def successor_credential(cred: Credential, keys: RunKeys, mlkem: bool = False) -> Credential:
    """Generation g+1: new secret and handle; identities and parameters carried over, the
    lineage advanced by the run (``mlkem``: an ML-KEM secret was mixed in)."""
    return Credential(
        mode=ProtocolMode.HARDENED,
        handle=keys.successor_handle,
        generation=cred.generation + 1,
        secret=keys.successor_secret,
        id_i=cred.id_i,
        id_r=cred.id_r,
        params=cred.params,
        lineage=cred.lineage.after_run(mlkem),
    )


def finish_run(
    role: str,
    cred: Credential,
    rs: RunSecrets,
    spi_i2r: int,
    spi_r2i: int,
    lifetimes: Lifetimes,
    mlkem: bool = False,
) -> tuple[SAPair, Credential]:
    """The SA pair and the successor credential of a verified run: what ``complete_run``,
    ``sa_pair`` and ``successor_credential`` give, without the intermediate ``RunKeys``
    (the responder's message 3 path)."""
    params = cred.params
    info = params_info(params)
    e, klen = info.encr_len, info.keymat_len
    keymat = rs.keymat(spi_i2r, spi_r2i, 2 * klen)
    successor = rs.successor_secret()
    sa = SAPair(
        role,
        params,
        DirectionKeys(spi_i2r, keymat[:e], keymat[e:klen]),
        DirectionKeys(spi_r2i, keymat[klen : klen + e], keymat[klen + e :]),
        lifetimes,
    )
    succ = Credential(
        ProtocolMode.HARDENED,
        handle_for(successor),
        cred.generation + 1,
        successor,
        cred.id_i,
        cred.id_r,
        params,
        None,
        cred.lineage.after_run(mlkem),
    )
    return sa, succ


def esp_spi_from(raw4: bytes) -> int:
    """Map 4 random bytes to a usable ESP SPI (values below 256 are reserved): add 256."""
    spi = int.from_bytes(raw4, "big")
    return spi + MIN_ESP_SPI if spi < MIN_ESP_SPI else spi


def addr_bytes(addr: tuple[str, int]) -> bytes:
    """u8 IP version | packed address | u16 port (the peer address bound into responder state)."""
    host = addr[0]
    try:
        return b"\x04" + socket.inet_pton(socket.AF_INET, host) + _U16.pack(addr[1])
    except OSError:
        # IPv6, possibly with a scope ("fe80::1%eth0"); ipaddress normalises both
        ip = ipaddress.ip_address(host)
        return struct.pack(">B", ip.version) + ip.packed + _U16.pack(addr[1])


class ResponderValues(NamedTuple):
    """What the stateless responder computes for a message 1 and recomputes for its message 3
    (all three values are public: they appear in message 2)."""

    nonce_r: bytes
    spi_r: bytes
    esp_spi: int


_ZERO8 = b"\x00" * 8
_ONE8 = b"\x00" * 7 + b"\x01"


def _values_from(v: bytes) -> ResponderValues:
    spi_r = v[32:40]
    if spi_r == _ZERO8:
        spi_r = _ONE8
    spi = int.from_bytes(v[40:44], "big")
    return _new_tuple(
        ResponderValues, (v[:32], spi_r, spi + MIN_ESP_SPI if spi < MIN_ESP_SPI else spi)
    )


def _prf_input(tick: int, addr: tuple[str, int], msg1: bytes) -> bytes:
    return L_RESPONDER_VALUES + _U64.pack(tick) + addr_bytes(addr) + lp(msg1)


def responder_prf(server_secret: bytes, tick: int, addr: tuple[str, int], msg1: bytes) -> bytes:
    """``V = HMAC-SHA-512(server_secret, "ikeresume v1 responder values" | u64(tick) | addr
    | lp(m1))``: one primitive call for all 44 bytes (the responder computes it for every
    message 1 and message 3)."""
    return HmacKey(server_secret, 128).mac(_prf_input(tick, addr, msg1))


def responder_values(
    server_secret: bytes, tick: int, addr: tuple[str, int], msg1: bytes
) -> ResponderValues:
    """N_R, responder IKE SPI and inbound ESP SPI from (secret, tick, address, message 1):
    a message-1 flood allocates nothing, message 3 recomputes them.  (The responder's X25519
    key is *not* derived here: it is random per tick and erased, see ``Responder``.)"""
    return _values_from(responder_prf(server_secret, tick, addr, msg1))


class ResponderPrf:
    """``responder_values`` for one server secret, for a responder's hot path.

    The secret's HMAC-SHA-512 pads are absorbed once, and the label and ``u64(tick)`` once
    per tick (the input starts with them), so a message 1 or 3 hashes only
    ``addr | lp(m1)``.  Same bytes as :func:`responder_values`.
    """

    __slots__ = ("_key", "_ticks")

    #: Ticks whose prefixed state is kept (message 3 needs the current and previous one).
    KEEP_TICKS = 3

    def __init__(self, server_secret: bytes) -> None:
        self._key = HmacKey(server_secret, 128)
        self._ticks: dict[int, HmacKey] = {}

    def __repr__(self) -> str:
        return "ResponderPrf(<secret>)"

    def values(self, tick: int, addr: tuple[str, int], msg1: bytes) -> ResponderValues:
        key = self._ticks.get(tick)
        if key is None:
            key = self._key.with_prefix(L_RESPONDER_VALUES + _U64.pack(tick))
            self._ticks[tick] = key
            while len(self._ticks) > self.KEEP_TICKS:
                del self._ticks[min(self._ticks)]
        return _values_from(key.mac(addr_bytes(addr) + lp(msg1)))


# --- bootstrap from a daemon-negotiated CHILD_SA (used by ikeshim.harvest) ------------------


def _key_ikm(i_to_r: DirectionKeys, r_to_i: DirectionKeys) -> bytes:
    return i_to_r.encr_key + i_to_r.integ_key + r_to_i.encr_key + r_to_i.integ_key


def bootstrap_credential(
    params: SAParams,
    i_to_r: DirectionKeys,
    r_to_i: DirectionKeys,
    id_i: bytes,
    id_r: bytes,
) -> Credential:
    """Generation 0 of a hardened credential from a CHILD_SA both peers can read.

        S_0      = HKDF-Expand(HKDF-Extract("ikeresume v1 bootstrap", keys),
                               "ikeresume v1 bootstrap" | u32(SPI_i2r) | u32(SPI_r2i)
                               | lp(ID_I) | lp(ID_R) | params_digest, 32)
        keys     = encr_i2r | integ_i2r | encr_r2i | integ_r2i
        handle_0 = HMAC-SHA256(S_0, "ikeresume v1 handle")[:16]

    Both peers call this independently and get the same secret and handle.
    """
    if not id_i or not id_r:
        raise ValueError("identities are required")
    prk = hkdf_extract(L_BOOTSTRAP, _key_ikm(i_to_r, r_to_i))
    info = (
        L_BOOTSTRAP
        + struct.pack(">II", i_to_r.spi, r_to_i.spi)
        + lp(id_i)
        + lp(id_r)
        + params_digest(params)
    )
    secret = hkdf_expand(prk, info, SECRET_LEN)
    return Credential(
        mode=ProtocolMode.HARDENED,
        handle=handle_for(secret),
        generation=0,
        secret=secret,
        id_i=id_i,
        id_r=id_r,
        params=params,
    )


def bootstrap_paper_credential(
    params: SAParams,
    i_to_r: DirectionKeys,
    r_to_i: DirectionKeys,
    id_i: bytes,
    id_r: bytes,
) -> Credential:
    """Paper mode (INSECURE, 2007 semantics): the CHILD_SA keys themselves are the credential.

    The lookup handle is ID_I (the proposal sends the identity in clear); ``secret`` is empty.
    """
    if not id_i or not id_r:
        raise ValueError("identities are required")
    return Credential(
        mode=ProtocolMode.PAPER,
        handle=id_i,
        generation=0,
        secret=b"",
        id_i=id_i,
        id_r=id_r,
        params=params,
        paper_keys=PaperKeys(i_to_r=i_to_r, r_to_i=r_to_i),
    )


# --- paper mode (2007 proposal, verbatim) ---------------------------------------------------


def paper_auth_key(keys: DirectionKeys) -> bytes:
    """SK of one direction: its IPsec authentication key (the encryption key for AEAD
    ciphers, which have none; the proposal predates AEAD)."""
    return keys.integ_key or keys.encr_key


def paper_mac(key: bytes, ident: bytes, nonce_i: bytes, nonce_r: bytes) -> bytes:
    """MAC_SK(ID | N_I | N_R) with plain concatenation, as the proposal writes it."""
    return hmac_sha256(key, ident + nonce_i + nonce_r)


def paper_successor(cred: Credential) -> Credential:
    """Paper mode has no ratchet: the same keys, the generation counter moves on."""
    return Credential(
        mode=ProtocolMode.PAPER,
        handle=cred.handle,
        generation=cred.generation + 1,
        secret=cred.secret,
        id_i=cred.id_i,
        id_r=cred.id_r,
        params=cred.params,
        paper_keys=cred.paper_keys,
        lineage=cred.lineage,
    )


def paper_sa_pair(role: str, cred: Credential, lifetimes: Lifetimes) -> SAPair:
    """The cached SA reused as-is: same SPIs, same keys (the flaw the hardened mode fixes)."""
    if cred.paper_keys is None:
        raise ValueError("not a paper credential")
    return SAPair(
        role=role,
        params=cred.params,
        i_to_r=cred.paper_keys.i_to_r,
        r_to_i=cred.paper_keys.r_to_i,
        lifetimes=lifetimes,
    )


# --- X25519 (RFC 7748) ------------------------------------------------------------------------


def x25519_public(private: bytes) -> bytes:
    """Public share for a 32-byte private key (clamping is done by the primitive)."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def x25519_keypair(private: bytes) -> tuple[X25519PrivateKey, bytes]:
    key = X25519PrivateKey.from_private_bytes(private)
    return key, key.public_key().public_bytes_raw()


def x25519_shared_untrusted(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """Shared secret with a peer's share; a low-order share (all-zero output) is a DecodeError."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:
        raise DecodeError(f"unusable X25519 share: {exc}") from None


# --- ML-KEM-768 (FIPS 203) ------------------------------------------------------------------


def mlkem_keypair(seed: bytes) -> tuple[MLKEM768PrivateKey, bytes]:
    """The initiator's key pair from its 64-byte seed ``d | z`` (FIPS 203 ML-KEM.KeyGen_internal,
    the seed form both cores draw) and the encapsulation key it sends."""
    key = MLKEM768PrivateKey.from_seed_bytes(seed)
    return key, key.public_key().public_bytes_raw()


def mlkem_encapsulate_untrusted(ek: bytes) -> tuple[bytes, bytes]:
    """The responder's (ciphertext, shared secret) for a peer's encapsulation key, with the
    library's own randomness.  A key that fails FIPS 203's input check (a coefficient not
    reduced modulo q) is a DecodeError: the responder refuses it like an unusable X25519
    share."""
    try:
        secret, ct = MLKEM768PublicKey.from_public_bytes(ek).encapsulate()
    except ValueError as exc:
        raise DecodeError(f"unusable ML-KEM-768 encapsulation key: {exc}") from None
    return ct, secret


def mlkem_decapsulate(key: MLKEM768PrivateKey, ct: bytes) -> bytes:
    """The shared secret of a ciphertext.  A forged or damaged ciphertext of the right length
    gives a pseudorandom wrong secret (FIPS 203 implicit rejection): the MAC then fails."""
    return key.decapsulate(ct)


def ke_digest(data: bytes) -> bytes:
    """SHA-256 of an ML-KEM key or ciphertext: its stand-in in the compact form."""
    return hashlib.sha256(data).digest()
