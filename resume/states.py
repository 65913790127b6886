"""Every state and transition of the protocol core, in one table per role (h11 style).

Reading this file is meant to be enough to know what the core can do: anything not listed
is either a local API misuse (``LocalProtocolError``) or, for network input, a datagram that
is dropped and counted without changing state.  The state machines never use ``assert``.

Initiator (one object per attempt)::

    IDLE --initiate--> WAIT_RESPONSE --valid message 2--> DONE   (message 3 sent)
                          |  |--NACK, previous generation unused--> WAIT_RESPONSE (retry once)
                          |  |--NACK--> FALLBACK
                          |--retransmit timer--> WAIT_RESPONSE (message 1 again, backoff)
                          |--overall timeout--> FALLBACK
    DONE --identical message 2 again--> DONE (message 3 re-sent: it was lost)

Responder (one object for all peers; per-request *slots* identified by a token, stateless
between message 2 and message 3)::

    message 1 --> AWAIT_CREDENTIAL_1 --credential--> (message 2 sent, slot freed)
                                     --None------> (NACK, slot freed)
    message 3 --> AWAIT_CREDENTIAL_3 --credential, MAC ok--> AWAIT_COMMIT
                                     --None / MAC bad----> (NACK, slot freed)
    AWAIT_COMMIT --commit ok--> (ResumptionComplete, slot freed)
                 --commit failed--> (NACK, slot freed)
    any slot --lookup timeout--> (dropped; the initiator retransmits)
"""

from __future__ import annotations

import enum

from resume.errors import LocalProtocolError


class InitiatorState(enum.Enum):
    # Members are singletons compared by identity: hash them by identity too (in C), not
    # by name (Enum.__hash__ is Python code, run for every table lookup on the hot path).
    __hash__ = object.__hash__

    IDLE = "idle"
    WAIT_RESPONSE = "wait_response"
    DONE = "done"
    FALLBACK = "fallback"


class InitiatorInput(enum.Enum):
    __hash__ = object.__hash__

    INITIATE = "initiate"  # local
    VALID_RESPONSE = "valid_response"
    NACK_RETRY_PREVIOUS = "nack_retry_previous"
    NACK = "nack"
    RETRANSMIT = "retransmit"
    TIMEOUT = "timeout"
    DUPLICATE_RESPONSE = "duplicate_response"


INITIATOR_TRANSITIONS: dict[InitiatorState, dict[InitiatorInput, InitiatorState]] = {
    InitiatorState.IDLE: {InitiatorInput.INITIATE: InitiatorState.WAIT_RESPONSE},
    InitiatorState.WAIT_RESPONSE: {
        InitiatorInput.VALID_RESPONSE: InitiatorState.DONE,
        InitiatorInput.NACK_RETRY_PREVIOUS: InitiatorState.WAIT_RESPONSE,
        InitiatorInput.NACK: InitiatorState.FALLBACK,
        InitiatorInput.RETRANSMIT: InitiatorState.WAIT_RESPONSE,
        InitiatorInput.TIMEOUT: InitiatorState.FALLBACK,
    },
    InitiatorState.DONE: {InitiatorInput.DUPLICATE_RESPONSE: InitiatorState.DONE},
    InitiatorState.FALLBACK: {},
}


class SlotState(enum.Enum):
    __hash__ = object.__hash__

    AWAIT_CREDENTIAL_1 = "await_credential_1"
    AWAIT_CREDENTIAL_3 = "await_credential_3"
    AWAIT_COMMIT = "await_commit"
    CLOSED = "closed"


class SlotInput(enum.Enum):
    __hash__ = object.__hash__

    CREDENTIAL = "credential"  # local: provide_credential
    VERIFIED = "verified"  # message 3 checked against the credential
    REFUSED = "refused"  # None, mismatch or bad MAC: NACK
    COMMIT = "commit"  # local: commit_result
    EXPIRE = "expire"


SLOT_TRANSITIONS: dict[SlotState, dict[SlotInput, SlotState]] = {
    SlotState.AWAIT_CREDENTIAL_1: {
        SlotInput.CREDENTIAL: SlotState.CLOSED,
        SlotInput.REFUSED: SlotState.CLOSED,
        SlotInput.EXPIRE: SlotState.CLOSED,
    },
    SlotState.AWAIT_CREDENTIAL_3: {
        SlotInput.VERIFIED: SlotState.AWAIT_COMMIT,
        SlotInput.REFUSED: SlotState.CLOSED,
        SlotInput.EXPIRE: SlotState.CLOSED,
    },
    SlotState.AWAIT_COMMIT: {
        SlotInput.COMMIT: SlotState.CLOSED,
        SlotInput.EXPIRE: SlotState.CLOSED,
    },
    SlotState.CLOSED: {},
}

#: Slot states that ``provide_credential`` may answer / ``commit_result`` may answer; any other
#: state is API misuse.  Network inputs in a wrong state are dropped and counted instead.
ACCEPTS_CREDENTIAL = frozenset({SlotState.AWAIT_CREDENTIAL_1, SlotState.AWAIT_CREDENTIAL_3})
ACCEPTS_COMMIT = frozenset({SlotState.AWAIT_COMMIT})


def initiator_next(state: InitiatorState, event: InitiatorInput) -> InitiatorState | None:
    """The next state, or None when ``event`` is not allowed in ``state`` (network input:
    drop it).  A local input that is not allowed raises LocalProtocolError."""
    nxt = INITIATOR_TRANSITIONS[state].get(event)
    if nxt is None and event is InitiatorInput.INITIATE:
        raise LocalProtocolError(f"cannot {event.value} in state {state.value}")
    return nxt


def slot_next(state: SlotState, event: SlotInput) -> SlotState:
    """The next slot state; a transition not in the table is a LocalProtocolError (the
    responder only feeds network input to slots after checking the table itself)."""
    nxt = SLOT_TRANSITIONS[state].get(event)
    if nxt is None:
        raise LocalProtocolError(f"slot in state {state.value} cannot take {event.value}")
    return nxt
