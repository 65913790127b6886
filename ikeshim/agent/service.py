"""The resident agent: the store open, the core loaded, one UNIX socket, charon followed.

One trio run.  A request (:mod:`ikeshim.agent.wire`) runs the exchange for a configured
peer with :func:`ikeshim.initiator.resume_and_install` (the successor durable before
message 3, then the SA install; native core by default) and answers with the exit code the
client passes on.  Resumptions of one peer are serialised (a request arriving while the
agent resumes that peer on its own waits, then finds the SAs installed -- and resumes
again: a request always means "resume now").

Automatic resumption: a thread follows charon's ``ike-updown`` events
(:func:`ikeshim.agent.watch.follow_vici`); when the IKE_SA of a ``keep_up`` peer goes down
the agent waits until charon has removed that IKE_SA's SAs and policies, resumes, and on a
refusal (or timeout) asks charon for a full IKE over VICI (``initiate`` of the peer's
children, what ``swanctl --initiate`` does).  charon must not restart the connection itself
(``close_action = none``, ``dpd_action = clear``): the agent owns the restart.

Bad requests are answered with exit 2, counted in :attr:`Agent.stats` and change nothing; a
connection that sends more than a request's worth of bytes without a newline, or nothing
for :data:`READ_DEADLINE` seconds, is closed.  Every outcome is one JSON line on stdout.
"""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import json
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
import vici

from ikeshim.agent.config import AgentConfig, PeerConfig
from ikeshim.agent.watch import OURS, VICI_DOWN, IkeDown, charon_sas_left, follow_vici
from ikeshim.agent.wire import (
    MAX_REQUEST,
    AgentRequestError,
    Request,
    format_reply,
    parse_request_untrusted,
)
from ikeshim.errors import XfrmDecodeError, XfrmError
from ikeshim.harvest import vici_socket
from ikeshim.initiator import StoreWriter, resume_and_install
from ikeshim.xfrm import XFRMNLGRP_EXPIRE, XfrmSocket
from ikeshim.xfrm.monitor import SAExpireEvent, XfrmEventSocket
from resume.exitcodes import EXIT_CONFIG, EXIT_FALLBACK, EXIT_OK, EXIT_USAGE
from resume.initiator import InitiatorConfig
from resume.net.client import ClientOptions, ResumeResult, resume_with_store
from store.repository import Store

#: seconds a client may take to send its request line (bounds a stuck client, not a fast one)
READ_DEADLINE = 10.0
#: seconds to wait for charon to remove a downed IKE_SA's SAs and policies
TEARDOWN_DEADLINE = 10.0


class AgentSocketError(Exception):
    """The agent's socket cannot be set up (another agent runs, or the path is unusable)."""


def _emit(record: dict[str, Any]) -> None:
    print(json.dumps({"time": round(time.time(), 3), **record}), flush=True)


def _summary(r: ResumeResult) -> dict[str, Any]:
    """SPIs and algorithms only, never keys (the same fields ``ikeresume resume`` prints)."""
    out: dict[str, Any] = {"elapsed_ms": round(r.elapsed * 1e3, 3), "retransmits": r.retransmits}
    if r.sa is not None:
        out["spi_in"] = f"{r.sa.inbound.spi:#010x}"
        out["spi_out"] = f"{r.sa.outbound.spi:#010x}"
        out["generation"] = (r.used_generation or 0) + 1
        out["mode"] = r.sa.params.mode.value
    if r.ke:
        out["ke"] = r.ke
    if r.successor is not None:
        out["lineage"] = r.successor.lineage.value
    return out


def bind_socket(path: str, mode: int, group: str) -> socket.socket:
    """The listening UNIX socket at ``path`` (its directory created 0755), ``mode``, ``group``.

    A socket file nobody answers on is a previous agent's and is replaced; one that answers
    means another agent runs: AgentSocketError.
    """
    p = Path(path)
    p.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    if p.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except OSError:
            p.unlink()
        else:
            raise AgentSocketError(f"{path}: another agent is listening")
        finally:
            probe.close()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)  # no window in which the socket is open to others
        try:
            s.bind(path)
        finally:
            os.umask(old)
        if group:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
            os.chown(path, -1, gid)
        os.chmod(path, mode)
        s.listen(64)
    except (OSError, KeyError) as e:
        s.close()
        raise AgentSocketError(f"{path}: {e}") from None
    return s


class Agent:
    """One agent: ``await agent.run(sock)`` serves until :meth:`shutdown`."""

    def __init__(
        self,
        config: AgentConfig,
        store: Store,
        *,
        emit: Callable[[dict[str, Any]], None] = _emit,
    ) -> None:
        self.config = config
        self.store = store
        self.emit = emit
        self.stats: Counter[str] = Counter()
        self._locks = {name: trio.Lock() for name in config.peers}
        self._xfrm: XfrmSocket | None = None
        self._writer: StoreWriter | None = None
        self._stopping = False
        self._cancel = trio.CancelScope()

    @property
    def xfrm(self) -> XfrmSocket:
        """The XFRM socket :meth:`run` opened (when a peer installs or charon is followed)."""
        if self._xfrm is None:
            raise RuntimeError("the agent is not running, or no peer needs XFRM")
        return self._xfrm

    def shutdown(self) -> None:
        self._stopping = True
        self._cancel.cancel()

    async def run(self, listener: socket.socket) -> None:
        if self.config.core is not False:
            import resume.native  # noqa: F401  # load the extension now, not in the first request

        needs_xfrm = any(p.install for p in self.config.peers.values()) or bool(self.config.vici)
        with contextlib.ExitStack() as stack:
            if needs_xfrm:
                self._xfrm = stack.enter_context(XfrmSocket())
            self._writer = stack.enter_context(StoreWriter())
            tsock = trio.socket.from_stdlib_socket(listener)
            with self._cancel:
                async with trio.open_nursery() as nursery:
                    if self.config.vici:
                        nursery.start_soon(self._follow_charon)
                    if self._expiring_peers():
                        nursery.start_soon(self._follow_expiry)
                    listeners = [trio.SocketListener(tsock)]
                    nursery.start_soon(trio.serve_listeners, self._serve, listeners)
                    self.emit({"event": "ready", "socket": self.config.socket,
                               "peers": sorted(self.config.peers)})  # fmt: skip

    # -- requests -------------------------------------------------------------------------------
    async def _serve(self, stream: trio.SocketStream) -> None:
        async with stream:
            line = b""
            with trio.move_on_after(READ_DEADLINE):
                while not line.endswith(b"\n") and len(line) <= MAX_REQUEST:
                    chunk = await stream.receive_some(MAX_REQUEST + 1 - len(line))
                    if not chunk:
                        break
                    line += chunk
            try:
                req = parse_request_untrusted(line)
            except AgentRequestError as e:
                self.stats["bad_request"] += 1
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    reply = {"outcome": "bad_request", "detail": str(e)}
                    await stream.send_all(format_reply(EXIT_USAGE, reply))
                return
            code, body = await self.handle(req)
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(format_reply(code, body))

    async def handle(self, req: Request) -> tuple[int, dict[str, Any]]:
        """A parsed request -> (exit code, reply body)."""
        self.stats[f"request_{req.verb}"] += 1
        if req.verb == "ping":
            return EXIT_OK, {"outcome": "pong", "stats": dict(self.stats)}
        peer = self.config.peers.get(req.peer)
        if peer is None:
            return EXIT_CONFIG, {"outcome": "unknown_peer", "detail": f"no [peers.{req.peer}]"}
        return await self.resume(peer, "request")

    # -- the resumption ---------------------------------------------------------------------------
    async def resume(self, peer: PeerConfig, why: str) -> tuple[int, dict[str, Any]]:
        """Resume ``peer`` now (serialised per peer): exit code and the outcome's summary."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        async with self._locks[peer.name]:
            cfg = InitiatorConfig(
                initial_rto=peer.rto, max_retransmits=peer.retransmits, timeout=peer.timeout,
                mlkem=peer.mlkem,
            )
            if peer.install:
                r = await resume_and_install(
                    self.store, peer.id_r, peer.server, self.xfrm, id_i=peer.id_i, config=cfg,
                    natt=peer.natt, writer=self._writer, native=self.config.core,
                )  # fmt: skip
                outcome, detail, ex = r.outcome, r.detail, r.exchange
                timings = r.timings
            else:
                opts = ClientOptions(config=cfg, id_i=peer.id_i, natt=peer.natt,
                                     native=self.config.core)  # fmt: skip
                ex = await resume_with_store(self.store, peer.id_r, peer.server, opts)
                outcome, detail = ex.outcome, ex.detail
        body: dict[str, Any] = {"outcome": outcome, "peer": peer.name, "why": why}
        if detail:
            body["detail"] = detail
        if ex is not None:
            body.update(_summary(ex))
        # where the agent's time went (lookup, exchange, write-ahead, install), no secrets
        body["timings_ms"] = {k: round(v * 1e3, 3) for k, v in timings.items()}
        body["agent_ms"] = round((time.perf_counter() - t0) * 1e3, 3)
        self.stats[outcome] += 1
        code = EXIT_OK if outcome == "resumed" else EXIT_FALLBACK
        self.emit({"event": "resume", "exit": code, **body})
        return code, body

    # -- following charon -------------------------------------------------------------------------
    async def _follow_charon(self) -> None:
        send, receive = trio.open_memory_channel[IkeDown](256)
        token = trio.lowlevel.current_trio_token()

        def call(fn: Callable[..., object], *args: object) -> None:
            with contextlib.suppress(trio.RunFinishedError):  # stopping: nothing to tell
                trio.from_thread.run_sync(fn, *args, trio_token=token)

        def push(down: IkeDown) -> None:
            try:
                send.send_nowait(down)
            except trio.WouldBlock:  # 256 downs not yet handled: a storm, not lost state
                self.stats["ike_down_dropped"] += 1

        def on_down(down: IkeDown) -> None:
            call(push, down)

        def on_connected() -> None:
            call(self.emit, {"event": "vici_connected"})

        def on_error(msg: str) -> None:
            call(self.emit, {"event": "vici_error", "detail": msg})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._on_downs, receive)
            await trio.to_thread.run_sync(
                follow_vici, self.config.vici, on_down, on_connected, lambda: self._stopping,
                on_error, abandon_on_cancel=True,
            )  # fmt: skip

    async def _on_downs(self, receive: trio.MemoryReceiveChannel[IkeDown]) -> None:
        async with trio.open_nursery() as nursery:
            async for down in receive:
                for peer in self.config.peers.values():
                    if peer.keep_up and peer.ike == down.ike:
                        self.stats["ike_down"] += 1
                        nursery.start_soon(self._restore, peer, down, "ike_down")

    async def _restore(self, peer: PeerConfig, down: IkeDown | None, why: str) -> None:
        """``peer``'s SAs went or are going away: (once charon's teardown of ``down`` is
        complete) resume; on a refusal, a full IKE."""
        xfrm = self.xfrm
        self.emit({"event": why, "peer": peer.name} | ({"ike": down.ike} if down else {}))
        deadline = trio.current_time() + TEARDOWN_DEADLINE
        while down and down.local and charon_sas_left(xfrm, down.local, down.remote):
            if trio.current_time() > deadline:
                self.emit({"event": "teardown_slow", "peer": peer.name})
                break
            await trio.sleep(0.005)
        code, _ = await self.resume(peer, why)
        if code == EXIT_OK or not peer.fallback or not self.config.vici:
            return
        self.stats["full_ike"] += 1
        outcome, detail = await trio.to_thread.run_sync(self._initiate_full, peer)
        self.emit({"event": "full_ike", "peer": peer.name, "outcome": outcome, "detail": detail})

    # -- resumed SAs reaching their lifetime --------------------------------------------------
    def _expiring_peers(self) -> dict[str, PeerConfig]:
        """keep_up peers whose resumed SAs this agent installs, by the gateway's address."""
        return {
            ipaddress.ip_address(p.server[0]).compressed: p
            for p in self.config.peers.values()
            if p.keep_up and p.install
        }

    async def _follow_expiry(self) -> None:
        """A resumed SA of a keep_up peer reached its soft limit (the cache policy's budget,
        ``Lifetimes``; or its hard one, when the soft one was missed): resume before the
        traffic stops.  One resumption per SA pair (their shared reqid); the new pair
        replaces the old one's policies and removes its SAs."""
        peers = self._expiring_peers()
        handled: set[int] = set()
        with XfrmEventSocket((XFRMNLGRP_EXPIRE,)) as events:
            async with trio.open_nursery() as nursery:
                while True:
                    try:
                        batch = await events.next_events()
                    except (XfrmError, XfrmDecodeError) as e:  # counted; the next ones still come
                        self.stats["xfrm_event_error"] += 1
                        self.emit({"event": "xfrm_event_error", "detail": str(e)[:300]})
                        continue
                    for ev in batch:
                        if not isinstance(ev, SAExpireEvent) or not ev.state.reqid & OURS:
                            continue
                        peer = peers.get(ipaddress.ip_address(ev.state.dst).compressed)
                        if peer is None or ev.state.reqid in handled:
                            continue
                        handled.add(ev.state.reqid)
                        self.stats["sa_expiring"] += 1
                        nursery.start_soon(self._restore, peer, None, "sa_expiring")

    def _initiate_full(self, peer: PeerConfig) -> tuple[str, str]:
        """``swanctl --initiate`` for each of the peer's children, over VICI (blocking)."""
        try:
            session = vici.Session(vici_socket(self.config.vici))
            try:
                for child in peer.children or ("",):
                    req: dict[str, Any] = {"ike": peer.ike, "timeout": 30000}
                    if child:
                        req["child"] = child
                    for _log in session.initiate(req):
                        pass
            finally:
                session.transport.close()
        except VICI_DOWN as e:
            return "failed", str(e)[:300]
        return "established", ""


def serve_forever(config: AgentConfig, store: Store) -> int:
    """``ikeresume agent run``: bind, serve until SIGTERM/SIGINT, remove the socket."""
    import signal

    from ikeshim.agent.service import bind_socket as _bind

    try:
        listener = _bind(config.socket, config.socket_mode, config.socket_group)
    except AgentSocketError as e:
        print(f"ikeresume agent: {e}", file=sys.stderr)
        return 1
    agent = Agent(config, store)

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
            async with trio.open_nursery() as nursery:

                async def on_signal() -> None:
                    async for _ in sigs:
                        agent.shutdown()
                        return

                nursery.start_soon(on_signal)
                await agent.run(listener)
                nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(config.socket)
    agent.emit({"event": "stopped", "stats": dict(agent.stats)})
    return 0
