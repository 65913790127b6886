"""h2-style sweep: every state of each machine crossed with every kind of input.

Expected outcomes come from resume.states (the transition tables); this test drives the real
objects into each state and checks that they follow the table, drop what the table does not
list, and raise LocalProtocolError only for local API misuse.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from resume.errors import LocalProtocolError
from resume.events import (
    CommitNeeded,
    CredentialNeeded,
    FallbackToFullIKE,
    ResumptionComplete,
    SaveSuccessor,
)
from resume.initiator import Initiator, InitiatorConfig
from resume.responder import Responder, ResponderConfig
from resume.states import (
    INITIATOR_LOCAL_INPUTS,
    INITIATOR_TRANSITIONS,
    SLOT_TRANSITIONS,
    InitiatorInput,
    InitiatorState,
    SlotInput,
    SlotState,
)
from resume.testing import CLIENT_ADDR, SERVER_ADDR, MemoryTable, answer_events, simulated_full_ike
from resume.wire import build_nack

NOW = 5_000.0
CRED = simulated_full_ike()
OTHER = simulated_full_ike()


def _initiator_in(state: InitiatorState) -> tuple[Initiator, Responder, bytes]:
    """An initiator in ``state`` plus a responder and the message 2 it got (or would get)."""
    resp = Responder(ResponderConfig(), b"R" * 32)
    table = MemoryTable()
    table.add(CRED)
    init = Initiator(CRED, InitiatorConfig(max_retransmits=1, timeout=3.0))
    if state is InitiatorState.IDLE:
        return init, resp, b""
    init.initiate(NOW)
    [(m1, _)] = init.datagrams_to_send(NOW)
    resp.receive_datagram(m1, CLIENT_ADDR, NOW)
    answer_events(resp, table, NOW)
    [(m2, _)] = resp.datagrams_to_send(NOW)
    if state in (InitiatorState.SAVE_SUCCESSOR, InitiatorState.DONE):
        init.receive_datagram(m2, SERVER_ADDR, NOW)
        assert isinstance(init.next_event(), SaveSuccessor)
        assert init.datagrams_to_send(NOW) == []  # message 3 waits for the save
    if state is InitiatorState.DONE:
        init.successor_saved(NOW)
        init.datagrams_to_send(NOW)
        init.next_event()
    elif state is InitiatorState.FALLBACK:
        init.handle_timer(NOW + 10)
        init.next_event()
    assert init.state is state
    return init, resp, m2


def _other_runs_message2() -> bytes:
    """A valid message 2 of someone else's run (right format, wrong SPI and keys)."""
    _i, _r, m2 = _initiator_in(InitiatorState.WAIT_RESPONSE)
    return m2


INPUTS: dict[str, Callable[[Initiator, bytes], None]] = {
    "initiate": lambda i, m2: i.initiate(NOW + 1),
    "successor_saved": lambda i, m2: i.successor_saved(NOW + 1),
    "save_failed": lambda i, m2: i.successor_save_failed(NOW + 1),
    "valid_message2": lambda i, m2: i.receive_datagram(m2, SERVER_ADDR, NOW + 1),
    "nack": lambda i, m2: i.receive_datagram(
        build_nack(m2[:8] if m2 else b"x" * 8, b"\x00" * 8, 0), SERVER_ADDR, NOW + 1
    ),
    "nack_for_message3": lambda i, m2: i.receive_datagram(
        build_nack(m2[:8] if m2 else b"x" * 8, b"y" * 8, 1), SERVER_ADDR, NOW + 1
    ),
    "foreign_message2": lambda i, m2: i.receive_datagram(
        _other_runs_message2(), SERVER_ADDR, NOW + 1
    ),
    "tampered_message2": lambda i, m2: i.receive_datagram(
        m2[:-1] + bytes([m2[-1] ^ 1]) if m2 else b"", SERVER_ADDR, NOW + 1
    ),
    "garbage": lambda i, m2: i.receive_datagram(b"\x01" * 40, SERVER_ADDR, NOW + 1),
    "retransmit_timer": lambda i, m2: i.handle_timer(NOW + 0.6),
    "overall_timeout": lambda i, m2: i.handle_timer(NOW + 100),
}

# input name -> the table input it is (None: must be dropped in every state)
AS_TABLE_INPUT = {
    "initiate": InitiatorInput.INITIATE,
    "successor_saved": InitiatorInput.SUCCESSOR_SAVED,
    "save_failed": InitiatorInput.SAVE_FAILED,
    "valid_message2": InitiatorInput.VALID_RESPONSE,
    "nack": InitiatorInput.NACK,
    "retransmit_timer": InitiatorInput.RETRANSMIT,
    "overall_timeout": InitiatorInput.TIMEOUT,
}


@pytest.mark.parametrize("state", list(InitiatorState))
@pytest.mark.parametrize("name", list(INPUTS))
def test_initiator_state_by_input(state: InitiatorState, name: str) -> None:
    init, _resp, m2 = _initiator_in(state)
    table_input = AS_TABLE_INPUT.get(name)
    if name == "valid_message2" and state is InitiatorState.DONE:
        table_input = InitiatorInput.DUPLICATE_RESPONSE
    expected = None if table_input is None else INITIATOR_TRANSITIONS[state].get(table_input)
    if table_input in INITIATOR_LOCAL_INPUTS and expected is None:
        with pytest.raises(LocalProtocolError):
            INPUTS[name](init, m2)
        assert init.state is state
        assert init.datagrams_to_send(NOW + 1) == []
        return
    if state is InitiatorState.IDLE and name != "initiate":
        INPUTS[name](init, m2)
        assert init.state is InitiatorState.IDLE  # nothing before initiate()
        assert init.next_event() is None
        return
    INPUTS[name](init, m2)
    events = []
    while (ev := init.next_event()) is not None:
        events.append(ev)
    sent = init.datagrams_to_send(NOW + 1)
    if expected is None:
        assert init.state is state, name
        assert events == []
        if state is InitiatorState.SAVE_SUCCESSOR:
            assert sent == []  # nothing from the network makes message 3 leave early
        return
    assert init.state is expected
    if expected is InitiatorState.SAVE_SUCCESSOR:
        assert [type(e) for e in events] == [SaveSuccessor]
        assert sent == []  # write-ahead: message 3 is not sent yet
    elif expected is InitiatorState.DONE and state is InitiatorState.SAVE_SUCCESSOR:
        assert [type(e) for e in events] == [ResumptionComplete]
        assert len(sent) == 1  # message 3, once the successor is saved
    elif expected is InitiatorState.FALLBACK:
        assert [type(e) for e in events] == [FallbackToFullIKE]
        assert sent == []


def _responder_with_slot(kind: str, m3_twice: bool = False) -> tuple[Responder, int]:
    resp = Responder(ResponderConfig(), b"R" * 32)
    table = MemoryTable()
    table.add(CRED)
    init = Initiator(CRED)
    init.initiate(NOW)
    [(m1, _)] = init.datagrams_to_send(NOW)
    resp.receive_datagram(m1, CLIENT_ADDR, NOW)
    ev = resp.next_event()
    assert isinstance(ev, CredentialNeeded)
    if kind == "await_credential_1":
        return resp, ev.token
    resp.provide_credential(ev.token, CRED, None, NOW)
    [(m2, _)] = resp.datagrams_to_send(NOW)
    init.receive_datagram(m2, SERVER_ADDR, NOW)
    init.successor_saved(NOW)
    [(m3, _)] = init.datagrams_to_send(NOW)
    resp.receive_datagram(m3, CLIENT_ADDR, NOW)
    if m3_twice:  # a copy of message 3 arrives while the first waits for its credential
        resp.receive_datagram(m3, CLIENT_ADDR, NOW)
    ev = resp.next_event()
    assert isinstance(ev, CredentialNeeded)
    if kind == "await_credential_3":
        return resp, ev.token
    resp.provide_credential(ev.token, CRED, None, NOW)
    ev = resp.next_event()
    assert isinstance(ev, CommitNeeded)
    return resp, ev.token


@pytest.mark.parametrize("kind", ["await_credential_1", "await_credential_3", "await_commit"])
@pytest.mark.parametrize(
    "answer", ["credential", "none", "wrong_handle", "commit_ok", "commit_fail", "expire"]
)
def test_responder_slot_by_local_input(kind: str, answer: str) -> None:
    resp, token = _responder_with_slot(kind)
    wants_credential = kind != "await_commit"
    misuse = (answer in ("credential", "none", "wrong_handle") and not wants_credential) or (
        answer.startswith("commit") and wants_credential
    )
    if answer == "wrong_handle" and wants_credential:
        misuse = True
    if misuse:
        with pytest.raises(LocalProtocolError):
            if answer.startswith("commit"):
                resp.commit_result(token, answer == "commit_ok", NOW)
            else:
                cred = OTHER if answer == "wrong_handle" else CRED
                resp.provide_credential(token, None if answer == "none" else cred, None, NOW)
        assert resp.pending == 1  # the slot is untouched by a misuse
        assert resp.slots.last == _OPENED.get(kind)  # and no transition happened
        return
    state = SlotState(kind)
    if answer == "expire":
        resp.handle_timer(NOW + 60)
        assert resp.pending == 0
        assert resp.datagrams_to_send(NOW + 60) == []
        assert resp.slots.last == (state, SlotInput.EXPIRE, SlotState.CLOSED)
        return
    if answer.startswith("commit"):
        resp.commit_result(token, answer == "commit_ok", NOW)
    else:
        resp.provide_credential(token, None if answer == "none" else CRED, None, NOW)
    events = []
    while (ev := resp.next_event()) is not None:
        events.append(ev)
    out = resp.datagrams_to_send(NOW)
    taken = {
        "none": SlotInput.REFUSED,
        "commit_fail": SlotInput.REFUSED,
        "commit_ok": SlotInput.COMMIT,
        "credential": SlotInput.CREDENTIAL if kind == "await_credential_1" else SlotInput.VERIFIED,
    }[answer]
    assert resp.slots.last == (state, taken, SLOT_TRANSITIONS[state][taken])
    if answer == "none" or answer == "commit_fail":
        assert len(out) == 1 and not any(isinstance(e, ResumptionComplete) for e in events)
    elif answer == "commit_ok":
        assert [type(e) for e in events] == [ResumptionComplete]
    elif kind == "await_credential_1":
        assert len(out) == 1 and resp.pending == 0  # message 2, nothing kept
    else:
        assert [type(e) for e in events] == [CommitNeeded] and resp.pending == 1


#: the last transition of a responder whose newest slot was just opened in that state
_OPENED = {
    "await_credential_1": None,
    "await_credential_3": (SlotState.AWAIT_CREDENTIAL_1, SlotInput.CREDENTIAL, SlotState.CLOSED),
    "await_commit": (SlotState.AWAIT_CREDENTIAL_3, SlotInput.VERIFIED, SlotState.AWAIT_COMMIT),
}


def _message1_meets_its_own_commit() -> Responder:
    """A message 1 for a successor handle waits for its credential; then the message 3
    that creates that handle verifies (its commit is in flight): "not yet", not a NACK."""
    resp = Responder(ResponderConfig(), b"R" * 32)
    first = Initiator(CRED)
    first.initiate(NOW)
    [(m1, _)] = first.datagrams_to_send(NOW)
    resp.receive_datagram(m1, CLIENT_ADDR, NOW)
    ev = resp.next_event()
    assert isinstance(ev, CredentialNeeded)
    resp.provide_credential(ev.token, CRED, None, NOW)
    [(m2, _)] = resp.datagrams_to_send(NOW)
    first.receive_datagram(m2, SERVER_ADDR, NOW)
    save = first.next_event()
    assert isinstance(save, SaveSuccessor)
    first.successor_saved(NOW)
    [(m3, _)] = first.datagrams_to_send(NOW)
    again = Initiator(save.successor, previous=CRED)  # the client's next process
    again.initiate(NOW)
    [(m1_next, _)] = again.datagrams_to_send(NOW)
    resp.receive_datagram(m1_next, CLIENT_ADDR, NOW)  # before message 3 is read
    waiting = resp.next_event()
    assert isinstance(waiting, CredentialNeeded) and waiting.handle == save.successor.handle
    resp.receive_datagram(m3, CLIENT_ADDR, NOW)
    ev = resp.next_event()
    assert isinstance(ev, CredentialNeeded)
    resp.provide_credential(ev.token, CRED, None, NOW)
    assert isinstance(resp.next_event(), CommitNeeded)
    resp.provide_credential(waiting.token, None, None, NOW)  # the store: not there yet
    assert resp.datagrams_to_send(NOW) == []  # no NACK
    return resp


def _drive(state: SlotState, event: SlotInput) -> Responder:
    """A real responder that has just applied ``event`` to a slot in ``state``."""
    if event is SlotInput.COMMITTING:
        return _message1_meets_its_own_commit()
    if event is SlotInput.REPLAYED:
        # two copies of message 3 wait for their credential; the first one verifies (its
        # handle is now committing), so the second is a replay once its credential comes
        resp, first = _responder_with_slot("await_credential_3", m3_twice=True)
        second = resp.next_event()
        assert isinstance(second, CredentialNeeded)
        resp.provide_credential(first, CRED, None, NOW)
        resp.provide_credential(second.token, CRED, None, NOW)
        return resp
    resp, token = _responder_with_slot(state.value)
    if event is SlotInput.EXPIRE:
        resp.handle_timer(NOW + 60)
    elif event is SlotInput.COMMIT:
        resp.commit_result(token, True, NOW)
    elif event is SlotInput.REFUSED and state is SlotState.AWAIT_COMMIT:
        resp.commit_result(token, False, NOW)
    else:
        cred = None if event is SlotInput.REFUSED else CRED
        resp.provide_credential(token, cred, None, NOW)
    return resp


ROWS = [(st, ev) for st, row in SLOT_TRANSITIONS.items() for ev in row]


@pytest.mark.parametrize(("state", "event"), ROWS, ids=[f"{s.value}-{e.value}" for s, e in ROWS])
def test_every_slot_table_row_is_a_real_transition(state: SlotState, event: SlotInput) -> None:
    """Each row of the slot table happens in a real Responder, through its SlotTable."""
    resp = _drive(state, event)
    assert resp.slots.last == (state, event, SLOT_TRANSITIONS[state][event])


def test_every_initiator_row_is_swept() -> None:
    """Each row of the initiator's table is an input of the sweep above (the two that need a
    particular history -- a kept previous generation, a repeated message 2 -- by name)."""
    swept = {(s, i) for s in InitiatorState for i in AS_TABLE_INPUT.values()}
    swept |= {(InitiatorState.DONE, InitiatorInput.DUPLICATE_RESPONSE)}
    swept |= {(InitiatorState.WAIT_RESPONSE, InitiatorInput.NACK_RETRY_PREVIOUS)}  # test_protocol
    rows = {(s, i) for s, row in INITIATOR_TRANSITIONS.items() for i in row}
    assert rows <= swept


def test_every_state_is_in_the_tables_and_every_open_state_can_close() -> None:
    assert set(INITIATOR_TRANSITIONS) == set(InitiatorState)
    assert set(SLOT_TRANSITIONS) == set(SlotState)
    rows = set(ROWS)
    for state in SlotState:
        if state is not SlotState.CLOSED:
            assert (state, SlotInput.EXPIRE) in rows and (state, SlotInput.REFUSED) in rows
