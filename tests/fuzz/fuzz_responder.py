"""Fuzz target: the sans-I/O responder fed arbitrary datagrams (``Responder.receive_datagram``).

Each input reaches a fresh responder that has just answered the genuine message 1 (so its
response cache, tick key and credential copy are populated and message 3 paths are
reachable), whose application answers from a table holding the genuine credential.
Properties: no exception escapes; a datagram that does not parse changes nothing but the
drop counters (no event, no datagram, no slot, no cache entry); a resumption completes --
and the table's ratchet commits -- only for the genuine message 3 (of the hybrid exchange,
or of the classical one with the same draws), byte for byte.
Seeds: the genuine exchange, the spec vectors' messages, truncations and bit flips.
"""

from __future__ import annotations

from resume.errors import DecodeError
from resume.events import ResumptionComplete
from resume.responder import Responder
from resume.testing import MemoryTable, answer_events
from resume.wire import parse_request_untrusted
from tests.fuzz.exchange import (
    CLASSICAL,
    CLIENT,
    GENUINE,
    NOW,
    protocol_seeds,
    responder,
    snapshot,
)

DROP_COUNTERS = ("datagrams", "drop_malformed")


def _primed() -> tuple[Responder, MemoryTable]:
    r, table = responder()
    r.receive_datagram(GENUINE.msg1, CLIENT, NOW)
    answer_events(r, table, NOW)
    r.datagrams_to_send(NOW)
    return r, table


def one_input(data: bytes) -> None:
    r, table = _primed()
    before = snapshot(r, DROP_COUNTERS)
    try:
        parse_request_untrusted(data)
        parses = True
    except DecodeError:
        parses = False
    r.receive_datagram(data, CLIENT, NOW)
    events = answer_events(r, table, NOW)
    sent = r.datagrams_to_send(NOW)
    if not parses:
        assert not events and not sent, (events, sent)
        assert snapshot(r, DROP_COUNTERS) == before
    completed = [e for e in events if isinstance(e, ResumptionComplete)]
    genuine = data in (GENUINE.msg3, CLASSICAL.msg3)
    assert len(completed) == (1 if genuine else 0), completed
    assert table.commits == (1 if genuine else 0)
    for out, _addr in sent:  # message 2 or the NACK
        assert len(out) <= 2048


def seeds() -> dict[str, bytes]:
    return protocol_seeds()
