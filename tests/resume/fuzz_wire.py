"""Coverage-guided fuzz target for every ``*_untrusted`` decoder (optional, needs atheris).

    pip install atheris && python tests/resume/fuzz_wire.py -max_total_time=60

The same property runs in the normal test suite with hypothesis
(``test_wire.py::test_fuzz_decoder_raises_only_decode_error``): any bytes give a value or
DecodeError, never another exception.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from resume import wire, wire_construct, wire_messages
    from resume.errors import DecodeError

DECODERS = (
    wire.peek_header_untrusted,
    wire.decode_message_untrusted,
    wire_construct.decode_message_construct_untrusted,
    wire_messages.parse_request_untrusted,
    wire_messages.parse_response_untrusted,
    wire.strip_non_esp_marker_untrusted,
    wire_messages.decode_sa_untrusted,
    wire_messages.decode_id_untrusted,
    wire_messages.decode_ke_untrusted,
)


def test_one_input(data: bytes) -> None:
    for decode in DECODERS:
        with contextlib.suppress(DecodeError):
            decode(data)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
