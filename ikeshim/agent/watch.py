"""Following charon: which IKE_SAs went down (VICI ``ike-updown``), and when its SAs are gone.

:func:`ike_down_untrusted` reads one event; :func:`follow_vici` is the blocking loop the
agent runs in a thread (reconnecting after charon restarts; a restarted charon holds no
IKE_SA, so the agent resumes what it was told to keep up when it reconnects -- see
:class:`ikeshim.agent.service.Agent`).  :func:`charon_sas_left` answers "has charon finished
tearing the CHILD_SAs down", which the agent waits for before it installs: charon deletes
its policies by selector after the event, and would delete the resumed session's policies
had the resumption taken them over first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import vici

from ikeshim.harvest import VICI_STREAM_ERRORS, vici_socket
from ikeshim.xfrm import XfrmOps

#: connection trouble or a stream the vici package cannot follow: reconnect
VICI_DOWN: tuple[type[Exception], ...] = (OSError, *VICI_STREAM_ERRORS)

#: reqids with this bit are ours (ikeshim.installer.derive_reqid); charon never uses them.
OURS = 0x40000000


@dataclass(frozen=True)
class IkeDown:
    """An IKE_SA charon reported down: its connection name and its two hosts."""

    ike: str
    local: str
    remote: str


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")[:256]
    return str(v)[:256] if isinstance(v, str) else ""


def ike_down_untrusted(name: str, msg: Mapping[str, Any]) -> list[IkeDown]:
    """The IKE_SAs an ``ike-updown`` event reports down (``up`` absent); [] for any other
    event or for an up event.  Never raises: fields that are missing read as ""."""
    if name != "ike-updown" or _text(msg.get("up", b"")) == "yes":
        return []
    out = []
    for ike, d in msg.items():
        if isinstance(d, Mapping):
            out.append(IkeDown(_text(ike), _text(d.get("local-host")), _text(d.get("remote-host"))))
    return out


def charon_sas_left(x: XfrmOps, a: str, b: str) -> bool:
    """Whether charon still has SAs, or policies requiring its SAs, between hosts a and b."""
    hosts = {a, b}
    for s in x.dump_sas():
        if {s.src, s.dst} == hosts and not s.reqid & OURS:
            return True
    for p in x.dump_policies():
        sel = p.selector
        for t in p.templates:
            if not t.reqid or t.reqid & OURS:
                continue
            # tunnel mode names the endpoints in the template, transport mode in the selector
            if {t.src, t.dst} == hosts or (not t.dst and {sel.saddr, sel.daddr} == hosts):
                return True
    return False


def follow_vici(
    uri: str,
    on_down: Callable[[IkeDown], None],
    on_connected: Callable[[], None],
    stop: Callable[[], bool],
    on_error: Callable[[str], None],
    *,
    poll: float = 0.5,
    reconnect_delay: float = 1.0,
) -> None:
    """Listen for ``ike-updown`` until ``stop()``; ``on_connected`` after every (re)connection
    (registered first, so that nothing falls between it and the events)."""
    while not stop():
        try:
            session = vici.Session(vici_socket(uri))
            events = session.listen(["ike-updown"], timeout=poll)
            connected = False
            for name, msg in events:
                if not connected:
                    connected = True
                    on_connected()
                if name is not None:
                    ev = name.decode() if isinstance(name, bytes) else str(name)
                    for down in ike_down_untrusted(ev, msg):
                        on_down(down)
                if stop():
                    return
        except VICI_DOWN as exc:
            on_error(f"VICI {uri}: {exc}; retrying")
            time.sleep(reconnect_delay)
