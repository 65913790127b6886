"""SA and policy operations over a NETLINK_XFRM socket: blocking and trio clients.

Both share one sans-I/O request engine (:class:`ikeshim.netlink.Exchange`) and the
operations written once in :class:`XfrmOps`: :class:`XfrmSocket` (blocking, for CLIs and
threads) and :class:`AsyncXfrmSocket` (trio, non-blocking first, awaiting readability only
when the kernel has not answered yet).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ikeshim import netlink as nl
from ikeshim.errors import XfrmDecodeError, XfrmError, XfrmNotFoundError
from ikeshim.xfrm.abi import (
    IPPROTO_ESP,
    XFRM_MSG_DELPOLICY,
    XFRM_MSG_DELSA,
    XFRM_MSG_FLUSHPOLICY,
    XFRM_MSG_FLUSHSA,
    XFRM_MSG_GETPOLICY,
    XFRM_MSG_GETSA,
    XFRM_MSG_NEWPOLICY,
    XFRM_MSG_NEWSA,
    XFRM_MSG_UPDPOLICY,
    XFRM_MSG_UPDSA,
)
from ikeshim.xfrm.codec import (
    decode_policy_untrusted,
    decode_state_untrusted,
    encode_policy,
    encode_policy_id,
    encode_sa_dump_filter,
    encode_sa_id,
    encode_state,
)
from ikeshim.xfrm.model import (
    PolicyKey,
    SAKey,
    XfrmPolicy,
    XfrmState,
)

# --- sockets --------------------------------------------------------------------------------

#: Receive buffer per socket.  The kernel never sends a netlink datagram larger than 32 KiB
#: (dump batches are capped at SZ_32K; replies to single requests are far smaller), so
#: 64 KiB always suffices; a larger datagram would be reported by :func:`recv_reply`, never
#: silently cut.  Why not more: under User-Mode Linux every fresh page costs a page fault
#: round trip to the host, and the former 1 MiB buffer made opening a socket cost ~16 ms --
#: more than the whole SA installation.
RECV_BUFSIZE = 64 << 10


def recv_reply(sock: socket.socket, buf: bytearray, op: str) -> memoryview:
    """One datagram into ``buf``; a datagram longer than ``buf`` is an error, not a cut."""
    n = sock.recv_into(buf, 0, socket.MSG_TRUNC)
    if n > len(buf):
        raise XfrmError(op, errno.EMSGSIZE, f"netlink datagram of {n} bytes exceeds the buffer")
    return memoryview(buf)[:n]


def open_socket(groups: Iterable[int], blocking: bool) -> socket.socket:
    """A bound NETLINK_XFRM socket (joined to multicast ``groups``); XfrmError if refused."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nl.NETLINK_XFRM)
    except OSError as exc:
        raise XfrmError(
            "open socket", exc.errno or 0, f"cannot open a NETLINK_XFRM socket: {exc}"
        ) from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        for opt in (nl.NETLINK_CAP_ACK, nl.NETLINK_EXT_ACK):
            # Old kernels lack these: errors then come without the kernel's message.
            with contextlib.suppress(OSError):
                sock.setsockopt(nl.SOL_NETLINK, opt, 1)
        sock.bind((0, 0))
        for g in groups:
            try:
                sock.setsockopt(nl.SOL_NETLINK, nl.NETLINK_ADD_MEMBERSHIP, g)
            except OSError as exc:
                raise XfrmError(
                    "subscribe", exc.errno or 0, f"cannot join XFRM group {g}: {exc}"
                ) from exc
        sock.setblocking(blocking)
    except BaseException:
        sock.close()
        raise
    return sock


class _RequestBuilder:
    """Shared request construction (sequence numbers, flags, op names)."""

    def __init__(self) -> None:
        self._seq = itertools.count(int.from_bytes(os.urandom(2), "big") + 1)

    def build(
        self,
        op: str,
        msg_type: int,
        payload: bytes,
        *,
        dump: bool = False,
        get: bool = False,
        create_flags: int = 0,
    ) -> tuple[bytes, nl.Exchange]:
        seq = next(self._seq) & 0xFFFFFFFF
        flags = nl.NLM_F_REQUEST | create_flags
        if dump:
            flags |= nl.NLM_F_DUMP
        elif not get:
            flags |= nl.NLM_F_ACK
        data = nl.encode_message(msg_type, flags, seq, payload)
        return data, nl.Exchange(op, seq, dump=dump, expect_reply=get)


class XfrmOps:
    """The XFRM operations, written once over an abstract ``_run(request) -> replies``."""

    def _run(self, data: bytes, ex: nl.Exchange) -> list[nl.NetlinkMessage]:
        raise NotImplementedError

    _rb: _RequestBuilder

    def add_sa(self, sa: XfrmState, *, update: bool = False) -> None:
        """Add (EEXIST if present) or, with ``update``, replace an SA."""
        mtype = XFRM_MSG_UPDSA if update else XFRM_MSG_NEWSA
        op = "update SA" if update else "add SA"
        self._run(*self._rb.build(op, mtype, encode_state(sa)))

    def update_sa(self, sa: XfrmState) -> None:
        self.add_sa(sa, update=True)

    def delete_sa(self, key: SAKey) -> None:
        self._run(*self._rb.build("delete SA", XFRM_MSG_DELSA, encode_sa_id(key)))

    def get_sa(self, key: SAKey) -> XfrmState:
        msgs = self._run(*self._rb.build("get SA", XFRM_MSG_GETSA, encode_sa_id(key), get=True))
        st: XfrmState = _single(msgs, XFRM_MSG_NEWSA, decode_state_untrusted, "get SA")
        return st

    def dump_sas(self, *, between: tuple[str, str] | None = None) -> list[XfrmState]:
        """All SAs, or with ``between=(src, dst)`` only those from ``src`` to ``dst``."""
        req = b"" if between is None else encode_sa_dump_filter(*between)
        msgs = self._run(*self._rb.build("dump SAs", XFRM_MSG_GETSA, req, dump=True))
        return [decode_state_untrusted(m.payload) for m in msgs if m.type == XFRM_MSG_NEWSA]

    def flush_sas(self, proto: int = IPPROTO_ESP) -> None:
        self._run(*self._rb.build("flush SAs", XFRM_MSG_FLUSHSA, struct.pack("=B3x", proto)))

    def add_policy(self, pol: XfrmPolicy, *, update: bool = False) -> None:
        mtype = XFRM_MSG_UPDPOLICY if update else XFRM_MSG_NEWPOLICY
        op = "update policy" if update else "add policy"
        self._run(*self._rb.build(op, mtype, encode_policy(pol)))

    def update_policy(self, pol: XfrmPolicy) -> None:
        self.add_policy(pol, update=True)

    def delete_policy(self, key: PolicyKey) -> None:
        self._run(*self._rb.build("delete policy", XFRM_MSG_DELPOLICY, encode_policy_id(key)))

    def get_policy(self, key: PolicyKey) -> XfrmPolicy:
        msgs = self._run(
            *self._rb.build("get policy", XFRM_MSG_GETPOLICY, encode_policy_id(key), get=True)
        )
        pol: XfrmPolicy = _single(msgs, XFRM_MSG_NEWPOLICY, decode_policy_untrusted, "get policy")
        return pol

    def find_policy(self, key: PolicyKey) -> XfrmPolicy | None:
        try:
            return self.get_policy(key)
        except XfrmNotFoundError:
            return None

    def dump_policies(self) -> list[XfrmPolicy]:
        msgs = self._run(*self._rb.build("dump policies", XFRM_MSG_GETPOLICY, b"", dump=True))
        return [decode_policy_untrusted(m.payload) for m in msgs if m.type == XFRM_MSG_NEWPOLICY]

    def flush_policies(self) -> None:
        self._run(*self._rb.build("flush policies", XFRM_MSG_FLUSHPOLICY, b""))


def _single(
    msgs: Sequence[nl.NetlinkMessage],
    mtype: int,
    decode: Callable[[bytes], Any],
    op: str,
) -> Any:
    for m in msgs:
        if m.type == mtype:
            return decode(m.payload)
    raise XfrmDecodeError(f"{op}: no reply of the expected type")


class XfrmSocket(XfrmOps):
    """Blocking XFRM client (one request at a time).  Use as a context manager.

    ``timeout`` bounds how long one request waits for the kernel (which answers in
    microseconds unless something is badly wrong).
    """

    def __init__(self, *, timeout: float = 5.0) -> None:
        self._sock = open_socket((), blocking=True)
        self._sock.settimeout(timeout)
        self._buf = bytearray(RECV_BUFSIZE)
        self._rb = _RequestBuilder()
        self.last_exchange: nl.Exchange | None = None

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> XfrmSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def _run(self, data: bytes, ex: nl.Exchange) -> list[nl.NetlinkMessage]:
        self.last_exchange = ex  # for diagnostics: datagrams a dump took
        try:
            self._sock.sendto(data, (0, 0))
            while not ex.done:
                ex.feed_untrusted(recv_reply(self._sock, self._buf, ex.op))
        except TimeoutError as exc:
            raise XfrmError(ex.op, errno.ETIMEDOUT, "no reply from the kernel") from exc
        except OSError as exc:
            raise XfrmError(ex.op, exc.errno or 0, str(exc)) from exc
        return ex.messages


class AsyncXfrmSocket:
    """trio XFRM client: the same operations, awaited.

    Tries the non-blocking receive first and awaits readability only when the kernel has not
    answered yet (netlink answers synchronously, so most requests never park in trio).
    """

    def __init__(self) -> None:
        self._sock = open_socket((), blocking=False)
        self._buf = bytearray(RECV_BUFSIZE)
        self._rb = _RequestBuilder()
        # lazy: the blocking socket serves ikeresume resume, which must not import trio
        # (tests/test_startup.py::test_resume_client_path_does_not_import_trio)
        import trio

        self._lock = trio.Lock()

    def close(self) -> None:
        self._sock.close()

    async def __aenter__(self) -> AsyncXfrmSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    async def _run(self, data: bytes, ex: nl.Exchange) -> list[nl.NetlinkMessage]:
        # lazy: the blocking socket serves ikeresume resume, which must not import trio
        # (tests/test_startup.py::test_resume_client_path_does_not_import_trio)
        import trio

        async with self._lock:
            try:
                self._sock.sendto(data, (0, 0))
                while not ex.done:
                    try:
                        reply = recv_reply(self._sock, self._buf, ex.op)
                    except BlockingIOError:
                        await trio.lowlevel.wait_readable(self._sock)
                        continue
                    ex.feed_untrusted(reply)
            except OSError as exc:
                raise XfrmError(ex.op, exc.errno or 0, str(exc)) from exc
        return ex.messages

    async def add_sa(self, sa: XfrmState, *, update: bool = False) -> None:
        mtype = XFRM_MSG_UPDSA if update else XFRM_MSG_NEWSA
        await self._run(
            *self._rb.build("update SA" if update else "add SA", mtype, encode_state(sa))
        )

    async def delete_sa(self, key: SAKey) -> None:
        await self._run(*self._rb.build("delete SA", XFRM_MSG_DELSA, encode_sa_id(key)))

    async def get_sa(self, key: SAKey) -> XfrmState:
        msgs = await self._run(
            *self._rb.build("get SA", XFRM_MSG_GETSA, encode_sa_id(key), get=True)
        )
        st: XfrmState = _single(msgs, XFRM_MSG_NEWSA, decode_state_untrusted, "get SA")
        return st

    async def dump_sas(self, *, between: tuple[str, str] | None = None) -> list[XfrmState]:
        req = b"" if between is None else encode_sa_dump_filter(*between)
        msgs = await self._run(*self._rb.build("dump SAs", XFRM_MSG_GETSA, req, dump=True))
        return [decode_state_untrusted(m.payload) for m in msgs if m.type == XFRM_MSG_NEWSA]

    async def add_policy(self, pol: XfrmPolicy, *, update: bool = False) -> None:
        mtype = XFRM_MSG_UPDPOLICY if update else XFRM_MSG_NEWPOLICY
        await self._run(
            *self._rb.build("update policy" if update else "add policy", mtype, encode_policy(pol))
        )

    async def delete_policy(self, key: PolicyKey) -> None:
        await self._run(*self._rb.build("delete policy", XFRM_MSG_DELPOLICY, encode_policy_id(key)))

    async def dump_policies(self) -> list[XfrmPolicy]:
        msgs = await self._run(*self._rb.build("dump policies", XFRM_MSG_GETPOLICY, b"", dump=True))
        return [decode_policy_untrusted(m.payload) for m in msgs if m.type == XFRM_MSG_NEWPOLICY]
