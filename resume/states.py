"""Every state and transition of the protocol core, in one table per role (h11 style).

Reading this file is meant to be enough to know what the core can do: anything not listed
is either a local API misuse (``LocalProtocolError``) or, for network input, a datagram that
is dropped and counted without changing state.  The state machines never use ``assert``.

Initiator (one object per attempt)::

    IDLE --initiate--> WAIT_RESPONSE --valid message 2--> SAVE_SUCCESSOR  (SaveSuccessor)
                          |  |--NACK, previous generation unused--> WAIT_RESPONSE (retry once)
                          |  |--NACK--> FALLBACK
                          |--retransmit timer--> WAIT_RESPONSE (message 1 again, backoff)
                          |--overall timeout--> FALLBACK
    SAVE_SUCCESSOR --successor_saved (local)--> DONE      (message 3 sent, completion)
                   --save_failed (local)------> FALLBACK  (nothing sent: g still valid)
    DONE --identical message 2 again--> DONE (message 3 re-sent: it was lost)

Why SAVE_SUCCESSOR (write-ahead): message 3 is what lets the responder move to generation
g+1.  If it could leave before the application had g+1 durably stored next to g, a crash
in between would leave a client holding only g against a responder at g+1: stranded.  So
message 3 is not even queued until the application says the successor is durable; a crash
at any point then leaves the client holding g+1 and g, and the lost-message-3 rule (try
g+1, on NACK retry once with g) covers every case.  An identical message 2 arriving while
the successor is being saved is dropped (counted): message 3 does not exist yet.

Responder (one object for all peers; per-request *slots* identified by a token, stateless
between message 2 and message 3).  :class:`SlotTable` holds every slot and is the only code
that changes a slot's state: each change is a row of ``SLOT_TRANSITIONS``::

    message 1 --> AWAIT_CREDENTIAL_1 --credential--> CLOSED (message 2 sent)
                                     --refused-----> CLOSED (NACK)
                                     --committing--> CLOSED (dropped: the handle is being
                                                     committed, consumed or as successor)
    message 3 --> AWAIT_CREDENTIAL_3 --verified----> AWAIT_COMMIT (CommitNeeded)
                                     --refused-----> CLOSED (NACK: None, mismatch, bad MAC)
                                     --replayed----> CLOSED (dropped: the handle completed or
                                                     is committing meanwhile)
    paper message 3 --> AWAIT_COMMIT --commit------> CLOSED (ResumptionComplete)
                                     --refused-----> CLOSED (NACK: the commit failed)
    any open slot --expire (lookup or commit timeout)--> CLOSED (dropped; the peer retransmits)

The responder's other tables are caches of public or recomputable values (the response
cache, the per-tick X25519 keys and runs, the optional credential cache) and, in paper mode
only, the half-open exchanges the 2007 proposal needs; none of them decides a transition.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Generic, TypeVar

from resume.errors import LocalProtocolError


class InitiatorState(enum.Enum):
    # Members are singletons compared by identity: hash them by identity too (in C), not
    # by name (Enum.__hash__ is Python code, run for every table lookup on the hot path).
    __hash__ = object.__hash__

    IDLE = "idle"
    WAIT_RESPONSE = "wait_response"
    SAVE_SUCCESSOR = "save_successor"
    DONE = "done"
    FALLBACK = "fallback"


class InitiatorInput(enum.Enum):
    __hash__ = object.__hash__

    INITIATE = "initiate"  # local
    VALID_RESPONSE = "valid_response"
    SUCCESSOR_SAVED = "successor_saved"  # local: the successor is durable next to g
    SAVE_FAILED = "save_failed"  # local: it could not be stored; nothing was sent
    NACK_RETRY_PREVIOUS = "nack_retry_previous"
    NACK = "nack"
    RETRANSMIT = "retransmit"
    TIMEOUT = "timeout"
    DUPLICATE_RESPONSE = "duplicate_response"


INITIATOR_TRANSITIONS: dict[InitiatorState, dict[InitiatorInput, InitiatorState]] = {
    InitiatorState.IDLE: {InitiatorInput.INITIATE: InitiatorState.WAIT_RESPONSE},
    InitiatorState.WAIT_RESPONSE: {
        InitiatorInput.VALID_RESPONSE: InitiatorState.SAVE_SUCCESSOR,
        InitiatorInput.NACK_RETRY_PREVIOUS: InitiatorState.WAIT_RESPONSE,
        InitiatorInput.NACK: InitiatorState.FALLBACK,
        InitiatorInput.RETRANSMIT: InitiatorState.WAIT_RESPONSE,
        InitiatorInput.TIMEOUT: InitiatorState.FALLBACK,
    },
    InitiatorState.SAVE_SUCCESSOR: {
        InitiatorInput.SUCCESSOR_SAVED: InitiatorState.DONE,
        InitiatorInput.SAVE_FAILED: InitiatorState.FALLBACK,
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

    CREDENTIAL = "credential"  # local: provide_credential answered message 1 (message 2 sent)
    VERIFIED = "verified"  # message 3 checked against the credential
    REFUSED = "refused"  # None, mismatch, bad MAC or a failed commit: NACK
    REPLAYED = "replayed"  # message 3 of a handle completed or committing meanwhile: dropped
    #: message 1 whose handle a commit in flight consumes or creates: dropped, not NACKed
    #: (the initiator retransmits; the answer then follows the commit's outcome)
    COMMITTING = "committing"
    COMMIT = "commit"  # local: commit_result(ok=True)
    EXPIRE = "expire"  # the application did not answer in time


SLOT_TRANSITIONS: dict[SlotState, dict[SlotInput, SlotState]] = {
    SlotState.AWAIT_CREDENTIAL_1: {
        SlotInput.CREDENTIAL: SlotState.CLOSED,
        SlotInput.REFUSED: SlotState.CLOSED,
        SlotInput.COMMITTING: SlotState.CLOSED,
        SlotInput.EXPIRE: SlotState.CLOSED,
    },
    SlotState.AWAIT_CREDENTIAL_3: {
        SlotInput.VERIFIED: SlotState.AWAIT_COMMIT,
        SlotInput.REFUSED: SlotState.CLOSED,
        SlotInput.REPLAYED: SlotState.CLOSED,
        SlotInput.EXPIRE: SlotState.CLOSED,
    },
    SlotState.AWAIT_COMMIT: {
        SlotInput.COMMIT: SlotState.CLOSED,
        SlotInput.REFUSED: SlotState.CLOSED,
        SlotInput.EXPIRE: SlotState.CLOSED,
    },
    SlotState.CLOSED: {},
}

#: Slot states that ``provide_credential`` may answer / ``commit_result`` may answer; any other
#: state is API misuse.  Network inputs in a wrong state are dropped and counted instead.
ACCEPTS_CREDENTIAL = frozenset({SlotState.AWAIT_CREDENTIAL_1, SlotState.AWAIT_CREDENTIAL_3})
ACCEPTS_COMMIT = frozenset({SlotState.AWAIT_COMMIT})
#: States a slot may be opened in (paper mode's message 3 is checked before its slot opens).
OPENING_STATES = frozenset(
    {SlotState.AWAIT_CREDENTIAL_1, SlotState.AWAIT_CREDENTIAL_3, SlotState.AWAIT_COMMIT}
)


class Slot:
    """What the table needs of a slot; the responder's slots add the request's data.

    ``next_handle`` is the successor's handle once message 3 verified (AWAIT_COMMIT): the
    table then knows both handles the commit in flight is about.
    """

    __slots__ = ("deadline", "handle", "next_handle", "state")

    def __init__(self, state: SlotState, handle: bytes, deadline: float) -> None:
        self.state = state
        self.handle = handle
        self.deadline = deadline
        self.next_handle: bytes | None = None


S = TypeVar("S", bound=Slot)


class SlotTable(Generic[S]):
    """Every open slot of a responder, by token, and the one place slot states change.

    Besides the slots it keeps what the transitions imply about handles: which are
    committing (a slot in AWAIT_COMMIT holds them) and which completed recently (a bounded
    memory), so that a replayed message 3 is dropped before any lookup.  ``last`` is the
    most recent transition ``(state, input, next state)``, for tests and debugging.
    """

    __slots__ = (
        "_committing",
        "_committing_next",
        "_completed",
        "_completed_size",
        "_next_token",
        "_slots",
        "last",
    )

    def __init__(self, completed_size: int) -> None:
        #: token -> slot, in deadline order (a slot whose deadline moves goes to the end)
        self._slots: OrderedDict[int, S] = OrderedDict()
        self._next_token = 1
        self._committing: set[bytes] = set()
        #: successor handles of the commits in flight
        self._committing_next: set[bytes] = set()
        self._completed: OrderedDict[bytes, None] = OrderedDict()
        self._completed_size = completed_size
        self.last: tuple[SlotState, SlotInput, SlotState] | None = None

    def __len__(self) -> int:
        return len(self._slots)

    def open(self, slot: S) -> int:
        """Register a new slot (in one of ``OPENING_STATES``); its token."""
        if slot.state not in OPENING_STATES:
            raise LocalProtocolError(f"a slot cannot open in state {slot.state.value}")
        token = self._next_token
        self._next_token += 1
        self._slots[token] = slot
        if slot.state is SlotState.AWAIT_COMMIT:
            self._start_commit(slot)
        return token

    def _start_commit(self, slot: Slot) -> None:
        self._committing.add(slot.handle)
        if slot.next_handle is not None:
            self._committing_next.add(slot.next_handle)

    def _end_commit(self, slot: Slot) -> None:
        self._committing.discard(slot.handle)
        if slot.next_handle is not None:
            self._committing_next.discard(slot.next_handle)

    def get(self, token: int, accepted: frozenset[SlotState], what: str) -> S | None:
        """The slot ``token`` names if it is in an ``accepted`` state; None when it was
        closed already (a late answer after expiry: not a misuse).  Anything else is a
        LocalProtocolError and leaves the slot untouched."""
        slot = self._slots.get(token)
        if slot is None:
            if 0 < token < self._next_token:
                return None
            raise LocalProtocolError(f"{what}: token {token} was never issued")
        if slot.state not in accepted:
            raise LocalProtocolError(f"{what}: token {token} is in state {slot.state.value}")
        return slot

    def advance(self, token: int, event: SlotInput, deadline: float | None = None) -> SlotState:
        """Apply ``event`` to the slot ``token`` names, as ``SLOT_TRANSITIONS`` says.

        A CLOSED slot leaves the table; a slot that stays open gets ``deadline`` (required)
        and moves to the end of the deadline order.  A row not in the table is a
        LocalProtocolError (the responder checks network input before it gets here).
        """
        slot = self._slots[token]
        old = slot.state
        nxt = SLOT_TRANSITIONS[old].get(event)
        if nxt is None:
            raise LocalProtocolError(f"slot in state {old.value} cannot take {event.value}")
        if old is SlotState.AWAIT_COMMIT:
            self._end_commit(slot)
            if event is SlotInput.COMMIT:
                self._completed[slot.handle] = None
                if len(self._completed) > self._completed_size:
                    self._completed.popitem(last=False)
        slot.state = nxt
        if nxt is SlotState.CLOSED:
            del self._slots[token]
        else:
            if deadline is None:
                raise LocalProtocolError("an open slot needs a deadline")
            slot.deadline = deadline
            self._slots.move_to_end(token)
            if nxt is SlotState.AWAIT_COMMIT:
                self._start_commit(slot)
        self.last = (old, event, nxt)
        return nxt

    def expire(self, now: float) -> list[SlotState]:
        """Close every slot whose deadline has passed; the states they were in."""
        states = []
        slots = self._slots
        while slots:
            token, slot = next(iter(slots.items()))
            if slot.deadline > now:
                break
            states.append(slot.state)
            self.advance(token, SlotInput.EXPIRE)
        return states

    def first_deadline(self) -> float | None:
        for slot in self._slots.values():
            return slot.deadline
        return None

    def busy(self, handle: bytes) -> bool:
        """``handle`` completed recently or is committing: its message 3 is a replay."""
        return handle in self._completed or handle in self._committing

    def committing(self, handle: bytes) -> bool:
        return handle in self._committing

    def being_committed(self, handle: bytes) -> bool:
        """A commit in flight consumes ``handle`` or creates it (its successor): a message 1
        for it must wait for that commit's outcome, not be answered from the store now."""
        return handle in self._committing or handle in self._committing_next


#: Inputs that come from the application, not the network: one not allowed in the current
#: state is API misuse (LocalProtocolError), never a datagram to drop.
INITIATOR_LOCAL_INPUTS = frozenset(
    {InitiatorInput.INITIATE, InitiatorInput.SUCCESSOR_SAVED, InitiatorInput.SAVE_FAILED}
)


def initiator_next(state: InitiatorState, event: InitiatorInput) -> InitiatorState | None:
    """The next state, or None when ``event`` is not allowed in ``state`` (network input:
    drop it).  A local input that is not allowed raises LocalProtocolError."""
    nxt = INITIATOR_TRANSITIONS[state].get(event)
    if nxt is None and event in INITIATOR_LOCAL_INPUTS:
        raise LocalProtocolError(f"cannot {event.value} in state {state.value}")
    return nxt
