"""Fuzz target: the sans-I/O initiator fed arbitrary datagrams (``Initiator.receive_datagram``).

Each input reaches a fresh initiator that has sent the genuine message 1 and waits.
Properties: no exception escapes; a datagram that does not parse as a response changes
nothing but the drop counters (no event, no datagram, same state and timers); the
initiator completes (asks for the successor to be saved, and sends nothing before that) only
on the genuine message 2, byte for byte; it gives up (falls back
to a full IKE) only on a NACK to message 1 with its own SPIi.
Seeds: the genuine exchange, the spec vectors' messages, truncations and bit flips.
"""

from __future__ import annotations

from resume.errors import DecodeError
from resume.events import FallbackToFullIKE, SaveSuccessor
from resume.testing import drain
from resume.wire import Nack, parse_response_untrusted
from tests.fuzz.exchange import GENUINE, NOW, SERVER, initiator, protocol_seeds, snapshot

DROP_COUNTERS = ("datagrams", "drop_malformed", "drop_wrong_spi")


def one_input(data: bytes) -> None:
    ini = initiator()
    ini.datagrams_to_send(NOW)  # message 1 is on its way
    before = snapshot(ini, DROP_COUNTERS)
    try:
        resp = parse_response_untrusted(data)
    except DecodeError:
        resp = None
    ini.receive_datagram(data, SERVER, NOW)
    events = drain(ini)
    sent = ini.datagrams_to_send(NOW)
    if resp is None:
        assert not events and not sent, (events, sent)
        assert snapshot(ini, DROP_COUNTERS) == before
    completed = [e for e in events if isinstance(e, SaveSuccessor)]
    assert len(completed) == (1 if data == GENUINE.msg2 else 0), completed
    if completed:
        assert not sent  # message 3 waits for the save
    if any(isinstance(e, FallbackToFullIKE) for e in events):
        assert isinstance(resp, Nack) and resp.header.message_id == 0
        assert resp.header.spi_i == GENUINE.msg1[:8]


def seeds() -> dict[str, bytes]:
    return protocol_seeds()
