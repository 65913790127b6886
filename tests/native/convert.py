"""The Python core's decoded messages as the native decoders' tuples (for comparing them).

Kept free of hypothesis so the atheris target (tests/fuzz/fuzz_native_wire.py) can use it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from resume import wire
from resume.errors import DecodeError


def sa(s: wire.ResumeSA) -> tuple[int, ...]:
    return tuple(s)


def request(r: wire.Request) -> tuple[Any, ...]:
    if isinstance(r, wire.HardenedInit):
        return (
            "hardened_init",
            tuple(r.header),
            r.handle,
            sa(r.sa),
            r.nonce,
            r.ke,
            r.mlkem,
            r.compact,
        )
    if isinstance(r, wire.HardenedAuth):
        return ("hardened_auth", tuple(r.header), request(r.init), r.mac)
    if isinstance(r, wire.PaperInit):
        return ("paper_init", tuple(r.header), r.id_i, r.nonce)
    return ("paper_auth", tuple(r.header), r.id_i, r.mac)


def response(r: wire.Response) -> tuple[Any, ...]:
    if isinstance(r, wire.HardenedResp):
        return (
            "hardened_resp",
            tuple(r.header),
            sa(r.sa),
            r.nonce,
            r.ke,
            r.mlkem,
            r.mac,
            r.compact,
        )
    if isinstance(r, wire.PaperResp):
        return ("paper_resp", tuple(r.header), r.id_r, r.nonce, r.mac)
    return ("nack", tuple(r.header))


def message(m: wire.Message) -> tuple[Any, ...]:
    return (tuple(m.header), [(p.type, p.critical, p.body) for p in m.payloads])


def identity(x: Any) -> Any:
    return x


def outcome(fn: Callable[[bytes], Any], data: bytes, conv: Callable[[Any], Any]) -> Any:
    """``conv(fn(data))``, or the DecodeError class when ``fn`` refuses ``data``."""
    try:
        return conv(fn(data))
    except DecodeError:
        return DecodeError


def pairs(n: Any) -> list[tuple[Callable[[bytes], Any], Callable[[bytes], Any], Any]]:
    """(Python decoder, native decoder, converter of the Python value) for every decoder."""
    return [
        (wire.parse_request_untrusted, n.parse_request, request),
        (wire.parse_response_untrusted, n.parse_response, response),
        (wire.peek_header_untrusted, n.peek_header, tuple),
        (wire.peek_handle_untrusted, n.peek_handle, identity),
        (wire.decode_message_untrusted, n.decode_message, message),
        (wire.strip_non_esp_marker_untrusted, n.strip_non_esp_marker, identity),
        (wire.decode_sa_untrusted, n.decode_sa, sa),
        (wire.decode_id_untrusted, n.decode_id, identity),
        (wire.decode_ke_untrusted, n.decode_ke, tuple),
    ]


def assert_same(n: Any, data: bytes) -> None:
    """Every native decoder accepts/refuses ``data`` as the Python one, with equal fields."""
    for py, nat, conv in pairs(n):
        expected = outcome(py, data, conv)
        got = outcome(nat, data, identity)
        assert got == expected, (nat.__name__, data.hex(), expected, got)
