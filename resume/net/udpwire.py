"""UDP framing constants and socket set-up shared by the trio endpoint and the clients.

Why a module of its own: :mod:`resume.net.udp` is the trio endpoint, and ``ikeresume
resume`` (a blocking, one-shot client) must not pay trio's import cost just to learn the
NAT-T marker or to exempt its socket from IPsec policies.
"""

from __future__ import annotations

import socket

Addr = tuple[str, int]
NON_ESP_MARKER = b"\x00\x00\x00\x00"
NATT_KEEPALIVE = b"\xff"
MAX_DATAGRAM = 65535


def try_bypass_ipsec(sock: socket.socket) -> str | None:
    """Exempt ``sock`` from IPsec policies, as charon does for its IKE sockets.

    The SAs a resumption installs come with host-to-host policies that would otherwise
    capture the next resumption attempt (and its NACK) once those SAs expire.  Needs
    CAP_NET_ADMIN; returns why it could not be done (None on success) instead of raising,
    because without kernel policies there is nothing to bypass.
    """
    try:
        from ikeshim.xfrm import bypass_socket
    except ImportError as e:  # pragma: no cover - ikeshim is part of the distribution
        return f"ikeshim unavailable: {e}"
    try:
        bypass_socket(sock)
    except Exception as e:  # ikeshim.errors.XfrmError (EPERM without CAP_NET_ADMIN, ...)
        return str(e)
    return None
