"""ML-KEM-768 in the exchange and the credential lineage (issue 22, spec 4.4, 5.6, 12.3).

The sizes table of the spec is computed here from real encodings; downgrades, bad key
exchange payloads, the responder's ML-KEM state (its bounds, its erasure, a message 3 that
reaches a process without it) and the lineage rule and policy are checked on the sans-I/O
core with explicit time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct

import pytest

from resume import keyschedule as ks
from resume.credential import Credential, Lineage
from resume.events import (
    CredentialNeeded,
    Event,
    FallbackToFullIKE,
    ResumptionComplete,
    ResumptionFailed,
)
from resume.initiator import Initiator, InitiatorConfig
from resume.kem_testing import deterministic_encapsulation
from resume.responder import Responder, ResponderConfig
from resume.states import InitiatorState
from resume.testing import (
    CLIENT_ADDR,
    SERVER_ADDR,
    ConnectionPair,
    MemoryTable,
    answer_events,
    answer_save,
    drain,
    simulated_full_ike,
)
from resume.wire import (
    KE_MLKEM768,
    MLKEM768_CT_LEN,
    MLKEM768_EK_LEN,
    PT_KE,
    DecodeError,
    HardenedInit,
    HardenedResp,
    compact_message,
    decode_message_untrusted,
    encode_message,
    message_sizes,
    parse_request_untrusted,
    parse_response_untrusted,
)
from tests.resume.test_attacker import downgraded
from tests.resume.test_protocol import det_rng

NOW = 1_000_000.0
SECRET = b"S" * 32
MODES = {  # (X25519, ML-KEM)
    "none": (False, "off"),
    "x25519": (True, "off"),
    "mlkem768": (False, "require"),
    "x25519+mlkem768": (True, "require"),
}


def completes(events: list[Event]) -> list[ResumptionComplete]:
    return [e for e in events if isinstance(e, ResumptionComplete)]


def receive_message2(init: Initiator, m2: bytes, now: float = NOW) -> list[Event]:
    """Message 2 in, the successor saved at once (the write-ahead, spec 6.1 step 5): every
    event, message 3 queued."""
    init.receive_datagram(m2, SERVER_ADDR, now)
    return answer_save(init, now) + drain(init)


def failures(events: list[Event]) -> list[str]:
    return [e.reason for e in events if isinstance(e, ResumptionFailed)]


def cred_with(lineage: Lineage, label: str = "cred") -> Credential:
    return dataclasses.replace(simulated_full_ike(det_rng(label)), lineage=lineage)


def three_messages(mode: str) -> tuple[bytes, bytes, bytes]:
    x25519, mlkem = MODES[mode]
    pair = ConnectionPair.create(server_secret=SECRET)
    cred = simulated_full_ike(det_rng("sizes"))
    pair.table.add(cred)
    sent: list[bytes] = []

    def keep(_direction: str, data: bytes) -> bool:
        sent.append(data)
        return True

    init = Initiator(cred, InitiatorConfig(use_x25519=x25519, mlkem=mlkem), det_rng("i"))
    ie, _re, _ = pair.run(init, NOW, keep)
    assert [c.ke for c in completes(ie)] == [mode]
    m1, m2, m3 = sent
    return m1, m2, m3


# --- sizes (spec 4.5): from the real encodings ------------------------------------------------

#: UDP payload sizes per mode, without the NAT-T marker (the spec's table).
SIZES = {
    "none": (100, 116, 168),
    "x25519": (140, 156, 208),
    "mlkem768": (1292, 1212, 208),
    "x25519+mlkem768": (1332, 1252, 248),
}


@pytest.mark.parametrize("mode", SIZES)
def test_message_sizes_match_the_spec_and_never_amplify(mode: str) -> None:
    m1, m2, m3 = three_messages(mode)
    assert (len(m1), len(m2), len(m3)) == SIZES[mode]
    assert message_sizes(*(m in mode for m in ("x25519", "mlkem768"))) == SIZES[mode]
    if "mlkem768" in mode:
        assert len(m2) < len(m1)  # amplification factor below 1 with ML-KEM
    else:
        # unchanged from before ML-KEM (the old vectors are byte-identical): message 2 is
        # 16 bytes longer than message 1 (spec 4.5 states the factor and what bounds it)
        assert len(m2) - len(m1) == 16
    nack = 36
    assert nack < len(m1)
    # IP datagrams with NAT-T framing (UDP 4500: 4-byte marker, 8-byte UDP header)
    for ip_header, path_mtu in ((20, 1500), (40, 1500)):
        for m in (m1, m2, m3):
            assert ip_header + 8 + 4 + len(m) <= path_mtu  # one datagram, no fragment
    # the whole hybrid resumption stays below the hybrid full IKE's 3,165 bytes
    assert len(m1) + len(m2) + len(m3) < 3165


def test_on_a_1280_byte_path_only_the_ml_kem_messages_need_fragments() -> None:
    """IPv6's minimum MTU: what the spec says happens there (IP fragmentation)."""
    over = {}
    for mode in SIZES:
        m1, m2, m3 = three_messages(mode)
        over[mode] = [40 + 8 + 4 + len(m) > 1280 for m in (m1, m2, m3)]
    assert over["none"] == over["x25519"] == [False, False, False]
    assert over["mlkem768"] == [True, False, False]
    assert over["x25519+mlkem768"] == [True, True, False]


def test_message3_echoes_the_compact_message1() -> None:
    m1, m2, m3 = three_messages("x25519+mlkem768")
    r3 = parse_request_untrusted(m3)
    assert r3.init.raw == compact_message(m1)  # type: ignore[union-attr]
    r1 = parse_request_untrusted(m1)
    assert isinstance(r1, HardenedInit) and r1.mlkem is not None
    assert r3.init.mlkem == hashlib.sha256(r1.mlkem).digest()  # type: ignore[union-attr]
    r2 = parse_response_untrusted(m2)
    assert isinstance(r2, HardenedResp) and r2.mlkem is not None
    assert len(r2.mlkem) == MLKEM768_CT_LEN and len(r1.mlkem) == MLKEM768_EK_LEN
    assert len(r2.compact) == len(m2) - MLKEM768_CT_LEN + 32


# --- the ratchet, the lineage rule ------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_several_ratchets_in_every_mode_and_the_lineage_rule(mode: str) -> None:
    x25519, mlkem = MODES[mode]
    for start, after in (
        (Lineage.CLASSICAL, Lineage.PQ_RESUMED if mlkem != "off" else Lineage.CLASSICAL),
        (Lineage.UNKNOWN, Lineage.PQ_RESUMED if mlkem != "off" else Lineage.UNKNOWN),
        (Lineage.HYBRID_PQ, Lineage.HYBRID_PQ),
        (Lineage.PPK, Lineage.PPK),
    ):
        cred = cred_with(start)
        pair = ConnectionPair.create(server_secret=SECRET)
        pair.table.add(cred)
        keys = set()
        for gen in range(4):
            init = Initiator(cred, InitiatorConfig(use_x25519=x25519, mlkem=mlkem))
            ie, re_, _ = pair.run(init, NOW + 30 * gen)
            [ci], [cr] = completes(ie), completes(re_)
            assert ci.ke == cr.ke == mode and ci.successor == cr.successor
            assert (ci.sa.i_to_r, ci.sa.r_to_i) == (cr.sa.i_to_r, cr.sa.r_to_i)
            keys.add(ci.sa.i_to_r.encr_key)
            cred = ci.successor
            assert cred.lineage is after and cred.generation == gen + 1
        assert len(keys) == 4
        assert pair.responder.describe()["mlkem_runs"] == 0  # taken by each message 3


def test_a_pq_resumed_chain_stays_pq_through_symmetric_ratchets() -> None:
    cred = cred_with(Lineage.CLASSICAL)
    pair = ConnectionPair.create(server_secret=SECRET)
    pair.table.add(cred)
    for gen, mlkem in enumerate(["offer", "off", "off"]):
        ie, _re, _ = pair.run(Initiator(cred, InitiatorConfig(mlkem=mlkem)), NOW + 30 * gen)
        cred = completes(ie)[0].successor
        assert cred.lineage is Lineage.PQ_RESUMED


def test_require_pq_lineage_refuses_a_classical_chain_with_the_one_nack() -> None:
    config = ResponderConfig(require_pq_lineage=True)
    for lineage, accepted in [
        (Lineage.CLASSICAL, False),
        (Lineage.UNKNOWN, False),
        (Lineage.HYBRID_PQ, True),
        (Lineage.PPK, True),
        (Lineage.PQ_RESUMED, True),
    ]:
        pair = ConnectionPair.create(config, SECRET)
        cred = cred_with(lineage)
        pair.table.add(cred)
        # offering ML-KEM does not help a classical chain: the policy judges the chain
        ie, re_, _ = pair.run(Initiator(cred, InitiatorConfig(mlkem="offer")), NOW)
        if accepted:
            assert len(completes(ie)) == 1
        else:
            assert ie == [FallbackToFullIKE("nack")]
            assert failures(re_) == ["lineage"]
            assert pair.responder.stats["nack_lineage"] == 1
            assert pair.table.records[cred.handle] == cred  # nothing consumed


# --- negotiation and downgrade ----------------------------------------------------------------


def test_offer_accepts_a_refusal_require_falls_back_authenticated() -> None:
    for policy, outcome in [("offer", "complete"), ("require", "pq_refused")]:
        pair = ConnectionPair.create(ResponderConfig(allow_mlkem=False), SECRET)
        cred = cred_with(Lineage.CLASSICAL)
        pair.table.add(cred)
        ie, _re, _ = pair.run(Initiator(cred, InitiatorConfig(mlkem=policy)), NOW)
        if outcome == "complete":
            [c] = completes(ie)
            assert c.ke == "x25519" and c.successor.lineage is Lineage.CLASSICAL
        else:
            assert ie == [FallbackToFullIKE("pq_refused")]
            assert pair.table.records[cred.handle] == cred


def test_require_mlkem_nacks_a_message1_without_it_before_any_lookup() -> None:
    pair = ConnectionPair.create(ResponderConfig(require_mlkem=True), SECRET)
    cred = cred_with(Lineage.CLASSICAL)
    pair.table.add(cred)
    ie, re_, _ = pair.run(Initiator(cred, InitiatorConfig(mlkem="off")), NOW)
    assert ie == [FallbackToFullIKE("nack")] and failures(re_) == ["mlkem_required"]
    assert pair.responder.stats["msg1"] == 0  # no CredentialNeeded


def _exchange_until_message2(
    cred: Credential, config: ResponderConfig | None = None, mlkem: str = "require"
) -> tuple[Initiator, Responder, MemoryTable, bytes, bytes]:
    resp = Responder(config or ResponderConfig(), SECRET)
    table = MemoryTable()
    table.add(cred)
    init = Initiator(cred, InitiatorConfig(mlkem=mlkem))
    init.initiate(NOW)
    [(m1, _)] = init.datagrams_to_send(NOW)
    resp.receive_datagram(m1, CLIENT_ADDR, NOW)
    answer_events(resp, table, NOW)
    [(m2, _)] = resp.datagrams_to_send(NOW)
    return init, resp, table, m1, m2


@pytest.mark.parametrize("how", ["strip", "x25519", "unknown"])
def test_downgrading_message2_is_dropped_and_the_real_one_still_completes(how: str) -> None:
    for policy in ("offer", "require"):
        init, _resp, _table, _m1, m2 = _exchange_until_message2(cred_with(Lineage.CLASSICAL))
        init._cred = init.credential  # same attempt
        forged = downgraded(m2, how)
        assert forged is not None
        init.config = dataclasses.replace(init.config, mlkem=policy)
        init.receive_datagram(forged, SERVER_ADDR, NOW)
        assert init.state is InitiatorState.WAIT_RESPONSE and drain(init) == []
        assert init.stats["drop_bad_mac" if how == "strip" else "drop_malformed"] == 1
        [c] = completes(receive_message2(init, m2))
        assert c.ke == "x25519+mlkem768"


@pytest.mark.parametrize("how", ["strip", "x25519", "unknown"])
def test_downgrading_message1_never_completes(how: str) -> None:
    """The responder answers a stripped message 1 classically; MAC_2 covers compact(m1),
    so the initiator, whose message 1 had the KE(36), drops that answer."""
    cred = cred_with(Lineage.CLASSICAL)
    resp = Responder(ResponderConfig(), SECRET)
    table = MemoryTable()
    table.add(cred)
    init = Initiator(cred, InitiatorConfig(mlkem="offer"))
    init.initiate(NOW)
    [(m1, _)] = init.datagrams_to_send(NOW)
    forged = downgraded(m1, how)
    assert forged is not None
    resp.receive_datagram(forged, CLIENT_ADDR, NOW)
    answer_events(resp, table, NOW)
    out = resp.datagrams_to_send(NOW)
    if how != "strip":  # a relabelled KE(36) does not parse: dropped, never answered
        assert out == [] and resp.stats["drop_malformed"] == 1
        return
    [(m2, _)] = out
    init.receive_datagram(m2, SERVER_ADDR, NOW)
    assert init.stats["drop_bad_mac"] == 1 and drain(init) == []
    assert init.state is InitiatorState.WAIT_RESPONSE


def test_downgrading_the_echo_in_message3_is_refused() -> None:
    cred = cred_with(Lineage.CLASSICAL)
    init, resp, table, _m1, m2 = _exchange_until_message2(cred)
    receive_message2(init, m2)
    [(m3, _)] = init.datagrams_to_send(NOW)
    for how in ("strip", "x25519", "unknown"):
        forged = downgraded(m3, how)
        assert forged is not None
        resp.receive_datagram(forged, CLIENT_ADDR, NOW)
        answer_events(resp, table, NOW)
    assert resp.stats["complete"] == 0 and table.records[cred.handle] == cred
    resp.receive_datagram(m3, CLIENT_ADDR, NOW)
    [c] = completes(answer_events(resp, table, NOW))
    assert c.ke == "x25519+mlkem768"


# --- bad input --------------------------------------------------------------------------------


def _ke(method: int, data: bytes) -> tuple[int, bytes]:
    return (PT_KE, struct.pack(">HH", method, 0) + data)


def _bad_messages1(m1: bytes) -> dict[str, bytes]:
    msg = decode_message_untrusted(m1)
    h = msg.header
    base = [(p.type, p.body) for p in msg.payloads[:3]]
    x = next(p.body for p in msg.payloads if p.body[:2] == b"\x00\x1f")
    ek = next(p.body for p in msg.payloads if p.body[:2] == b"\x00\x24")[4:]

    def m(*payloads: tuple[int, bytes]) -> bytes:
        return encode_message(h.spi_i, h.spi_r, h.flags, 0, [*base, *payloads])

    return {
        "short key": m((PT_KE, x), _ke(KE_MLKEM768, ek[:-1])),
        "long key": m((PT_KE, x), _ke(KE_MLKEM768, ek + b"\x00")),
        "digest-length key outside the echo": m(_ke(KE_MLKEM768, ek[:32])),
        "ciphertext-length key": m(_ke(KE_MLKEM768, ek[:MLKEM768_CT_LEN])),
        "unknown method": m((PT_KE, x), _ke(37, ek)),
        "method 0": m(_ke(0, ek)),
        "nonzero reserved": m((PT_KE, x), (PT_KE, b"\x00\x24\x00\x01" + ek)),
        "duplicated ML-KEM": m(_ke(KE_MLKEM768, ek), _ke(KE_MLKEM768, ek)),
        "duplicated X25519": m((PT_KE, x), (PT_KE, x)),
        "out of order": m(_ke(KE_MLKEM768, ek), (PT_KE, x)),
        "three KE": m((PT_KE, x), _ke(KE_MLKEM768, ek), _ke(KE_MLKEM768, ek)),
        "empty KE": m((PT_KE, b"")),
    }


def test_malformed_key_exchange_payloads_are_dropped_counted_and_change_nothing() -> None:
    cred = cred_with(Lineage.CLASSICAL)
    init = Initiator(cred, InitiatorConfig(mlkem="offer"))
    init.initiate(NOW)
    [(m1, _)] = init.datagrams_to_send(NOW)
    bad = _bad_messages1(m1)
    resp = Responder(ResponderConfig(), SECRET)
    for name, data in bad.items():
        with pytest.raises(DecodeError):
            parse_request_untrusted(data)
        resp.receive_datagram(data, CLIENT_ADDR, NOW)
        assert resp.datagrams_to_send(NOW) == [] and resp.next_event() is None, name
    assert resp.stats["drop_malformed"] == len(bad)
    d = resp.describe()
    assert (d["pending"], d["response_cache"], d["mlkem_runs"]) == (0, 0, 0)
    assert resp.get_timer() is None
    # the same payload damage in a message 2 is dropped by the initiator
    for name, data in bad.items():
        b = bytearray(data)
        b[8:16], b[19] = b"\x01" * 8, 0x20  # a response header
        init.receive_datagram(bytes(b), SERVER_ADDR, NOW)
        assert init.state is InitiatorState.WAIT_RESPONSE and drain(init) == [], name
    assert init.stats["drop_malformed"] == len(bad)


def test_an_unusable_ml_kem_key_is_nacked_after_the_lookup_and_keeps_nothing() -> None:
    cred = cred_with(Lineage.CLASSICAL)
    init = Initiator(cred, InitiatorConfig(mlkem="offer", use_x25519=False))
    init.initiate(NOW)
    [(m1, _)] = init.datagrams_to_send(NOW)
    msg = decode_message_untrusted(m1)
    h = msg.header
    payloads = [(p.type, p.body) for p in msg.payloads]
    ek = bytearray(payloads[3][1])
    ek[4:7] = b"\xff\xff\xff"  # the first two coefficients are 4095 >= q
    payloads[3] = (PT_KE, bytes(ek))
    data = encode_message(h.spi_i, h.spi_r, h.flags, 0, payloads)
    resp = Responder(ResponderConfig(), SECRET)
    table = MemoryTable()
    table.add(cred)
    resp.receive_datagram(data, CLIENT_ADDR, NOW)
    assert failures(answer_events(resp, table, NOW)) == ["bad_key_share"]
    [(nack, _)] = resp.datagrams_to_send(NOW)
    assert len(nack) == 36
    assert resp.describe()["mlkem_runs"] == 0


def test_a_ciphertext_failing_decapsulation_gives_a_wrong_key_the_mac_fails() -> None:
    """FIPS 203 implicit rejection: a forged ciphertext decapsulates to a pseudorandom
    secret, never an error; MAC_2 then fails, the datagram is dropped and counted."""
    init, _resp, _table, _m1, m2 = _exchange_until_message2(cred_with(Lineage.CLASSICAL))
    r2 = parse_response_untrusted(m2)
    assert isinstance(r2, HardenedResp) and r2.mlkem is not None
    at = m2.index(r2.mlkem)
    for forged_ct in (bytes(MLKEM768_CT_LEN), hashlib.shake_256(b"x").digest(MLKEM768_CT_LEN)):
        forged = m2[:at] + forged_ct + m2[at + MLKEM768_CT_LEN :]
        init.receive_datagram(forged, SERVER_ADDR, NOW)
    assert init.stats["drop_bad_mac"] == 2 and drain(init) == []
    assert len(completes(receive_message2(init, m2))) == 1


def test_an_initiator_without_ml_kem_drops_a_message2_with_a_ciphertext() -> None:
    cred = cred_with(Lineage.CLASSICAL)
    _init, resp, _table, _m1, m2 = _exchange_until_message2(cred)
    other = Initiator(cred, InitiatorConfig(mlkem="off"))
    other.initiate(NOW)
    other.datagrams_to_send(NOW)
    b = bytearray(m2)
    b[:8] = other._spi_i  # addressed to it
    other.receive_datagram(bytes(b), SERVER_ADDR, NOW)
    assert other.stats["drop_unexpected_ke"] == 1 and drain(other) == []
    assert resp.describe()["mlkem_runs"] == 1


# --- the responder's ML-KEM state (spec 5.6) --------------------------------------------------


def test_the_state_is_bounded_per_handle_and_a_kept_run_is_never_evicted() -> None:
    """An attacker replays a captured message 1 from spoofed addresses: each costs an entry
    until the per-handle bound, then NACKs; the real client's message 3 still completes."""
    cred = cred_with(Lineage.CLASSICAL)
    init, resp, table, m1, m2 = _exchange_until_message2(
        cred, ResponderConfig(mlkem_runs_per_handle=3)
    )
    for i in range(5):
        resp.receive_datagram(m1, (f"203.0.113.{i}", 500), NOW)
        answer_events(resp, table, NOW)
    assert resp.stats["nack_mlkem_busy"] == 3 and resp.describe()["mlkem_runs"] == 3
    receive_message2(init, m2)
    [(m3, _)] = init.datagrams_to_send(NOW)
    resp.receive_datagram(m3, CLIENT_ADDR, NOW)
    [c] = completes(answer_events(resp, table, NOW))
    assert c.ke == "x25519+mlkem768"
    assert resp.describe()["mlkem_runs"] == 2  # the verified run's entry is gone


def test_the_state_is_bounded_per_tick() -> None:
    resp = Responder(ResponderConfig(mlkem_runs_per_tick=2), SECRET)
    table = MemoryTable()
    reasons = []
    for i in range(4):
        cred = cred_with(Lineage.CLASSICAL, f"c{i}")
        table.add(cred)
        init = Initiator(cred, InitiatorConfig(mlkem="offer"))
        init.initiate(NOW)
        [(m1, _)] = init.datagrams_to_send(NOW)
        resp.receive_datagram(m1, CLIENT_ADDR, NOW)
        reasons += failures(answer_events(resp, table, NOW))
    assert reasons == ["mlkem_busy", "mlkem_busy"] and resp.describe()["mlkem_runs"] == 2
    # the next tick has room again; the old entries go with the tick after it
    t = NOW + ResponderConfig().cookie_tick_seconds
    cred = cred_with(Lineage.CLASSICAL, "later")
    table.add(cred)
    init = Initiator(cred, InitiatorConfig(mlkem="offer"))
    init.initiate(t)
    [(m1, _)] = init.datagrams_to_send(t)
    resp.receive_datagram(m1, CLIENT_ADDR, t)
    assert failures(answer_events(resp, table, t)) == []
    assert resp.describe()["mlkem_runs"] == 3


def test_the_state_goes_with_the_tick_and_a_late_message3_is_refused() -> None:
    cred = cred_with(Lineage.CLASSICAL)
    init, resp, table, _m1, m2 = _exchange_until_message2(cred)
    receive_message2(init, m2)
    [(m3, _)] = init.datagrams_to_send(NOW)
    timer = resp.get_timer()
    assert timer is not None and timer <= NOW + 2 * ResponderConfig().cookie_tick_seconds
    resp.handle_timer(timer)
    assert resp.describe()["mlkem_runs"] == 0
    resp.receive_datagram(m3, CLIENT_ADDR, timer)
    answer_events(resp, table, timer)
    assert resp.stats["complete"] == 0 and resp.stats["nack"] == 1


def test_ml_kem_alone_keeps_the_timer_that_erases_its_state() -> None:
    cred = cred_with(Lineage.CLASSICAL)
    resp = Responder(ResponderConfig(), SECRET)
    table = MemoryTable()
    table.add(cred)
    init = Initiator(cred, InitiatorConfig(mlkem="offer", use_x25519=False))
    init.initiate(NOW)
    [(m1, _)] = init.datagrams_to_send(NOW)
    resp.receive_datagram(m1, CLIENT_ADDR, NOW)
    answer_events(resp, table, NOW)
    assert resp.describe()["mlkem_runs"] == 1 and resp.get_timer() is not None


def test_message3_at_a_process_without_the_state_is_nacked() -> None:
    """As with X25519's tick key: message 3 must reach the process that answered message
    1; another responder with the same server secret passes the cookie, then refuses."""
    cred = cred_with(Lineage.CLASSICAL)
    init, _resp, table, _m1, m2 = _exchange_until_message2(
        cred, ResponderConfig(allow_x25519=False)
    )
    receive_message2(init, m2)
    [(m3, _)] = init.datagrams_to_send(NOW)
    other = Responder(ResponderConfig(allow_x25519=False), SECRET)
    other.receive_datagram(m3, CLIENT_ADDR, NOW)
    assert failures(answer_events(other, table, NOW)) == ["mlkem_state_missing"]
    assert table.records[cred.handle] == cred


def test_a_retransmission_missing_the_response_cache_keeps_a_second_candidate() -> None:
    """Both messages 2 the client may have received stay answerable (spec 5.6)."""
    cred = cred_with(Lineage.CLASSICAL)
    resp = Responder(
        ResponderConfig(response_cache_size=1),
        SECRET,
        encapsulate=deterministic_encapsulation(det_rng("kem")),
    )
    table = MemoryTable()
    table.add(cred)
    init = Initiator(cred, InitiatorConfig(mlkem="offer"))
    init.initiate(NOW)
    [(m1, _)] = init.datagrams_to_send(NOW)
    resp.receive_datagram(m1, CLIENT_ADDR, NOW)
    answer_events(resp, table, NOW)
    [(first, _)] = resp.datagrams_to_send(NOW)
    # another client's message 1 evicts the one-entry response cache
    other = cred_with(Lineage.CLASSICAL, "other")
    table.add(other)
    oi = Initiator(other, InitiatorConfig())
    oi.initiate(NOW)
    [(om1, _)] = oi.datagrams_to_send(NOW)
    resp.receive_datagram(om1, ("198.51.100.99", 500), NOW)
    answer_events(resp, table, NOW)
    resp.datagrams_to_send(NOW)
    resp.receive_datagram(m1, CLIENT_ADDR, NOW)  # the retransmission: a new encapsulation
    answer_events(resp, table, NOW)
    [(second, _)] = resp.datagrams_to_send(NOW)
    assert second != first and resp.describe()["mlkem_runs"] == 2
    receive_message2(init, first)  # the client had the first one
    [(m3, _)] = init.datagrams_to_send(NOW)
    resp.receive_datagram(m3, CLIENT_ADDR, NOW)
    [c] = completes(answer_events(resp, table, NOW))
    assert c.ke == "x25519+mlkem768" and resp.describe()["mlkem_runs"] == 0


def test_garbage_handles_create_no_ml_kem_state() -> None:
    resp = Responder(ResponderConfig(), SECRET)
    table = MemoryTable()  # knows nothing
    for i in range(10):
        init = Initiator(cred_with(Lineage.CLASSICAL, f"g{i}"), InitiatorConfig(mlkem="offer"))
        init.initiate(NOW)
        [(m1, _)] = init.datagrams_to_send(NOW)
        resp.receive_datagram(m1, CLIENT_ADDR, NOW)
        assert failures(answer_events(resp, table, NOW)) == ["unknown_or_refused"]
    assert resp.describe()["mlkem_runs"] == 0


def test_configuration_checks() -> None:
    from resume.errors import LocalProtocolError

    with pytest.raises(LocalProtocolError):
        ResponderConfig(allow_mlkem=False, require_mlkem=True)
    with pytest.raises(LocalProtocolError):
        ResponderConfig(mlkem_runs_per_tick=0)
    with pytest.raises(LocalProtocolError):
        InitiatorConfig(mlkem="maybe")


def test_the_key_schedule_mixes_both_secrets() -> None:
    """S | DH | SS: either secret alone changes every key."""
    cred = cred_with(Lineage.CLASSICAL)
    n = b"\x01" * 32
    base = ks.derive_run(cred, n, n, b"\x02" * 32, 300, 400, b"\x03" * 32)
    for dh, ss in ((b"\x02" * 32, b"\x04" * 32), (b"\x05" * 32, b"\x03" * 32), (b"", b"")):
        other = ks.derive_run(cred, n, n, dh, 300, 400, ss)
        assert other.keymat != base.keymat and other.successor_secret != base.successor_secret


def test_credential_lookups_see_the_handle_only() -> None:
    """The lineage is the responder's record: a message 1 cannot claim one."""
    cred = cred_with(Lineage.CLASSICAL)
    resp = Responder(ResponderConfig(require_pq_lineage=True), SECRET)
    init = Initiator(dataclasses.replace(cred, lineage=Lineage.HYBRID_PQ))
    init.initiate(NOW)
    [(m1, _)] = init.datagrams_to_send(NOW)
    resp.receive_datagram(m1, CLIENT_ADDR, NOW)
    ev = resp.next_event()
    assert isinstance(ev, CredentialNeeded)
    resp.provide_credential(ev.token, cred, None, NOW)
    assert failures(drain(resp)) == ["lineage"]
