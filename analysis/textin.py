"""Reading a log file's text: decompression by magic, UTF-8 with replacement, and the
errors a damaged file raises, turned into one :class:`StreamError` (the reader's problem
line) after everything readable before the damage was given out.

Shared by the line reader (:mod:`analysis.logs`) and the CSV fast path
(:mod:`analysis.fastcsv`).
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import lzma
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, cast

from analysis.session import Issue, LogParseError

MAX_LINE = 1 << 16  # characters; longer lines are reported and skipped
OVERLONG = f"line longer than {MAX_LINE:,} characters (skipped)"

# What a broken compressed stream raises while being read (all end the file, not the run)
_STREAM_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)


def open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed when its magic says gzip, bzip2 or xz."""
    raw = path.open("rb")
    head = raw.peek(6)[:6]
    if head[:2] == b"\x1f\x8b":
        return cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    if head[:3] == b"BZh":
        return cast(IO[bytes], bz2.BZ2File(raw, "rb"))
    if head[:6] == b"\xfd7zXZ\x00":
        return cast(IO[bytes], lzma.LZMAFile(raw, "rb"))
    return raw


def open_text(path: Path) -> IO[str]:
    """UTF-8 text (undecodable bytes become U+FFFD), no newline translation."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8", errors="replace", newline="")


class StreamError(Exception):
    """The rest of a file cannot be read (truncated or corrupt compressed data)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(_stream_reason(cause))


def read_text_chunks(path: Path, chars: int = 1 << 20) -> Iterator[str]:
    """The file's text in pieces of about ``chars`` characters.  Compressed data is read
    in small steps, so a damaged stream gives everything before the damage, then
    :class:`StreamError`; ``OSError`` opening the file becomes :class:`LogParseError`."""
    try:
        raw = open_binary(path)
    except OSError as e:
        raise LogParseError(Issue(str(path), f"cannot read: {e.strerror or e}")) from e
    step = (1 << 16) if not isinstance(raw, io.BufferedReader) else chars
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with raw:
        pending: list[str] = []
        size = 0
        while True:
            try:
                data = raw.read(step)
            except _STREAM_ERRORS as e:
                if pending:
                    yield "".join(pending)
                raise StreamError(e) from e
            text = decoder.decode(data, final=not data)
            if text:
                pending.append(text)
                size += len(text)
            if size >= chars or (not data and pending):
                yield "".join(pending)
                pending, size = [], 0
            if not data:
                return


def _stream_reason(e: BaseException) -> str:
    what = type(e).__name__
    return f"unreadable from here on ({what}: {str(e)[:120] or 'truncated or corrupt data'})"


