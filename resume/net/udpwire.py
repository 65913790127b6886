"""UDP constants and socket set-up shared by the trio endpoint and the clients.

Why a module of its own: :mod:`resume.net.udp` is the trio endpoint, and ``ikeresume
resume`` (a blocking, one-shot client) must not pay trio's import cost just to set up its
socket (the NAT-T framing itself is the wire codec's: :mod:`resume.wire`).
"""

from __future__ import annotations

import socket

from ikeshim.xfrm.bypass import bypass_socket

#: A NAT keepalive on UDP 4500 (RFC 3948 section 2.3): one 0xFF byte.
NATT_KEEPALIVE = b"\xff"
#: Receive buffer: the largest UDP payload, so that an oversized datagram is read whole and
#: then refused by the wire codec (``resume.wire.MAX_MESSAGE_LEN``) instead of truncated.
MAX_DATAGRAM = 65535


def try_bypass_ipsec(sock: socket.socket) -> str | None:
    """Exempt ``sock`` from IPsec policies, as charon does for its IKE sockets.

    The SAs a resumption installs come with host-to-host policies that would otherwise
    capture the next resumption attempt (and its NACK) once those SAs expire.  Needs
    CAP_NET_ADMIN; returns why it could not be done (None on success) instead of raising,
    because without kernel policies there is nothing to bypass.
    """
    try:
        bypass_socket(sock)
    except Exception as e:  # ikeshim.errors.XfrmError (EPERM without CAP_NET_ADMIN, ...)
        return str(e)
    return None
