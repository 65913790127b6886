"""Behaviour of the Initiator and Responder state machines (both modes)."""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import pytest

from resume.credential import ProtocolMode
from resume.errors import LocalProtocolError
from resume.events import (
    CommitNeeded,
    CredentialNeeded,
    Event,
    FallbackToFullIKE,
    ResumptionComplete,
    ResumptionFailed,
)
from resume.initiator import Initiator, InitiatorConfig
from resume.responder import Responder, ResponderConfig
from resume.sa import Encr, Integ
from resume.states import InitiatorState
from resume.testing import (
    CLIENT_ADDR,
    SERVER_ADDR,
    ConnectionPair,
    answer_events,
    drain,
    example_params,
    simulated_full_ike,
)
from resume.wire import build_nack

NOW = 1_000_000.0
SECRET = b"S" * 32


def det_rng(label: str) -> Any:
    counter = itertools.count()

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{label}{next(counter)}".encode()).digest()
        return out[:n]

    return rng


def completes(events: list[Event]) -> list[ResumptionComplete]:
    return [e for e in events if isinstance(e, ResumptionComplete)]


@pytest.mark.parametrize("x25519", [True, False])
@pytest.mark.parametrize("cbc", [True, False])
def test_hardened_interop_fresh_keys_and_ratchet(x25519: bool, cbc: bool) -> None:
    params = example_params(Encr.AES_CBC, Integ.HMAC_SHA2_256_128) if cbc else example_params()
    cred = simulated_full_ike(params=params)
    pair = ConnectionPair.create(server_secret=SECRET)
    pair.table.add(cred)
    seen_keys: set[bytes] = set()
    handles = {cred.handle}
    for gen in range(5):
        ie, re_, _ = pair.run(Initiator(cred, InitiatorConfig(use_x25519=x25519)), NOW + gen)
        [ci], [cr] = completes(ie), completes(re_)
        assert ci.generation == cr.generation == gen
        assert (ci.sa.i_to_r, ci.sa.r_to_i) == (cr.sa.i_to_r, cr.sa.r_to_i)
        assert ci.sa.role == "initiator" and cr.sa.role == "responder"
        assert ci.sa.outbound == cr.sa.inbound
        assert ci.successor == cr.successor
        assert len(ci.sa.i_to_r.encr_key) == params.encr_key_len
        assert len(ci.sa.i_to_r.integ_key) == params.integ.key_len
        for k in (ci.sa.i_to_r.encr_key, ci.sa.r_to_i.encr_key):
            assert k not in seen_keys  # fresh every time
            seen_keys.add(k)
        # the old generation is gone from the table, the successor is in it
        assert cred.handle not in pair.table.records
        assert pair.table.records[ci.successor.handle] == ci.successor
        cred = ci.successor
        handles.add(cred.handle)
    assert len(handles) == 6


def test_identity_protection_in_hardened_mode_only() -> None:
    cred = simulated_full_ike()
    pair = ConnectionPair.create(server_secret=SECRET)
    pair.table.add(cred)
    wire: list[bytes] = []

    def keep(_d: str, data: bytes) -> bool:
        wire.append(data)
        return True

    pair.run(Initiator(cred), NOW, keep)
    assert len(wire) == 3
    for m in wire:
        assert cred.id_i[1:] not in m and cred.id_r[1:] not in m
    paper = simulated_full_ike(mode=ProtocolMode.PAPER)
    init = Initiator(paper, InitiatorConfig(allow_paper_mode=True))
    init.initiate(NOW)
    [(m1, _)] = init.datagrams_to_send(NOW)
    assert paper.id_i[1:] in m1


def test_paper_mode_interop_and_refused_by_default() -> None:
    cred = simulated_full_ike(mode=ProtocolMode.PAPER)
    with pytest.raises(LocalProtocolError):
        Initiator(cred)
    pair = ConnectionPair.create(ResponderConfig(allow_paper_mode=True), SECRET)
    pair.table.add(cred)
    ie, re_, _ = pair.run(Initiator(cred, InitiatorConfig(allow_paper_mode=True)), NOW)
    [ci], [cr] = completes(ie), completes(re_)
    assert cred.paper_keys is not None
    # the 2007 semantics: the cached keys and SPIs come back verbatim
    assert ci.sa.i_to_r == cr.sa.i_to_r == cred.paper_keys.i_to_r
    assert ci.sa.r_to_i == cr.sa.r_to_i == cred.paper_keys.r_to_i
    assert ci.successor.generation == 1
    # a default responder refuses paper mode with the NACK
    strict = ConnectionPair.create(server_secret=SECRET)
    strict.table.add(cred)
    ie, re_, _ = strict.run(Initiator(cred, InitiatorConfig(allow_paper_mode=True)), NOW)
    assert ie == [FallbackToFullIKE("nack")]
    assert not completes(re_)


def _nack_for(setup: str) -> tuple[bytes, bytes]:
    """Run message 1 of one fixed initiator into a responder set up to fail for a reason."""
    cred = simulated_full_ike(rng=det_rng("cred"))
    config = ResponderConfig(require_x25519=setup == "x25519_required")
    resp = Responder(config, SECRET)
    use_x = setup != "x25519_required"
    init = Initiator(cred, InitiatorConfig(use_x25519=use_x), det_rng("init" + str(use_x)))
    init.initiate(NOW)
    [(m1, _)] = init.datagrams_to_send(NOW)
    resp.receive_datagram(m1, CLIENT_ADDR, NOW)
    ev = resp.next_event()
    if isinstance(ev, CredentialNeeded):
        answer: Any = None
        if setup == "params_mismatch":
            answer = simulated_full_ike(
                rng=det_rng("cred"), params=example_params(Encr.AES_CBC, Integ.HMAC_SHA2_256_128)
            )
            answer = type(cred)(**{**answer.__dict__, "handle": cred.handle})
        elif setup == "mode_mismatch":
            p = simulated_full_ike(rng=det_rng("cred"), mode=ProtocolMode.PAPER)
            answer = type(cred)(**{**p.__dict__, "handle": cred.handle})
        resp.provide_credential(ev.token, answer, None, NOW)
    [(nack, to)] = resp.datagrams_to_send(NOW)
    assert to == CLIENT_ADDR
    init.receive_datagram(nack, SERVER_ADDR, NOW)
    assert drain(init) == [FallbackToFullIKE("nack")]
    return m1, nack


def test_one_identical_nack_for_every_reason() -> None:
    reasons = ["unknown", "params_mismatch", "mode_mismatch"]
    nacks = {r: _nack_for(r) for r in reasons}
    m1, nack = nacks["unknown"]
    assert {n for _, n in nacks.values()} == {nack}
    assert nack == build_nack(m1[:8], b"\x00" * 8, 0)
    # without X25519 the message 1 differs, but the NACK is a function of its header only
    m1x, nackx = _nack_for("x25519_required")
    assert nackx == build_nack(m1x[:8], b"\x00" * 8, 0)
    assert len(nackx) == len(nack)


def test_store_outage_fails_closed() -> None:
    cred = simulated_full_ike()
    pair = ConnectionPair.create(server_secret=SECRET)
    pair.table.add(cred)
    pair.table.available = False
    ie, re_, _ = pair.run(Initiator(cred), NOW)
    assert ie == [FallbackToFullIKE("nack")]
    assert [e.reason for e in re_ if isinstance(e, ResumptionFailed)] == ["unknown_or_refused"]


def test_lost_message3_costs_one_round_trip_never_strands() -> None:
    cred = simulated_full_ike()
    pair = ConnectionPair.create(server_secret=SECRET)
    pair.table.add(cred)

    def drop_msg3(direction: str, data: bytes) -> bool:
        return not (direction == "i2r" and data[20:24] == b"\x00\x00\x00\x01")

    ie, re_, _ = pair.run(Initiator(cred), NOW, drop_msg3)
    [ci] = completes(ie)
    assert not completes(re_)  # the responder never saw message 3: nothing committed
    assert pair.table.records == {cred.handle: cred}
    # without the previous generation the next attempt falls back
    ie2, _, _ = pair.run(Initiator(ci.successor), NOW + 1)
    assert ie2 == [FallbackToFullIKE("nack")]
    # with it: NACK for g+1, retry once with g, success
    init = Initiator(ci.successor, previous=cred)
    ie3, re3, _ = pair.run(init, NOW + 2)
    [c3], [r3] = completes(ie3), completes(re3)
    assert init.stats["retry_previous"] == 1
    assert c3.generation == r3.generation == 0 and c3.handle == cred.handle
    assert c3.successor == r3.successor != ci.successor
    # a second NACK after the retry is final
    gone = Initiator(ci.successor, previous=cred)
    ie4, _, _ = pair.run(gone, NOW + 3)
    assert ie4 == [FallbackToFullIKE("nack")]


def test_message3_retransmitted_when_message2_repeats() -> None:
    cred = simulated_full_ike()
    resp = Responder(ResponderConfig(), SECRET)
    from resume.testing import MemoryTable

    table = MemoryTable()
    table.add(cred)
    init = Initiator(cred)
    init.initiate(NOW)
    [(m1, _)] = init.datagrams_to_send(NOW)
    resp.receive_datagram(m1, CLIENT_ADDR, NOW)
    answer_events(resp, table, NOW)
    [(m2, _)] = resp.datagrams_to_send(NOW)
    init.receive_datagram(m2, SERVER_ADDR, NOW)
    init.successor_saved(NOW)
    [(m3, _)] = init.datagrams_to_send(NOW)  # lost
    # the responder answers a retransmitted message 1 from its cache (no second lookup)
    resp.receive_datagram(m1, CLIENT_ADDR, NOW + 0.5)
    assert resp.next_event() is None and resp.stats["retransmit_answered"] == 1
    [(m2b, _)] = resp.datagrams_to_send(NOW + 0.5)
    assert m2b == m2
    init.receive_datagram(m2b, SERVER_ADDR, NOW + 0.5)
    [(m3b, _)] = init.datagrams_to_send(NOW + 0.5)
    assert m3b == m3
    resp.receive_datagram(m3b, CLIENT_ADDR, NOW + 0.6)
    assert len(completes(answer_events(resp, table, NOW + 0.6))) == 1


def test_replayed_message3_never_completes_twice() -> None:
    cred = simulated_full_ike()
    pair = ConnectionPair.create(server_secret=SECRET)
    pair.table.add(cred)
    captured: list[bytes] = []

    def keep(direction: str, data: bytes) -> bool:
        if direction == "i2r" and data[20:24] == b"\x00\x00\x00\x01":
            captured.append(data)
        return True

    _, re_, _ = pair.run(Initiator(cred), NOW, keep)
    assert len(completes(re_)) == 1
    [m3] = captured
    # same responder: dropped before any lookup
    pair.responder.receive_datagram(m3, CLIENT_ADDR, NOW + 1)
    assert not completes(answer_events(pair.responder, pair.table, NOW + 1))
    # a fresh responder sharing the secret and the table (cluster peer): the table's
    # compare-and-set and the rotated handle refuse it
    other = Responder(ResponderConfig(), SECRET)
    other.receive_datagram(m3, CLIENT_ADDR, NOW + 1)
    assert not completes(answer_events(other, pair.table, NOW + 1))
    assert pair.table.commits == 1


def test_commit_failure_means_no_completion() -> None:
    cred = simulated_full_ike()
    resp = Responder(ResponderConfig(), SECRET)
    init = Initiator(cred)
    init.initiate(NOW)
    [(m1, _)] = init.datagrams_to_send(NOW)
    resp.receive_datagram(m1, CLIENT_ADDR, NOW)
    ev = resp.next_event()
    assert isinstance(ev, CredentialNeeded)
    resp.provide_credential(ev.token, cred, None, NOW)
    [(m2, _)] = resp.datagrams_to_send(NOW)
    init.receive_datagram(m2, SERVER_ADDR, NOW)
    init.successor_saved(NOW)
    [(m3, _)] = init.datagrams_to_send(NOW)
    resp.receive_datagram(m3, CLIENT_ADDR, NOW)
    ev = resp.next_event()
    assert isinstance(ev, CredentialNeeded)
    resp.provide_credential(ev.token, cred, None, NOW)
    ev = resp.next_event()
    assert isinstance(ev, CommitNeeded) and ev.generation == 0
    with pytest.raises(LocalProtocolError):
        resp.provide_credential(ev.token, cred, None, NOW)  # wrong answer for this token
    resp.commit_result(ev.token, False, NOW)
    evs = drain(resp)
    assert not completes(evs)
    assert [e.reason for e in evs if isinstance(e, ResumptionFailed)] == ["commit_failed"]
    with pytest.raises(LocalProtocolError):
        resp.commit_result(999, True, NOW)  # never issued


def test_message3_accepted_next_tick_refused_after() -> None:
    cred = simulated_full_ike()
    tick = ResponderConfig().cookie_tick_seconds
    for delay, ok in ((0.0, True), (tick, True), (2 * tick + 0.1, False)):
        resp = Responder(ResponderConfig(lookup_timeout=100.0), SECRET)
        from resume.testing import MemoryTable

        table = MemoryTable()
        table.add(cred)
        init = Initiator(cred, InitiatorConfig(timeout=1000.0))
        t0 = 10 * tick + 0.01  # start of a tick
        init.initiate(t0)
        [(m1, _)] = init.datagrams_to_send(t0)
        resp.receive_datagram(m1, CLIENT_ADDR, t0)
        answer_events(resp, table, t0)
        [(m2, _)] = resp.datagrams_to_send(t0)
        init.receive_datagram(m2, SERVER_ADDR, t0)
        init.successor_saved(t0)
        [(m3, _)] = init.datagrams_to_send(t0)
        # keep the tick's X25519 key alive as a busy responder would
        resp.receive_datagram(m3, CLIENT_ADDR, t0 + delay)
        evs = answer_events(resp, table, t0 + delay)
        assert bool(completes(evs)) == ok, delay
        if not ok:
            assert resp.stats["nack_stale_or_forged_cookie"] == 1


def test_message3_from_another_address_is_refused() -> None:
    cred = simulated_full_ike()
    pair = ConnectionPair.create(server_secret=SECRET)
    pair.table.add(cred)
    moved = ("203.0.113.9", 500)

    def reroute(direction: str, data: bytes) -> bool:
        if direction == "i2r" and data[20:24] == b"\x00\x00\x00\x01":
            pair.responder.receive_datagram(data, moved, NOW)
            return False
        return True

    _, re_, _ = pair.run(Initiator(cred), NOW, reroute)
    evs = re_ + answer_events(pair.responder, pair.table, NOW)
    assert not completes(evs)
    assert pair.responder.stats["nack_stale_or_forged_cookie"] == 1


def test_x25519_policies() -> None:
    cred = simulated_full_ike()
    # responder requires X25519, initiator does not offer it -> NACK -> fallback
    pair = ConnectionPair.create(ResponderConfig(require_x25519=True), SECRET)
    pair.table.add(cred)
    ie, _, _ = pair.run(Initiator(cred, InitiatorConfig(use_x25519=False)), NOW)
    assert ie == [FallbackToFullIKE("nack")]
    # responder refuses X25519: answers without it; an initiator that requires it gives up
    pair = ConnectionPair.create(ResponderConfig(allow_x25519=False), SECRET)
    pair.table.add(cred)
    ie, re_, _ = pair.run(Initiator(cred, InitiatorConfig(require_x25519=True)), NOW)
    assert ie == [FallbackToFullIKE("nack")] and not completes(re_)
    ie, re_, _ = pair.run(Initiator(cred), NOW)  # default initiator accepts
    assert len(completes(ie)) == len(completes(re_)) == 1


def test_initiator_retransmits_with_backoff_then_times_out() -> None:
    cred = simulated_full_ike()
    cfg = InitiatorConfig(initial_rto=0.5, max_retransmits=3, timeout=4.0)
    init = Initiator(cred, cfg)
    assert init.get_timer() is None
    init.initiate(NOW)
    [(m1, peer)] = init.datagrams_to_send(NOW)
    assert peer == (cred.params.responder_addr, 500)
    sent_at = []
    t = NOW
    while init.state is InitiatorState.WAIT_RESPONSE:
        timer = init.get_timer()
        assert timer is not None and timer > t
        t = timer
        init.handle_timer(t)
        for data, _ in init.datagrams_to_send(t):
            assert data == m1  # same message 1: the responder's cache answers it
            sent_at.append(t - NOW)
    assert sent_at == [0.5, 1.5, 3.5]
    assert t - NOW == 4.0
    assert drain(init) == [FallbackToFullIKE("timeout")]
    assert init.get_timer() is None
    init.handle_timer(t + 10)  # no effect after the end
    assert drain(init) == []


def test_responder_expires_unanswered_lookups() -> None:
    cred = simulated_full_ike()
    resp = Responder(ResponderConfig(lookup_timeout=2.0, max_pending=2), SECRET)
    tokens = []
    for i in range(3):
        init = Initiator(cred)
        init.initiate(NOW)
        [(m1, _)] = init.datagrams_to_send(NOW)
        resp.receive_datagram(m1, ("198.51.100.7", 1000 + i), NOW)
        ev = resp.next_event()
        if ev is not None:
            assert isinstance(ev, CredentialNeeded)
            tokens.append(ev.token)
    assert len(tokens) == 2 and resp.stats["drop_overload"] == 1
    assert resp.get_timer() == NOW + 2.0
    resp.handle_timer(NOW + 1.9)
    assert resp.pending == 2
    resp.handle_timer(NOW + 2.0)
    assert resp.pending == 0 and resp.get_timer() is None
    resp.provide_credential(tokens[0], cred, None, NOW + 3)  # late: ignored, counted
    assert resp.stats["late_answer"] == 1 and resp.datagrams_to_send(NOW + 3) == []
    with pytest.raises(LocalProtocolError):
        resp.provide_credential(10_000, cred, None, NOW)


def test_garbage_changes_nothing() -> None:
    resp = Responder(ResponderConfig(), SECRET)
    before = resp.describe()
    for junk in (b"", b"\x00" * 28, b"\xff" * 500, bytes(range(256))):
        resp.receive_datagram(junk, CLIENT_ADDR, NOW)
    after = resp.describe()
    assert after["stats"] == {"datagrams": 4, "drop_malformed": 4}
    assert {k: v for k, v in after.items() if k != "stats"} == {
        k: v for k, v in before.items() if k != "stats"
    }
    assert resp.next_event() is None and resp.datagrams_to_send(NOW) == []


def test_configuration_errors_are_local() -> None:
    with pytest.raises(LocalProtocolError):
        Responder(ResponderConfig(), b"short")
    with pytest.raises(LocalProtocolError):
        ResponderConfig(require_x25519=True, allow_x25519=False)
    with pytest.raises(LocalProtocolError):
        ResponderConfig(cookie_tick_seconds=0)
    with pytest.raises(LocalProtocolError):
        InitiatorConfig(timeout=float("nan"))
    cred = simulated_full_ike()
    with pytest.raises(LocalProtocolError):
        Initiator(cred, previous=cred)  # previous must be older
    init = Initiator(cred)
    init.initiate(NOW)
    with pytest.raises(LocalProtocolError):
        init.initiate(NOW)


def test_low_order_x25519_share_is_refused() -> None:
    from resume import wire as wm

    cred = simulated_full_ike()
    resp = Responder(ResponderConfig(), SECRET)
    p = cred.params
    sa = wm.ResumeSA(0x1000, int(p.encr), p.encr_key_bits, int(p.integ), 2)
    m1 = wm.build_hardened_init(b"I" * 8, cred.handle, sa, b"n" * 32, b"\x00" * 32)
    resp.receive_datagram(m1, CLIENT_ADDR, NOW)
    ev = resp.next_event()
    assert isinstance(ev, CredentialNeeded)
    resp.provide_credential(ev.token, cred, None, NOW)
    [(nack, _)] = resp.datagrams_to_send(NOW)
    assert nack == build_nack(b"I" * 8, b"\x00" * 8, 0)
    assert resp.stats["nack_bad_key_share"] == 1


@pytest.mark.parametrize("paper", [False, True])
def test_tampered_message3_is_refused_and_nothing_commits(paper: bool) -> None:
    mode = ProtocolMode.PAPER if paper else ProtocolMode.HARDENED
    cred = simulated_full_ike(mode=mode)
    pair = ConnectionPair.create(ResponderConfig(allow_paper_mode=paper), SECRET)
    pair.table.add(cred)
    genuine: list[bytes] = []

    def flip_mac(direction: str, data: bytes) -> bool:
        if direction == "i2r" and data[20:24] == b"\x00\x00\x00\x01":
            genuine.append(data)
            bad = data[:-1] + bytes([data[-1] ^ 0x40])
            pair.responder.receive_datagram(bad, CLIENT_ADDR, NOW)
            return False
        return True

    ie, re_, _ = pair.run(Initiator(cred, InitiatorConfig(allow_paper_mode=paper)), NOW, flip_mac)
    evs = re_ + answer_events(pair.responder, pair.table, NOW)
    assert len(completes(ie)) == 1 and not completes(evs)
    assert pair.responder.stats["nack_bad_mac"] == 1
    assert pair.table.commits == 0 and pair.table.records == {cred.handle: cred}
    # the genuine message 3 arrives after the forged one
    pair.responder.receive_datagram(genuine[0], CLIENT_ADDR, NOW + 1)
    evs = answer_events(pair.responder, pair.table, NOW + 1)
    if paper:
        # the proposal's per-peer state was consumed by the forgery: a one-packet DoS
        assert not completes(evs) and pair.responder.stats["nack_no_half_open"] == 1
    else:
        # hardened: nothing was kept, so a forgery cannot spoil the real run
        [done] = completes(evs)
        assert (done.sa.i_to_r, done.sa.r_to_i) == (
            completes(ie)[0].sa.i_to_r,
            completes(ie)[0].sa.r_to_i,
        )


def test_paper_message3_without_message1_is_refused() -> None:
    from resume import wire as wm

    resp = Responder(ResponderConfig(allow_paper_mode=True), SECRET)
    m3 = wm.build_paper_auth_prefix(b"I" * 8, b"R" * 8, b"\x02someone") + b"m" * 32
    resp.receive_datagram(m3, CLIENT_ADDR, NOW)
    [(nack, _)] = resp.datagrams_to_send(NOW)
    assert nack == build_nack(b"I" * 8, b"R" * 8, 1)
    assert resp.stats["nack_no_half_open"] == 1 and resp.next_event() is not None


def test_credential_cache_saves_the_second_lookup_and_stays_safe() -> None:
    cred = simulated_full_ike()
    pair = ConnectionPair.create(ResponderConfig(credential_cache_size=8), SECRET)
    pair.table.add(cred)
    ie, re_, _ = pair.run(Initiator(cred), NOW)
    [ci], [cr] = completes(ie), completes(re_)
    assert (ci.sa.i_to_r, ci.sa.r_to_i) == (cr.sa.i_to_r, cr.sa.r_to_i)
    assert pair.responder.stats["credential_cache_hit"] == 1

    # the record moves on between message 1 and message 3 (e.g. a cluster peer committed,
    # or the operator revoked it): the cached copy verifies, but the commit decides
    nxt = ci.successor
    captured: list[bytes] = []

    def revoke_before_msg3(direction: str, data: bytes) -> bool:
        if direction == "i2r" and data[20:24] == b"\x00\x00\x00\x01":
            del pair.table.records[nxt.handle]
            captured.append(data)
        return True

    ie, re_, _ = pair.run(Initiator(nxt), NOW + 1, revoke_before_msg3)
    assert len(completes(ie)) == 1 and not completes(re_)
    assert [e.reason for e in re_ if isinstance(e, ResumptionFailed)] == ["commit_failed"]
    assert pair.responder.stats["credential_cache_hit"] == 2
    # the cache entry is used once: a replay goes to the (now empty) table
    pair.responder.receive_datagram(captured[0], CLIENT_ADDR, NOW + 1)
    assert not completes(answer_events(pair.responder, pair.table, NOW + 1))


def test_credential_cache_size_is_validated() -> None:
    with pytest.raises(LocalProtocolError):
        ResponderConfig(credential_cache_size=-1)


@pytest.mark.parametrize("same_object", [True, False])
def test_one_x25519_per_exchange_and_the_kept_secret_goes_with_its_tick_key(
    monkeypatch: pytest.MonkeyPatch, same_object: bool
) -> None:
    import dataclasses

    from resume import keyschedule as ks

    calls: list[str] = []

    def counted(name: str) -> None:
        real = getattr(ks, name)

        def wrapper(*args: Any) -> Any:
            calls.append(name)
            return real(*args)

        monkeypatch.setattr(ks, name, wrapper)

    counted("x25519_shared_untrusted")
    counted("run_secrets")
    r_events: list[Event] = []
    cred = simulated_full_ike()
    tick = ResponderConfig().cookie_tick_seconds
    t0 = 10 * tick + 0.01
    pair = ConnectionPair.create(ResponderConfig(lookup_timeout=100.0), SECRET)
    pair.table.add(cred)
    resp_calls: list[str] = []

    def count_responder(direction: str, data: bytes) -> bool:
        if direction == "i2r":
            if data[20:24] == b"\x00\x00\x00\x01" and not same_object:
                # message 3 is answered with an equal record read anew: recomputed secrets
                pair.table.records[cred.handle] = dataclasses.replace(cred)
            before = len(calls)
            pair.responder.receive_datagram(data, CLIENT_ADDR, t0)
            r_events.extend(answer_events(pair.responder, pair.table, t0))
            resp_calls.extend(calls[before:])
            return False
        return True

    ie, _, _ = pair.run(Initiator(cred), t0, count_responder)
    [ci], [cr] = completes(ie), completes(r_events)
    assert (ci.sa.i_to_r, ci.sa.r_to_i, ci.successor) == (cr.sa.i_to_r, cr.sa.r_to_i, cr.successor)
    # message 3 reused message 1's shared secret, and its run secrets for the same record
    assert resp_calls.count("x25519_shared_untrusted") == 1
    assert resp_calls.count("run_secrets") == (1 if same_object else 2)
    assert not any(pair.responder._tick_runs.values())  # taken once by message 3

    # an exchange abandoned after message 2: its secret is erased with the tick key
    init = Initiator(ie[0].successor, InitiatorConfig(timeout=1000.0))
    init.initiate(t0)
    [(m1, _)] = init.datagrams_to_send(t0)
    pair.responder.receive_datagram(m1, CLIENT_ADDR, t0)
    answer_events(pair.responder, pair.table, t0)
    assert sum(map(len, pair.responder._tick_runs.values())) == 1
    pair.responder.handle_timer(t0 + 2 * tick + 0.1)
    assert not pair.responder._tick_runs and not pair.responder._tick_keys
