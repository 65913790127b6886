"""One genuine, reproducible resumption for the responder and initiator fuzz targets.

Every random draw comes from a labelled SHA-256 stream, so the credential, message 1, the
responder's tick key, message 2 and message 3 are the same bytes in every process: the
targets can then say exactly which input may be accepted (the genuine message 3 by the
responder, the genuine message 2 by the initiator) and check that nothing else is.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resume.credential import Credential
from resume.initiator import Initiator, InitiatorConfig
from resume.responder import Responder, ResponderConfig
from resume.states import SlotTable
from resume.testing import MemoryTable, answer_events, simulated_full_ike

NOW = 1_700_000_003.0  # one cookie tick for the whole exchange
CLIENT = ("198.51.100.7", 500)
SERVER = ("192.0.2.1", 500)
SERVER_SECRET = hashlib.sha256(b"ikeresume fuzz server secret").digest()
RESPONDER_CONFIG = ResponderConfig(credential_cache_size=16)
INITIATOR_CONFIG = InitiatorConfig()


def stream(label: str) -> Callable[[int], bytes]:
    """A deterministic ``rng``: SHA-256(label | counter) blocks, never for real keys."""
    counter = 0
    buf = b""

    def draw(n: int) -> bytes:
        nonlocal counter, buf
        while len(buf) < n:
            buf += hashlib.sha256(f"{label}/{counter}".encode()).digest()
            counter += 1
        out, buf = buf[:n], buf[n:]
        return out

    return draw


CREDENTIAL: Credential = simulated_full_ike(rng=stream("credential"))


def responder() -> tuple[Responder, MemoryTable]:
    r = Responder(RESPONDER_CONFIG, SERVER_SECRET, rng=stream("responder"))
    table = MemoryTable()
    table.add(CREDENTIAL)
    return r, table


def initiator() -> Initiator:
    """Initiated at NOW; message 1 is waiting in its outbox."""
    ini = Initiator(CREDENTIAL, INITIATOR_CONFIG, rng=stream("initiator"), peer=SERVER)
    ini.initiate(NOW)
    return ini


@dataclass(frozen=True)
class Genuine:
    msg1: bytes
    msg2: bytes
    msg3: bytes


def _genuine() -> Genuine:
    ini = initiator()
    ((m1, _),) = ini.datagrams_to_send(NOW)
    r, table = responder()
    r.receive_datagram(m1, CLIENT, NOW)
    answer_events(r, table, NOW)
    ((m2, _),) = r.datagrams_to_send(NOW)
    ini.receive_datagram(m2, SERVER, NOW)
    ini.successor_saved(NOW)  # write-ahead: message 3 leaves once the successor is saved
    ((m3, _),) = ini.datagrams_to_send(NOW)
    return Genuine(m1, m2, m3)


GENUINE = _genuine()


def _copy(v: Any) -> Any:
    """Two levels of containers (``_tick_runs`` is a dict of dicts); objects by identity."""
    if isinstance(v, dict):
        return type(v)((k, _copy(x) if isinstance(x, dict | list | set) else x)
                       for k, x in v.items())  # fmt: skip
    if isinstance(v, list | set | deque):
        return type(v)(v)
    return v


def snapshot(obj: object, ignore_stats: tuple[str, ...] = ()) -> dict[str, Any]:
    """The object's whole state (its attributes and the slot table's), for "nothing
    changed" checks; the ``stats`` counters in ``ignore_stats`` are left out."""
    out: dict[str, Any] = {}
    names = getattr(type(obj), "__slots__", None)
    attrs = {n: getattr(obj, n) for n in names} if names else vars(obj)
    for k, v in attrs.items():
        if k == "stats":
            out[k] = {s: n for s, n in v.items() if s not in ignore_stats}
        elif isinstance(v, SlotTable):
            out[k] = snapshot(v)
        else:
            out[k] = _copy(v)
    return out


def protocol_seeds() -> dict[str, bytes]:
    """The genuine exchange, NACKs, and the spec vectors' messages (the wire corpus)."""
    from resume.wire import build_nack
    from tests.fuzz import harness

    g = GENUINE
    spi_i, spi_r = g.msg1[:8], g.msg2[8:16]
    out = {
        "genuine-msg1": g.msg1, "genuine-msg2": g.msg2, "genuine-msg3": g.msg3,
        "genuine-nack1": build_nack(spi_i, bytes(8), 0),
        "genuine-nack3": build_nack(spi_i, spi_r, 1),
        "genuine-msg3-bad-mac": g.msg3[:-1] + bytes([g.msg3[-1] ^ 1]),
        "genuine-msg2-bad-mac": g.msg2[:-1] + bytes([g.msg2[-1] ^ 1]),
        "genuine-msg1-natt-marker": bytes(4) + g.msg1,
    }  # fmt: skip
    for path in harness.corpus_files("wire"):
        out[f"vector-{path.name}"] = path.read_bytes()
    return out
