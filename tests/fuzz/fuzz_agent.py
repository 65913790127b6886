"""Fuzz target: what ``ikeresume agent`` reads from others -- request lines on its socket
and charon's ``ike-updown`` events.

The first byte picks the reader: even, the rest is a request line
(:func:`ikeshim.agent.wire.parse_request_untrusted`: only ``AgentRequestError``; an accepted
request re-encodes to the same bytes); odd, the rest is a VICI message in its wire encoding
(what the ``vici`` package cannot decode makes the agent reconnect), then
:func:`ikeshim.agent.watch.ike_down_untrusted`, which never raises.  Seeds: both verbs, the
near misses of the tests, and ike-updown down/up as charon sends them.
"""

from __future__ import annotations

from vici.protocol import FiniteStream, Message

from ikeshim.agent.watch import ike_down_untrusted
from ikeshim.agent.wire import AgentRequestError, format_request, parse_request_untrusted
from ikeshim.harvest import VICI_STREAM_ERRORS


def one_input(data: bytes) -> None:
    if not data:
        return
    if data[0] % 2 == 0:
        try:
            req = parse_request_untrusted(data[1:])
        except AgentRequestError:
            return
        assert format_request(req) == data[1:]
        return
    try:
        msg = Message.deserialize(FiniteStream(data[1:]))
    except VICI_STREAM_ERRORS:
        return
    for down in ike_down_untrusted("ike-updown", msg):
        assert isinstance(down.ike, str) and isinstance(down.remote, str)


def seeds() -> dict[str, bytes]:
    ike = {"uniqueid": b"3", "local-host": b"192.0.2.2", "remote-host": b"192.0.2.1",
           "state": b"DELETING", "child-sas": {}}  # fmt: skip
    return {
        "resume": b"\x00resume gw\n",
        "ping": b"\x00ping\n",
        "resume-dotted": b"\x00resume gw-1.example_2\n",
        "resume-no-newline": b"\x00resume gw",
        "resume-path": b"\x00resume ../x\n",
        "resume-long": b"\x00resume " + b"a" * 300 + b"\n",
        "ike-down": b"\x01" + Message.serialize({"ike4": ike}),
        "ike-up": b"\x01" + Message.serialize({"up": b"yes", "ike4": ike}),
        "ike-down-no-hosts": b"\x01" + Message.serialize({"ike4": {"state": b"X"}}),
    }
