"""One genuine, reproducible resumption for the responder and initiator fuzz targets.

Every random draw comes from a labelled SHA-256 stream, so the credential, message 1, the
responder's tick key, its ML-KEM encapsulation, message 2 and message 3 are the same bytes
in every process: the targets can then say exactly which input may be accepted (the
genuine message 3 by the responder, the genuine message 2 by the initiator) and check that
nothing else is.  The exchange is the hybrid one (X25519 + ML-KEM-768), so every payload
kind and the responder's ML-KEM state are reachable; the classical exchange's messages
stay in the corpora as seeds (``genuine-msg*``, from before ML-KEM).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resume.credential import Credential
from resume.initiator import Initiator, InitiatorConfig
from resume.kem_testing import deterministic_encapsulation
from resume.responder import Responder, ResponderConfig
from resume.states import SlotTable
from resume.testing import MemoryTable, answer_events, simulated_full_ike

NOW = 1_700_000_003.0  # one cookie tick for the whole exchange
CLIENT = ("198.51.100.7", 500)
SERVER = ("192.0.2.1", 500)
SERVER_SECRET = hashlib.sha256(b"ikeresume fuzz server secret").digest()
RESPONDER_CONFIG = ResponderConfig(credential_cache_size=16)
INITIATOR_CONFIG = InitiatorConfig(mlkem="offer")


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
    r = Responder(
        RESPONDER_CONFIG,
        SERVER_SECRET,
        rng=stream("responder"),
        encapsulate=deterministic_encapsulation(stream("responder kem")),
    )
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


def _genuine(config: InitiatorConfig = INITIATOR_CONFIG) -> Genuine:
    ini = Initiator(CREDENTIAL, config, rng=stream("initiator"), peer=SERVER)
    ini.initiate(NOW)
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
#: The classical exchange the corpora's ``genuine-msg*`` seeds hold: the same draws without
#: ML-KEM.  Its message 3 is a valid message 3 for the primed responder too (same tick,
#: tick key and address: the stateless cookie accepts it), so the responder target accepts
#: either.
CLASSICAL = _genuine(InitiatorConfig())


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
        "genuine-hybrid-msg1": g.msg1, "genuine-hybrid-msg2": g.msg2,
        "genuine-hybrid-msg3": g.msg3,
        "genuine-hybrid-nack1": build_nack(spi_i, bytes(8), 0),
        "genuine-hybrid-nack3": build_nack(spi_i, spi_r, 1),
        "genuine-hybrid-msg3-bad-mac": g.msg3[:-1] + bytes([g.msg3[-1] ^ 1]),
        "genuine-hybrid-msg2-bad-mac": g.msg2[:-1] + bytes([g.msg2[-1] ^ 1]),
        "genuine-hybrid-msg1-natt-marker": bytes(4) + g.msg1,
        **pq_variants(g),
    }  # fmt: skip
    for path in harness.corpus_files("wire"):
        if not path.name.startswith("pq-"):  # those are pq_variants(GENUINE), above
            out[f"vector-{path.name}"] = path.read_bytes()
    return out


def pq_variants(g: Genuine) -> dict[str, bytes]:
    """The genuine hybrid messages with their key exchange payloads damaged the ways the
    spec names (wrong length, unknown method, duplicated, missing, out of order, a forged
    ciphertext, the ML-KEM payload stripped or relabelled: a downgrade)."""
    from resume.wire import decode_message_untrusted

    out = _ke_variants("msg1", g.msg1) | _ke_variants("msg2", g.msg2)
    ct = decode_message_untrusted(g.msg2).payloads[3].body[4:]
    at = g.msg2.index(ct)
    out["pq-msg2-forged-ciphertext"] = g.msg2[:at] + bytes(len(ct)) + g.msg2[at + len(ct) :]
    out["pq-msg3-echo-stripped"] = _strip_echo(g.msg3)
    return out


_ML = b"\x00\x24"


def _ke_variants(name: str, m: bytes) -> dict[str, bytes]:
    from resume.wire import PT_KE, decode_message_untrusted, encode_message

    msg = decode_message_untrusted(m)
    h = msg.header
    ps = [(p.type, p.body) for p in msg.payloads]
    x, ml = (i for i, (t, _b) in enumerate(ps) if t == PT_KE)
    mlb = ps[ml][1]

    def frame(payloads: list[tuple[int, bytes]]) -> bytes:
        return encode_message(h.spi_i, h.spi_r, h.flags, h.message_id, payloads)

    def with_ml(body: bytes) -> bytes:
        return frame([*ps[:ml], (PT_KE, body), *ps[ml + 1 :]])

    return {
        f"pq-{name}-mlkem-short": with_ml(mlb[:-1]),
        f"pq-{name}-mlkem-long": with_ml(mlb + b"\x00"),
        f"pq-{name}-mlkem-digest-length": with_ml(mlb[:36]),
        f"pq-{name}-method-37": with_ml(b"\x00\x25" + mlb[2:]),
        f"pq-{name}-method-31": with_ml(b"\x00\x1f" + mlb[2:]),
        f"pq-{name}-reserved-set": with_ml(mlb[:3] + b"\x01" + mlb[4:]),
        f"pq-{name}-mlkem-stripped": frame([*ps[:ml], *ps[ml + 1 :]]),
        f"pq-{name}-mlkem-twice": frame([*ps[: ml + 1], ps[ml], *ps[ml + 1 :]]),
        f"pq-{name}-out-of-order": frame([*ps[:x], ps[ml], ps[x], *ps[ml + 1 :]]),
        f"pq-{name}-x25519-stripped": frame([*ps[:x], *ps[x + 1 :]]),
    }


def _strip_echo(m3: bytes) -> bytes:
    """Message 3 with the KE(36) digest removed from its echo (MAC left as it was)."""
    from resume.wire import PT_KE, decode_message_untrusted, encode_message

    outer = decode_message_untrusted(m3)
    echo = decode_message_untrusted(outer.payloads[0].body)
    kept = [(p.type, p.body) for p in echo.payloads if not (p.type == PT_KE and p.body[:2] == _ML)]
    e, h = echo.header, outer.header
    inner = encode_message(e.spi_i, e.spi_r, e.flags, 0, kept)
    auth = outer.payloads[1]
    return encode_message(
        h.spi_i, h.spi_r, h.flags, 1, [(outer.payloads[0].type, inner), (auth.type, auth.body)]
    )
