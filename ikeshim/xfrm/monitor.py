"""Multicast monitoring: SA, policy and expire events from the kernel.

Why separate from the request client: an event socket joins groups and only receives;
its decoding must survive any message the kernel (or a test) sends.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass

from ikeshim import netlink as nl
from ikeshim.errors import XfrmDecodeError, XfrmError
from ikeshim.xfrm.abi import (
    USER_EXPIRE,
    USER_POLEXPIRE,
    USERPOLICY_ID,
    USERSA_ID,
    XFRM_MSG_DELPOLICY,
    XFRM_MSG_DELSA,
    XFRM_MSG_EXPIRE,
    XFRM_MSG_NEWPOLICY,
    XFRM_MSG_NEWSA,
    XFRM_MSG_POLEXPIRE,
    XFRM_MSG_UPDPOLICY,
    XFRM_MSG_UPDSA,
    XFRMA_POLICY,
    XFRMA_SA,
    XFRMNLGRP_EXPIRE,
    XFRMNLGRP_POLICY,
    XFRMNLGRP_SA,
)
from ikeshim.xfrm.client import (
    RECV_BUFSIZE,
    open_socket,
    recv_reply,
)
from ikeshim.xfrm.codec import (
    decode_policy_untrusted,
    decode_sa_id_untrusted,
    decode_state_untrusted,
)
from ikeshim.xfrm.model import (
    SAKey,
    XfrmPolicy,
    XfrmState,
)

# --- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SAEvent:
    """An SA was added/updated (``kind`` "new"/"update") or deleted ("delete")."""

    kind: str
    state: XfrmState | None
    key: SAKey


@dataclass(frozen=True)
class SAExpireEvent:
    """The kernel reached a soft (``hard`` False) or hard lifetime limit of an SA."""

    state: XfrmState
    hard: bool


@dataclass(frozen=True)
class PolicyEvent:
    kind: str  # "new", "update", "delete", "expire"
    policy: XfrmPolicy | None
    hard: bool = False


@dataclass(frozen=True)
class OtherEvent:
    type: int


XfrmEvent = SAEvent | SAExpireEvent | PolicyEvent | OtherEvent


def decode_event_untrusted(msg: nl.NetlinkMessage) -> XfrmEvent:
    """Decode one multicast message; raises XfrmDecodeError only."""
    t = msg.type
    p = msg.payload
    if t in (XFRM_MSG_NEWSA, XFRM_MSG_UPDSA):
        st = decode_state_untrusted(p)
        return SAEvent("new" if t == XFRM_MSG_NEWSA else "update", st, st.key())
    if t == XFRM_MSG_DELSA:
        # The kernel sends xfrm_usersa_id followed by an XFRMA_SA attribute with the state.
        key = decode_sa_id_untrusted(p)
        state = None
        for atype, value in nl.iter_attrs_untrusted(p, USERSA_ID.size):
            if atype == XFRMA_SA:
                state = decode_state_untrusted(value)
        return SAEvent("delete", state, key)
    if t == XFRM_MSG_EXPIRE:
        if len(p) < USER_EXPIRE.size:
            raise XfrmDecodeError("truncated xfrm_user_expire")
        raw_state, hard = USER_EXPIRE.unpack_from(p, 0)
        return SAExpireEvent(decode_state_untrusted(raw_state + p[USER_EXPIRE.size :]), bool(hard))
    if t in (XFRM_MSG_NEWPOLICY, XFRM_MSG_UPDPOLICY):
        return PolicyEvent(
            "new" if t == XFRM_MSG_NEWPOLICY else "update", decode_policy_untrusted(p)
        )
    if t == XFRM_MSG_DELPOLICY:
        # xfrm_userpolicy_id followed by XFRMA_POLICY holding the policy.
        if len(p) < USERPOLICY_ID.size:
            raise XfrmDecodeError("truncated xfrm_userpolicy_id")
        pol: XfrmPolicy | None = None
        for atype, value in nl.iter_attrs_untrusted(p, USERPOLICY_ID.size):
            if atype == XFRMA_POLICY:
                pol = decode_policy_untrusted(value)
        return PolicyEvent("delete", pol)
    if t == XFRM_MSG_POLEXPIRE:
        if len(p) < USER_POLEXPIRE.size:
            raise XfrmDecodeError("truncated xfrm_user_polexpire")
        raw_pol, hard = USER_POLEXPIRE.unpack_from(p, 0)
        return PolicyEvent("expire", decode_policy_untrusted(raw_pol), bool(hard))
    return OtherEvent(t)


class XfrmEventSocket:
    """Subscription to XFRM multicast groups (SA, policy, expire by default).

    ``receive_untrusted`` returns the events of one datagram; with ``blocking`` False it
    returns [] when nothing is pending (for trio: await ``wait_readable`` on :meth:`fileno`,
    see :meth:`next_events`).  Undecodable messages raise :class:`XfrmDecodeError`.
    """

    DEFAULT_GROUPS = (XFRMNLGRP_SA, XFRMNLGRP_POLICY, XFRMNLGRP_EXPIRE)

    def __init__(self, groups: Iterable[int] = DEFAULT_GROUPS, *, blocking: bool = False) -> None:
        self._sock = open_socket(groups, blocking=blocking)
        self._buf = bytearray(RECV_BUFSIZE)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> XfrmEventSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def receive_untrusted(self) -> list[XfrmEvent]:
        try:
            view = recv_reply(self._sock, self._buf, "receive events")
        except BlockingIOError:
            return []
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                raise XfrmError(
                    "receive events",
                    exc.errno,
                    "event queue overflowed; events were lost, resynchronise with a dump",
                ) from exc
            raise XfrmError("receive events", exc.errno or 0, str(exc)) from exc
        return [
            decode_event_untrusted(m) for m in nl.parse_messages_untrusted(view) if m.type >= 0x10
        ]

    async def next_events(self) -> list[XfrmEvent]:
        """trio: wait until at least one event arrives and return them."""
        # lazy: the blocking socket serves ikeresume resume, which must not import trio
        # (tests/test_startup.py::test_resume_client_path_does_not_import_trio)
        import trio

        while True:
            events = self.receive_untrusted()
            if events:
                return events
            await trio.lowlevel.wait_readable(self._sock)
