"""Fuzz target: every ``*_untrusted`` wire decoder (any bytes give a value or DecodeError).

The same property runs under hypothesis in ``tests/resume/test_wire.py``
(``test_fuzz_decoder_raises_only_decode_error``); this target adds coverage guidance.
Seeds: the spec vectors' messages.
"""

from __future__ import annotations

import contextlib

from resume import wire
from resume.errors import DecodeError
from tests.resume import wire_oracle

DECODERS = (
    wire.peek_header_untrusted,
    wire.decode_message_untrusted,
    wire_oracle.decode_message_construct_untrusted,
    wire.parse_request_untrusted,
    wire.parse_response_untrusted,
    wire.strip_non_esp_marker_untrusted,
    wire.decode_sa_untrusted,
    wire.decode_id_untrusted,
    wire.decode_ke_untrusted,
)


def one_input(data: bytes) -> None:
    for decode in DECODERS:
        with contextlib.suppress(DecodeError):
            decode(data)
