"""The initiator writes ahead: message 3 never leaves before the successor is saved.

In-process, with a model of the initiator's durable cache (current and kept previous
generation, updated exactly as ``Store.advance_initiator`` does), a "crash" of the client
at every point of an attempt, and message 3 lost or delivered: whatever happens, the next
attempt resumes (spec 9.2: try g+1, on NACK once with g), and the responder accepts every
generation at most once.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resume import native
from resume.credential import Credential
from resume.events import CommitNeeded, FallbackToFullIKE, ResumptionComplete, SaveSuccessor
from resume.initiator import Initiator, InitiatorConfig
from resume.responder import Responder, ResponderConfig
from resume.states import InitiatorState
from resume.testing import (
    CLIENT_ADDR,
    SERVER_ADDR,
    ConnectionPair,
    MemoryTable,
    answer_events,
    drain,
    simulated_full_ike,
)

NOW = 10_000.0
#: the key exchanges of an attempt: the write-ahead is the same whatever the run mixed in
#: (ML-KEM keeps responder state per message 2, spec 5.6: the abandoned attempts leave some)
KE_CONFIGS = {
    "x25519": InitiatorConfig(),
    "x25519+mlkem768": InitiatorConfig(use_x25519=True, mlkem="require"),
}


@dataclass
class DurableCache:
    """What survives a crash of the client: ``Store.advance_initiator``'s two generations."""

    current: Credential
    previous: Credential | None = None

    def advance(self, used_handle: bytes, used_generation: int, successor: Credential) -> None:
        used_current = (self.current.handle, self.current.generation) == (
            used_handle,
            used_generation,
        )
        if used_current:
            self.previous = self.current
        self.current = successor


def _to_message2(pair: ConnectionPair, init: Initiator, now: float) -> SaveSuccessor:
    """Run message 1 and 2; the initiator asks for the save and sends nothing more."""
    init.initiate(now)
    for _ in range(3):  # message 1, a NACK and the retry with the previous generation
        for data, _a in init.datagrams_to_send(now):
            pair.responder.receive_datagram(data, CLIENT_ADDR, now)
            answer_events(pair.responder, pair.table, now)
        for data, _a in pair.responder.datagrams_to_send(now):
            init.receive_datagram(data, SERVER_ADDR, now)
        events = drain(init)
        saves = [e for e in events if isinstance(e, SaveSuccessor)]
        if saves:
            assert init.state is InitiatorState.SAVE_SUCCESSOR
            assert init.datagrams_to_send(now) == []
            return saves[0]
        assert not any(isinstance(e, FallbackToFullIKE) for e in events), events
    raise AssertionError("no message 2")


def test_message3_waits_for_the_save_even_when_message2_repeats_and_timers_fire() -> None:
    cred = simulated_full_ike()
    pair = ConnectionPair.create()
    pair.table.add(cred)
    init = Initiator(cred, InitiatorConfig(initial_rto=0.5, max_retransmits=3, timeout=4.0))
    init.initiate(NOW)
    [(m1, _)] = init.datagrams_to_send(NOW)
    pair.responder.receive_datagram(m1, CLIENT_ADDR, NOW)
    answer_events(pair.responder, pair.table, NOW)
    [(m2, _)] = pair.responder.datagrams_to_send(NOW)
    init.receive_datagram(m2, SERVER_ADDR, NOW)
    [save] = drain(init)
    assert isinstance(save, SaveSuccessor)
    assert (save.handle, save.generation) == (cred.handle, cred.generation)
    assert save.successor.generation == cred.generation + 1
    # the save is slow: the responder's copy of message 2 arrives again, timers pass
    init.receive_datagram(m2, SERVER_ADDR, NOW + 1)
    assert init.get_timer() is None  # no retransmission or timeout while saving
    init.handle_timer(NOW + 100)
    assert init.datagrams_to_send(NOW + 100) == [] and drain(init) == []
    assert init.stats["drop_while_saving"] == 1
    init.successor_saved(NOW + 100)
    [(m3, _)] = init.datagrams_to_send(NOW + 100)
    [done] = drain(init)
    assert isinstance(done, ResumptionComplete) and done.successor == save.successor
    assert done.sa == save.sa
    # now a repeated message 2 means "message 3 was lost": it is sent again
    init.receive_datagram(m2, SERVER_ADDR, NOW + 101)
    assert init.datagrams_to_send(NOW + 101) == [(m3, init.peer)]


@pytest.mark.parametrize("ke", KE_CONFIGS)
def test_failed_save_sends_nothing_and_the_generation_stays_usable(ke: str) -> None:
    cred = simulated_full_ike()
    pair = ConnectionPair.create()
    pair.table.add(cred)
    ie, re_, _ = pair.run(Initiator(cred, KE_CONFIGS[ke]), NOW, save_ok=False)
    assert [type(e) for e in ie] == [SaveSuccessor, FallbackToFullIKE]
    assert ie[-1] == FallbackToFullIKE("save_failed")
    assert re_ == [] and pair.table.commits == 0
    assert pair.table.lookup(cred.handle) == cred  # the responder never saw message 3
    ie, _, _ = pair.run(Initiator(cred, KE_CONFIGS[ke]), NOW + 1)
    [done] = [e for e in ie if isinstance(e, ResumptionComplete)]
    assert done.ke == ke


CRASH_POINTS = ("before_save", "after_save", "message3_lost", "message3_delivered", "none")


@pytest.mark.parametrize("ke", KE_CONFIGS)
@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(CRASH_POINTS), min_size=1, max_size=6))
def test_a_crash_at_any_point_never_strands_the_client(ke: str, points: list[str]) -> None:
    """Each attempt ends at ``point`` (a crash, or message 3's fate); afterwards a clean
    attempt from what the cache holds resumes, and no generation was accepted twice."""
    cred = simulated_full_ike()
    resp = Responder(ResponderConfig(), b"S" * 32)
    pair = ConnectionPair(resp, MemoryTable())
    pair.table.add(cred)
    cache = DurableCache(cred)
    accepted: list[tuple[bytes, int]] = []
    now = NOW
    for point in [*points, "none"]:
        now += 30.0  # a new cookie tick each time
        init = Initiator(cache.current, KE_CONFIGS[ke], previous=cache.previous)
        save = _to_message2(pair, init, now)
        if point == "before_save":
            continue  # killed while writing: nothing durable, nothing sent
        cache.advance(save.handle, save.generation, save.successor)
        init.successor_saved(now)
        [(m3, _)] = init.datagrams_to_send(now)
        if point == "after_save":
            continue  # killed before message 3 left
        if point == "message3_lost":
            continue
        before = pair.table.commits
        resp.receive_datagram(m3, CLIENT_ADDR, now)
        answer_events(resp, pair.table, now)
        assert pair.table.commits == before + 1
        accepted.append((save.handle, save.generation))
    # the last, clean attempt was delivered: both ends hold the same generation
    assert pair.table.lookup(cache.current.handle) == cache.current
    assert len(accepted) == len(set(accepted))


@pytest.mark.parametrize("core", ["python", "native"])
def test_a_restarted_client_does_not_race_its_own_message3(core: str) -> None:
    """Killed right after sending message 3 and started again at once, a client's first
    message 1 (with g+1) can reach the responder while that message 3's commit is still in
    flight.  Answered from the store then, it would be NACKed (g+1 not there yet), the
    retry with g would get a message 2 (g not gone yet), and once the first commit lands
    the second could never commit: a client stranded by its own message 3.  The responder
    drops a message 1 whose handle a commit in flight consumes or creates; the client's
    retransmission is answered after the commit."""
    cred = simulated_full_ike()
    table = MemoryTable()
    table.add(cred)
    rcfg = ResponderConfig(credential_cache_size=16)
    if core == "native" and not native.available():
        pytest.skip("the native core is not built")
    resp = (
        native.NativeResponder(rcfg, b"S" * 32) if core == "native" else Responder(rcfg, b"S" * 32)
    )
    first = Initiator(cred)
    first.initiate(NOW)
    [(m1, _)] = first.datagrams_to_send(NOW)
    resp.receive_datagram(m1, CLIENT_ADDR, NOW)
    answer_events(resp, table, NOW)
    [(m2, _)] = resp.datagrams_to_send(NOW)
    first.receive_datagram(m2, SERVER_ADDR, NOW)
    [save] = drain(first)
    assert isinstance(save, SaveSuccessor)
    cache = DurableCache(cred)
    cache.advance(save.handle, save.generation, save.successor)
    first.successor_saved(NOW)
    [(m3, _)] = first.datagrams_to_send(NOW)  # ... and the process is killed
    resp.receive_datagram(m3, CLIENT_ADDR, NOW)  # verified (cached credential): committing
    commit = resp.next_event()
    assert isinstance(commit, CommitNeeded)

    second = Initiator(cache.current, InitiatorConfig(initial_rto=0.5), previous=cache.previous)
    second.initiate(NOW + 0.01)
    [(n1, _)] = second.datagrams_to_send(NOW + 0.01)
    resp.receive_datagram(n1, CLIENT_ADDR, NOW + 0.01)
    assert resp.datagrams_to_send(NOW + 0.01) == []  # no NACK while g -> g+1 commits
    assert resp.stats["drop_committing"] == 1
    assert table.commit(commit.handle, commit.generation, commit.successor)
    resp.commit_result(commit.token, True, NOW + 0.02)
    drain(resp)
    second.handle_timer(NOW + 0.6)  # retransmission of message 1 (g+1)
    [(n1_again, _)] = second.datagrams_to_send(NOW + 0.6)
    resp.receive_datagram(n1_again, CLIENT_ADDR, NOW + 0.6)
    answer_events(resp, table, NOW + 0.6)
    [(n2, _)] = resp.datagrams_to_send(NOW + 0.6)
    second.receive_datagram(n2, SERVER_ADDR, NOW + 0.6)
    [save2] = drain(second)
    assert isinstance(save2, SaveSuccessor) and save2.generation == cred.generation + 1
