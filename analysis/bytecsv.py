"""Byte-level columnar parse of a plain CSV chunk: numbers without a Python object per field.

The string-level fast path (:mod:`analysis.fastcsv`) still makes a Python ``str`` per field
and joins them again for numpy.  Here a chunk stays one ``uint8`` array: delimiter and newline
positions give every field's byte range; a numeric field is fetched as one 16-byte row
(right-aligned on the field's end, a single gather through an overlapping ``V16`` view),
the bytes outside the field are replaced by ``'0'`` (leading zeros do not change a number),
and the digits are checked and converted eight at a time with the SWAR routine of
simdjson / fast_float (``parse_eight_digits_unrolled``).  Users are fetched left-aligned, up
to 32 bytes, and made unique by a hash that is then verified byte for byte.

Exactly equal to the row parser or nothing: a decimal number of seconds becomes integer
microseconds (integer part times 10**6 plus the first six fraction digits, the rest
truncated), as :func:`analysis.parsers.generic.decimal_us` does; values past year 9999
decline.  Anything outside the simple grammar (signs, exponents, quotes, a CR not
before LF, NUL, rows with another field count, fields over 16 digits, names over 32 bytes
or with surrounding white space, ...) makes the whole chunk return ``None`` and the caller
takes the slower paths, which report bad rows with file:line.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

PAD = 32  # bytes of padding around a chunk, so every 16/32-byte gather stays inside
MAX_NAME = 32
LITTLE = sys.byteorder == "little"

_ZEROS = np.uint64(0x3030303030303030)
_HI_NIBBLES = np.uint64(0xF0F0F0F0F0F0F0F0)
_SIX = np.uint64(0x0606060606060606)
_THREES = np.uint64(0x3333333333333333)
_MASK = np.uint64(0x000000FF000000FF)
_MUL1 = np.uint64(100 + (1000000 << 32))
_MUL2 = np.uint64(1 + (10000 << 32))
_LOW32 = np.uint64(0xFFFFFFFF)
_E8 = np.uint64(100_000_000)
_P10 = np.array([10**k for k in range(20)], dtype=np.uint64)
_MAX_S = 253_402_300_799  # 9999-12-31T23:59:59Z


def _tables() -> tuple[U64, U64, dict[int, U64]]:
    j = np.arange(16)
    keep_right = np.where(j[None, :] >= 16 - np.arange(17)[:, None], 0xFF, 0).astype(np.uint8)
    kr = keep_right.view(np.uint64).reshape(17, 2).copy()
    fill = (~kr) & _ZEROS
    left: dict[int, U64] = {}
    for w in (8, 16, 32):
        jj = np.arange(w)
        keep = np.where(jj[None, :] < np.arange(w + 1)[:, None], 0xFF, 0).astype(np.uint8)
        left[w] = keep.view(np.uint64).reshape(w + 1, w // 8).copy()
    return kr, fill, left


_KEEP_RIGHT, _FILL_RIGHT, _KEEP_LEFT = _tables()


def _window(raw: bytes, width: int) -> np.ndarray:
    """Every ``width`` bytes starting at each offset, as one overlapping array (no copy)."""
    return np.ndarray((len(raw) - width + 1,), dtype=f"V{width}", buffer=raw, strides=(1,))


def _eight(v: U64) -> U64:
    """Eight ASCII digits (first byte most significant) -> their value (fast_float)."""
    v = v - _ZEROS
    v = v * np.uint64(10) + (v >> np.uint64(8))
    v = ((v & _MASK) * _MUL1 + ((v >> np.uint64(16)) & _MASK) * _MUL2) >> np.uint64(32)
    out: U64 = v & _LOW32
    return out


def _all_digits(w: U64) -> bool:
    return bool(((w & _HI_NIBBLES) | (((w + _SIX) & _HI_NIBBLES) >> np.uint64(4)) == _THREES).all())


def _digits(win16: np.ndarray, end: I64, length: I64) -> U64 | None:
    """Fields of 0..16 ASCII digits ending at ``end`` (empty = 0); None if any is not."""
    if len(length) and (int(length.max()) > 16 or int(length.min()) < 0):
        return None
    w = win16[end - 16].view(np.uint64).reshape(-1, 2)
    w = (w & _KEEP_RIGHT.take(length, axis=0)) | _FILL_RIGHT.take(length, axis=0)
    if not _all_digits(w):
        return None
    out: U64 = _eight(w[:, 0]) * _E8 + _eight(w[:, 1])
    return out


def _integers(win16: np.ndarray, start: I64, end: I64) -> I64 | None:
    length = end - start
    if len(length) and int(length.min()) < 1:
        return None  # the row parser reads an empty byte count as 0: leave it to it
    v = _digits(win16, end, length)
    return None if v is None else v.astype(np.int64)


def _decimals(win16: np.ndarray, dots: I64, start: I64, end: I64) -> I64 | None:
    """``123``, ``123.``, ``.5``, ``123.456`` seconds -> exact integer microseconds
    (fraction digits past the sixth truncated), or None.

    ``dots``: sorted offsets of every ``.`` in the chunk."""
    length = end - start
    if len(length) and int(length.min()) < 1:
        return None
    last = np.searchsorted(dots, end) - 1  # the last '.' before the field's end
    if len(dots):
        at = dots.take(np.maximum(last, 0))
        has = (last >= 0) & (at >= start)
        dot = np.where(has, at, end)
    else:
        has = np.zeros(len(end), dtype=bool)
        dot = end
    ip = _digits(win16, dot, dot - start)
    k = np.where(has, end - dot - 1, 0)
    fp = _digits(win16, end, k)
    if ip is None or fp is None:
        return None
    if len(length) and int((length - has).min()) < 1:
        return None  # "." alone
    if len(ip) and int(ip.max()) > _MAX_S:
        return None  # past year 9999: the row parser reports it
    kk = np.minimum(k, 6)
    frac = fp // _P10.take(k - kk) * _P10.take(6 - kk)  # the first six digits, in us
    out: I64 = (ip * _P10[6] + frac).astype(np.int64)
    return out


def _names(
    raw: bytes, win: dict[int, np.ndarray], start: I64, end: I64
) -> tuple[list[str], I64] | None:
    """Distinct names in order of first appearance and each row's index into them."""
    length = end - start
    if not len(length):
        return [], np.zeros(0, dtype=np.int64)
    lo, hi = int(length.min()), int(length.max())
    if lo < 1 or hi > MAX_NAME:
        return None
    width = 8 if hi <= 8 else 16 if hi <= 16 else 32
    w = win[width][start].view(np.uint64).reshape(-1, width // 8)
    w = w & _KEEP_LEFT[width].take(length, axis=0)
    h = w[:, 0].copy()
    for i in range(1, width // 8):
        h = (h * np.uint64(0x9E3779B97F4A7C15)) ^ w[:, i]
    _, first, inv = np.unique(h, return_index=True, return_inverse=True)
    if width > 8 and not (w == w[first[inv]]).all():
        return None  # a hash collision: let the string path decide
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    names = []
    for i in first[order].tolist():
        s = raw[int(start[i]) : int(end[i])].decode("utf-8")
        if s != s.strip():
            return None
        names.append(s)
    idx: I64 = rank[inv.reshape(-1)].astype(np.int64)
    return names, idx


def chunk_columns(
    text: str, delim: str, cols: dict[str, int], width: int, names: dict[str, int],
    seen: set[str], counter: Iterator[int], max_line: int = 1 << 16,
) -> tuple[np.ndarray, ...] | None:
    """Columns (user number, start, end, bytes in, bytes out) of ``text`` (whole lines), or
    None when anything in it needs the row parser's judgement (a line over ``max_line``
    characters included).  ``names`` and ``seen`` are updated only on success."""
    if not LITTLE or not text or '"' in text or "\0" in text:
        return None
    if "\r" in text:  # Windows line ends read as csv.reader reads them; a lone CR declines
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            return None
    if not text.endswith("\n"):
        text += "\n"
    body = text.encode("utf-8")
    raw = bytes(PAD) + body + bytes(PAD)
    u8 = np.frombuffer(raw, dtype=np.uint8)
    nl = np.flatnonzero(u8 == 10)
    dl = np.flatnonzero(u8 == ord(delim))
    n = len(nl)
    if len(dl) != n * (width - 1):
        return None
    if n and int(np.diff(nl, prepend=PAD - 1).max()) - 1 > max_line:
        return None
    d = dl.reshape(n, width - 1)
    if (d[:, -1] > nl).any() or (d[1:, 0] < nl[:-1]).any():
        return None  # some row has another field count (every row's delimiters in its line)
    line_start = np.empty(n, dtype=np.int64)
    line_start[0] = PAD
    line_start[1:] = nl[:-1] + 1
    starts = np.column_stack([line_start, d + 1])
    ends = np.column_stack([d, nl])
    win16 = _window(raw, 16)

    def field(name: str) -> tuple[I64, I64]:
        return starts[:, cols[name]], ends[:, cols[name]]

    dots = np.flatnonzero(u8 == 46)
    start = _decimals(win16, dots, *field("start"))
    if start is None:
        return None
    if "end" in cols:
        end = _decimals(win16, dots, *field("end"))
    else:
        dur = _decimals(win16, dots, *field("duration"))
        end = None if dur is None else start + dur
        if end is not None and len(end) and int(end.max()) > (_MAX_S + 1) * 10**6 - 1:
            return None
    zeros = np.zeros(n, dtype=np.int64)
    b_in = _integers(win16, *field("bytes_in")) if "bytes_in" in cols else zeros
    b_out = _integers(win16, *field("bytes_out")) if "bytes_out" in cols else zeros
    if end is None or b_in is None or b_out is None or (end < start).any():
        return None
    wins = {w: _window(raw, w) for w in (8, 16, 32)}
    got = _names(raw, wins, *field("user"))
    if got is None:
        return None
    chunk_names, idx = got
    new_sids: list[str] = []
    if "session_id" in cols:
        s0, s1 = field("session_id")
        new_sids = [raw[a:b].decode("utf-8") for a, b in zip(s0.tolist(), s1.tolist(),
                                                            strict=True) if b > a]
        if len(set(new_sids)) != len(new_sids) or seen.intersection(new_sids):
            return None
    seen.update(new_sids)
    codes = np.fromiter(map(names.setdefault, chunk_names, counter), dtype=np.int64,
                        count=len(chunk_names))
    return codes[idx], start, end, b_in, b_out

