"""``ikeresume agent resume PEER``: the request, answered by the agent or, cold, in-process.

What ``ikeresume-resume`` (the native client) execs when no agent answers on the socket:
the same peer from the same config, resumed by this process (the blocking client, the
successor durable before message 3, then the install), printed and exited with exactly what
the agent would have answered.  With an agent running it forwards the request instead, so
a Python caller gets the warm path too.
"""

from __future__ import annotations

import socket
from typing import Any

from ikeshim.agent.config import AgentConfig, PeerConfig
from ikeshim.agent.wire import Request, format_request
from resume.exitcodes import EXIT_CONFIG, EXIT_FALLBACK, EXIT_OK


def ask_agent(path: str, req: Request, timeout: float) -> bytes | None:
    """The agent's reply line, or None when no agent listens on ``path`` (cold start)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except OSError:
            return None
        s.sendall(format_request(req))
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
        return buf
    finally:
        s.close()


def resume_in_process(config: AgentConfig, peer: PeerConfig) -> tuple[int, dict[str, Any]]:
    """What the agent's ``resume`` does, in this process: (exit code, reply body)."""
    # lazy: the agent's warm path never imports these here
    from resume.initiator import InitiatorConfig
    from resume.net.client import ClientOptions, resume_with_store_blocking
    from store.errors import MasterKeyError, StoreConfigError, StoreError
    from store.keys import Keyring
    from store.repository import Store

    body: dict[str, Any] = {"peer": peer.name, "why": "cold_start"}
    if not config.db:
        return EXIT_CONFIG, {**body, "outcome": "config", "detail": "[store] url is empty"}
    try:
        store = Store.open(config.db, Keyring.load(config.key_file), config.policy)
    except (StoreConfigError, MasterKeyError) as e:
        return EXIT_CONFIG, {**body, "outcome": "config", "detail": str(e)}
    except StoreError as e:
        return EXIT_FALLBACK, {**body, "outcome": "store_error", "detail": str(e)}
    cfg = InitiatorConfig(
        initial_rto=peer.rto, max_retransmits=peer.retransmits, timeout=peer.timeout,
        mlkem=peer.mlkem,
    )
    opts = ClientOptions(config=cfg, id_i=peer.id_i, natt=peer.natt, native=config.core)
    with store:
        r = resume_with_store_blocking(store, peer.id_r, peer.server, opts)
    from ikeshim.agent.service import _summary  # the same fields as the agent's reply

    body.update(outcome=r.outcome, **_summary(r))
    if r.detail:
        body["detail"] = r.detail
    if r.resumed and r.sa is not None and peer.install:
        import trio

        from resume.net.hooks import InstallError, make_installer

        try:
            trio.run(make_installer("xfrm", "", max(peer.timeout, 5.0)).install, r.sa)
        except InstallError as e:
            body.update(outcome="install_failed", detail=str(e))
    return (EXIT_OK if body["outcome"] == "resumed" else EXIT_FALLBACK), body
