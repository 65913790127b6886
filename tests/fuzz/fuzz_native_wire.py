"""Fuzz target: every decoder of ``resume._native`` (the Rust codec) through the binding.

Any bytes give a value or ``DecodeError`` (a panic would surface as NativePanic and escape),
and -- differential -- every native decoder accepts and refuses exactly what the Python
decoder does, with equal fields.  Seeds: the spec vectors' messages, a NAT-T framed
message 1 and payload bodies.  Without the extension built this target has nothing to run
(tests/native/ fails under CI in that case).
"""

from __future__ import annotations

from resume import native
from tests.native.convert import assert_same


def one_input(data: bytes) -> None:
    if native.available():
        n = native._require()
        assert_same(n, data)
        for body in (data[:12], data[:36], data[4:]):
            assert_same(n, body)
