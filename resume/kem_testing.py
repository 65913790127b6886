"""Deterministic ML-KEM-768 encapsulation, for reproducible runs only (vectors, tests).

Why it exists: ML-KEM encapsulation draws 32 random bytes ``m`` inside the library, so a
responder's message 2 cannot be replayed byte for byte.  The responder therefore takes its
encapsulation as an injected function, like ``rng``; this module gives the deterministic
one, FIPS 203 ``ML-KEM.Encaps_internal(ek, m)`` with ``m`` from a caller's draw, written
out from the standard (sections 4 and 5, algorithms 13-18) on :mod:`hashlib` (SHA3-256,
SHA3-512, SHAKE128, SHAKE256).  The native core's twin is the ``ml-kem`` crate's
``encapsulate_deterministic``; ``tests/resume/test_kem_testing.py`` checks this one
against ``cryptography``'s decapsulation, ``tests/native`` checks the two against each other.

It is NOT for protecting traffic: plain Python integers, no constant-time arithmetic.  The
product encapsulates with ``cryptography`` (``resume.keyschedule.mlkem_encapsulate_untrusted``)
and aws-lc-rs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PublicKey

from resume.errors import DecodeError

Q = 3329
N = 256
K = 3  # ML-KEM-768
ETA1 = ETA2 = 2
DU, DV = 10, 4
EK_LEN = 384 * K + 32
CT_LEN = 32 * (DU * K + DV)


def _bitrev7(i: int) -> int:
    return int(f"{i:07b}"[::-1], 2)


#: zeta^BitRev7(i) mod q for the NTT (zeta = 17), and zeta^(2 BitRev7(i) + 1) for the
#: base-case products.
_ZETAS = [pow(17, _bitrev7(i), Q) for i in range(128)]
_GAMMAS = [pow(17, 2 * _bitrev7(i) + 1, Q) for i in range(128)]
_N_INV = 3303  # 128^-1 mod q


def _ntt(f: list[int]) -> list[int]:
    """Algorithm 9."""
    f = list(f)
    i = 1
    length = 128
    while length >= 2:
        for start in range(0, N, 2 * length):
            zeta = _ZETAS[i]
            i += 1
            for j in range(start, start + length):
                t = zeta * f[j + length] % Q
                f[j + length] = (f[j] - t) % Q
                f[j] = (f[j] + t) % Q
        length //= 2
    return f


def _ntt_inv(f: list[int]) -> list[int]:
    """Algorithm 10."""
    f = list(f)
    i = 127
    length = 2
    while length <= 128:
        for start in range(0, N, 2 * length):
            zeta = _ZETAS[i]
            i -= 1
            for j in range(start, start + length):
                t = f[j]
                f[j] = (t + f[j + length]) % Q
                f[j + length] = zeta * (f[j + length] - t) % Q
        length *= 2
    return [x * _N_INV % Q for x in f]


def _mul_ntt(f: list[int], g: list[int]) -> list[int]:
    """Algorithms 11 and 12."""
    h = [0] * N
    for i in range(128):
        a0, a1, b0, b1 = f[2 * i], f[2 * i + 1], g[2 * i], g[2 * i + 1]
        h[2 * i] = (a0 * b0 + a1 * b1 * _GAMMAS[i]) % Q
        h[2 * i + 1] = (a0 * b1 + a1 * b0) % Q
    return h


def _add(f: list[int], g: list[int]) -> list[int]:
    return [(a + b) % Q for a, b in zip(f, g, strict=True)]


def _sample_ntt(seed: bytes) -> list[int]:
    """Algorithm 7 (SHAKE128 rejection sampling)."""
    n = 840
    while True:
        stream = hashlib.shake_128(seed).digest(n)
        a: list[int] = []
        pos = 0
        while len(a) < N and pos + 3 <= n:
            c0, c1, c2 = stream[pos], stream[pos + 1], stream[pos + 2]
            pos += 3
            d1 = c0 + 256 * (c1 % 16)
            d2 = c1 // 16 + 16 * c2
            if d1 < Q:
                a.append(d1)
            if d2 < Q and len(a) < N:
                a.append(d2)
        if len(a) == N:
            return a
        n *= 2  # astronomically rare: more of the same stream


def _cbd(data: bytes, eta: int) -> list[int]:
    """Algorithm 8."""
    bits = int.from_bytes(data, "little")
    f = []
    for i in range(N):
        x = sum((bits >> (2 * i * eta + j)) & 1 for j in range(eta))
        y = sum((bits >> (2 * i * eta + eta + j)) & 1 for j in range(eta))
        f.append((x - y) % Q)
    return f


def _prf(eta: int, s: bytes, b: int) -> bytes:
    return hashlib.shake_256(s + bytes((b,))).digest(64 * eta)


def _encode(f: list[int], d: int) -> bytes:
    """Algorithm 5 (ByteEncode_d: little-endian bit order)."""
    acc = 0
    for i, x in enumerate(f):
        acc |= x << (d * i)
    return acc.to_bytes(32 * d, "little")


def _decode(data: bytes, d: int) -> list[int]:
    """Algorithm 6 (ByteDecode_d; d = 12 reduces modulo q)."""
    acc = int.from_bytes(data, "little")
    mask = (1 << d) - 1
    out = [(acc >> (d * i)) & mask for i in range(N)]
    return [x % Q for x in out] if d == 12 else out


def _compress(x: int, d: int) -> int:
    return ((x << d) + Q // 2) // Q % (1 << d)


def _decompress(y: int, d: int) -> int:
    return (y * Q + (1 << (d - 1))) >> d


def _pke_encrypt(ek: bytes, m: bytes, r: bytes) -> bytes:
    """Algorithm 14 (K-PKE.Encrypt)."""
    t_hat = [_decode(ek[384 * i : 384 * (i + 1)], 12) for i in range(K)]
    rho = ek[384 * K :]
    a_hat = [[_sample_ntt(rho + bytes((j, i))) for j in range(K)] for i in range(K)]
    n = 0
    y = []
    for _ in range(K):
        y.append(_cbd(_prf(ETA1, r, n), ETA1))
        n += 1
    e1 = []
    for _ in range(K):
        e1.append(_cbd(_prf(ETA2, r, n), ETA2))
        n += 1
    e2 = _cbd(_prf(ETA2, r, n), ETA2)
    y_hat = [_ntt(p) for p in y]
    u = []
    for i in range(K):  # u = NTT^-1(A^T o y) + e1
        acc = [0] * N
        for j in range(K):
            acc = _add(acc, _mul_ntt(a_hat[j][i], y_hat[j]))
        u.append(_add(_ntt_inv(acc), e1[i]))
    mu = [_decompress(b, 1) for b in _decode(m, 1)]
    acc = [0] * N
    for j in range(K):
        acc = _add(acc, _mul_ntt(t_hat[j], y_hat[j]))
    v = _add(_add(_ntt_inv(acc), e2), mu)
    c1 = b"".join(_encode([_compress(x, DU) for x in p], DU) for p in u)
    return c1 + _encode([_compress(x, DV) for x in v], DV)


def encapsulate_internal(ek: bytes, m: bytes) -> tuple[bytes, bytes]:
    """FIPS 203 ML-KEM.Encaps_internal (algorithm 17): (ciphertext, shared secret K).
    ``ek`` must already have passed the input check (:func:`deterministic_encapsulation`)."""
    if len(ek) != EK_LEN or len(m) != 32:
        raise ValueError("ML-KEM-768 takes a 1184-byte key and 32 bytes of randomness")
    g = hashlib.sha3_512(m + hashlib.sha3_256(ek).digest()).digest()
    shared, r = g[:32], g[32:]
    return _pke_encrypt(ek, m, r), shared


def deterministic_encapsulation(
    draw: Callable[[int], bytes],
) -> Callable[[bytes], tuple[bytes, bytes]]:
    """A ``Responder(encapsulate=...)`` whose randomness ``m`` is ``draw(32)`` per
    encapsulation.  The key is checked first as the product checks it (``cryptography``:
    FIPS 203 7.2 type and modulus checks; an unusable key draws nothing), so a run refuses
    the same keys whichever encapsulation it uses."""

    def encapsulate(ek: bytes) -> tuple[bytes, bytes]:
        check_encapsulation_key(ek)
        return encapsulate_internal(ek, draw(32))

    return encapsulate


def check_encapsulation_key(ek: bytes) -> None:
    """The product's check of a peer's encapsulation key (``cryptography``'s import:
    length, FIPS 203 7.2 modulus check); DecodeError when it is unusable."""
    try:
        MLKEM768PublicKey.from_public_bytes(ek)
    except ValueError as exc:
        raise DecodeError(f"unusable ML-KEM-768 encapsulation key: {exc}") from None
