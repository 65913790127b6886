"""Fuzz target: one datagram into a fresh Python and a fresh native responder (differential).

Both must send the same bytes to the same address, emit equal events and count the same;
lookups are answered "unknown" (the NACK path) so a message 1 that parses goes all the way.
A panic in the engine would surface as NativePanic and escape.  Seeds: the spec vectors'
messages.  Without the extension built this target has nothing to run (tests/native/
fails under CI in that case).
"""

from __future__ import annotations

from resume import native
from resume.events import CredentialNeeded
from resume.responder import Responder, ResponderConfig

SECRET = b"F" * 32
ADDR = ("198.51.100.7", 4500)
NOW = 1_750_000_003.5


def one_input(data: bytes) -> None:
    if not native.available():
        return
    py = Responder(ResponderConfig(), SECRET, rng=native.seeded_rng(b"fuzz"))
    nat = native.NativeResponder(ResponderConfig(), SECRET, rng=native.SeededRng(b"fuzz"))
    for r in (py, nat):
        r.receive_datagram(data, ADDR, NOW)
    while True:
        a, b = py.next_event(), nat.next_event()
        assert a == b, (data.hex(), a, b)
        if a is None:
            break
        if isinstance(a, CredentialNeeded):
            py.provide_credential(a.token, None, None, NOW)
            nat.provide_credential(a.token, None, None, NOW)
    assert nat.datagrams_to_send(NOW) == py.datagrams_to_send(NOW), data.hex()
    assert nat.stats == py.stats, data.hex()
