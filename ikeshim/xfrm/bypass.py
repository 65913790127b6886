"""Per-socket IPsec bypass (``IP_XFRM_POLICY``), as charon does for its IKE sockets."""

from __future__ import annotations

import socket

from ikeshim.errors import XfrmError, xfrm_error
from ikeshim.xfrm.abi import (
    LIFETIME_CFG,
    LIFETIME_CUR,
    USERPOLICY_INFO,
    XFRM_POLICY_ALLOW,
    XFRM_POLICY_IN,
    XFRM_POLICY_OUT,
)
from ikeshim.xfrm.model import (
    Selector,
)

IP_XFRM_POLICY = 17
IPV6_XFRM_POLICY = 35


def bypass_socket(sock: socket.socket) -> None:
    """Exempt one socket's traffic from IPsec policies (as charon does for its IKE sockets).

    Why: the host-to-host policies a resumption installs match every packet between the two
    peers, resumption datagrams included.  When those SAs expire (their hard lifetime is the
    cache policy's remaining budget) the policies stay and drop the next resumption attempt,
    its NACK included.  A per-socket ALLOW policy in both directions keeps the resumption
    channel in clear, as the IKE channel is.  Needs CAP_NET_ADMIN.
    """
    if sock.family == socket.AF_INET6:
        level, opt = socket.IPPROTO_IPV6, IPV6_XFRM_POLICY
    elif sock.family == socket.AF_INET:
        level, opt = socket.IPPROTO_IP, IP_XFRM_POLICY
    else:
        raise ValueError("bypass_socket needs an IPv4 or IPv6 socket")
    for direction in (XFRM_POLICY_IN, XFRM_POLICY_OUT):
        info = USERPOLICY_INFO.pack(
            Selector(sock.family).pack(),
            b"\0" * LIFETIME_CFG.size,
            b"\0" * LIFETIME_CUR.size,
            0,
            0,
            direction,
            XFRM_POLICY_ALLOW,
            0,
            0,
        )
        try:
            sock.setsockopt(level, opt, info)
        except OSError as exc:
            raise xfrm_error_from_os("bypass socket", exc) from exc


def xfrm_error_from_os(op: str, exc: OSError) -> XfrmError:
    return xfrm_error(op, exc.errno or 0)
