"""Fuzz target: strongSwan VICI messages -> the harvester (``vici_map`` and ``Harvester``).

The input is one VICI event as it arrives on the socket: the first byte picks the event
(child-updown, child-rekey, ike-updown, or a list-sa reply for the start-up sync), the rest
is the message in VICI's wire encoding, decoded by the ``vici`` package as ``run_harvest``
does (what it cannot decode makes the loop reconnect: ``VICI_STREAM_ERRORS``).  The decoded
section goes to a harvester whose kernel holds the SAs of two known CHILD_SAs.
Properties: nothing but ``HarvestError`` leaves ``read_ike_sas``'s callers -- the
harvester turns every problem into a report ("skipped"/"error"), never an exception; a
harvested credential is a generation-0 hardened credential with a 16-byte handle.
Seeds: the harvest tests' messages for both roles, and every VICI input of issue 21.
"""

from __future__ import annotations

import contextlib
from typing import Any

from vici.protocol import FiniteStream, Message

from ikeshim.errors import HarvestError
from ikeshim.harvest import VICI_STREAM_ERRORS, Harvester
from ikeshim.vici_map import parse_ike_sas, read_ike_sas
from resume.credential import Credential, ProtocolMode
from resume.sa import DirectionKeys, Mode, TrafficSelector
from tests.ikeshim.pairs import make_pair, make_params
from tests.ikeshim.test_harvest_logic import _kernel, _vici

EVENTS = ("child-updown", "child-rekey", "ike-updown", "list-sa")
ALLOWED = {"harvested", "session", "skipped", "error"}


def _pairs() -> list[Any]:
    gcm = make_params("gcm128")
    cbc = make_params(
        "cbc-sha256", mode=Mode.TUNNEL, tsi=(TrafficSelector.from_network("10.1.0.0/24"),),
        tsr=(TrafficSelector("10.2.0.0", "10.2.0.9", 6, 80, 90),), natt=(4500, 4500),
    )  # fmt: skip

    def keys(p: Any, a: int, b: int) -> tuple[DirectionKeys, DirectionKeys]:
        return (
            DirectionKeys(a, bytes([1]) * p.encr_key_len, bytes([2]) * p.integ.key_len),
            DirectionKeys(b, bytes([3]) * p.encr_key_len, bytes([4]) * p.integ.key_len),
        )

    return [
        make_pair(gcm, keys=keys(gcm, 0xC0000001, 0xC0000002)),
        make_pair(cbc, keys=keys(cbc, 0xC1000001, 0xC1000002)),
    ]


PAIRS = _pairs()
KERNEL: dict[tuple[str, int], Any] = {}
for _p in PAIRS:
    KERNEL.update(_kernel(_p))


class Sink:
    def __init__(self) -> None:
        self.credentials: list[Credential] = []

    def upsert_full_ike(self, role: Any, credential: Credential, now: float) -> str:
        self.credentials.append(credential)
        return "uid"

    def record_session(self, role: Any, handle: bytes, **kw: Any) -> bool:
        return True


def one_input(data: bytes) -> None:
    if not data:
        return
    name = EVENTS[data[0] % len(EVENTS)]
    try:
        msg = Message.deserialize(FiniteStream(data[1:]))
    except VICI_STREAM_ERRORS:
        return  # the loop drops the connection and makes it again
    with contextlib.suppress(HarvestError):
        parse_ike_sas(msg)
    read_ike_sas(msg)
    sink = Sink()
    h = Harvester(sink, lambda dst, spi: KERNEL.get((dst, spi)))
    reports = h.sync([msg], 5.0) if name == "list-sa" else h.on_event(name, msg, 5.0)
    reports += h.on_event("ike-updown", msg, 6.0) + h.tick(60.0)
    assert {r.kind for r in reports} <= ALLOWED, reports
    for c in sink.credentials:
        assert c.mode is ProtocolMode.HARDENED and c.generation == 0 and len(c.handle) == 16


def _with(msg: dict[str, Any], where: str, field: str, value: Any) -> dict[str, Any]:
    import copy

    m = copy.deepcopy(msg)
    ike = m["conn"]
    target = ike if where == "ike" else next(iter(ike["child-sas"].values()))
    target[field] = value
    return m


def seeds() -> dict[str, bytes]:
    def enc(event: str, msg: dict[str, Any]) -> bytes:
        return bytes([EVENTS.index(event)]) + Message.serialize(msg)

    out: dict[str, bytes] = {}
    for i, pair in enumerate(PAIRS):
        for role in ("initiator", "responder"):
            up = _vici(pair, role)
            out[f"up-{i}-{role}"] = enc("child-updown", up)
            listed = dict(up)
            del listed["up"]
            out[f"list-{i}-{role}"] = enc("list-sa", listed)
            out[f"down-{i}-{role}"] = enc("child-updown", _vici(pair, role, up=False, bytes_=9))
            ike_down = _vici(pair, role, up=False)
            ike_down["conn"]["child-sas"] = {}
            out[f"ike-down-{i}-{role}"] = enc("ike-updown", ike_down)
            child = next(iter(up["conn"]["child-sas"].values()))
            rekey = {"conn": {**up["conn"], "child-sas": {"net": {"old": child, "new": child}}}}
            out[f"rekey-{i}-{role}"] = enc("child-rekey", rekey)
    up = _vici(PAIRS[0], "initiator")
    issue21 = {
        "ts-nul-protocol": ("child", "local-ts", [b"0[\x00]"]),
        "ts-superscript-protocol": ("child", "local-ts", ["10.1.0.0/24[²]".encode()]),
        "ts-superscript-port": ("child", "remote-ts", ["10.2.0.0/24[tcp/8²]".encode()]),
        "host-not-ip-local": ("ike", "local-host", b"moon.example"),
        "host-not-ip-remote": ("ike", "remote-host", b"%any"),
        "spi-in-2p32": ("child", "spi-in", b"100000000"),
        "spi-out-2p40": ("child", "spi-out", b"ffffffffff"),
        "uniqueid-arabic-digit": ("child", "uniqueid", "\u0667".encode()),
        "identity-65536-bytes": ("ike", "local-id", b"a@" + b"x" * 65_533),
    }
    for fname, (where, field, value) in issue21.items():
        out[f"issue21-{fname}"] = enc("child-updown", _with(up, where, field, value))
    return out
