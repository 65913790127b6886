"""The installer entry point the resumption service and client call (``[install] mode=xfrm``).

``resume.net.hooks.XfrmInstaller`` calls the async ``install_sa_pair(sa)`` here; the work is
the one synchronous :func:`ikeshim.installer.install_sa_pair`.  Each call
is all-or-nothing (see :mod:`ikeshim.installer`), takes over the policies of the previous
session between the same selectors, and removes that session's SAs once the new ones are in.

Why the install runs in the caller's trio thread, on a socket kept open: the kernel handles
an XFRM request inside ``sendmsg`` and queues its reply before ``sendmsg`` returns, so the
blocking receive that follows never waits (the socket's timeout only guards against a broken
kernel).  A worker-thread hop and a fresh socket per install cost more than the install
itself (under User-Mode Linux about 1 ms for the hop; the install is a few netlink round
trips), and this install is on the path to the first ESP packet.  The one request that could
be long, the dump looking for a replaced session's SAs, is filtered by address in the kernel.
The socket is cached per thread and per network namespace (a socket belongs to the namespace
it was opened in; tests drive several namespaces from one process).
"""

from __future__ import annotations

import errno
import os
import threading

import trio

from ikeshim.errors import XfrmError
from ikeshim.installer import InstalledSA, InstallOptions
from ikeshim.installer import install_sa_pair as install_sync
from ikeshim.installer import remove_sa_pair as remove_sync
from ikeshim.xfrm import PolicyKey, XfrmSocket
from resume.sa import SAPair

__all__ = ["InstallOptions", "InstalledSA", "install_sa_pair", "remove_sa_pair"]

_local = threading.local()
# Errors after which the socket's state is unknown (a reply may still be queued): reopen.
_SOCKET_ERRNOS = {errno.ETIMEDOUT, errno.EMSGSIZE, errno.ENOBUFS, errno.EBADF}


def _netns_id() -> int:
    try:
        return os.stat("/proc/thread-self/ns/net").st_ino
    except OSError:
        return 0


def _socket() -> XfrmSocket:
    cache: dict[int, XfrmSocket] | None = getattr(_local, "sockets", None)
    if cache is None:
        cache = _local.sockets = {}
    ns = _netns_id()
    sock = cache.get(ns)
    if sock is None:
        sock = cache[ns] = XfrmSocket()
    return sock


def _forget(sock: XfrmSocket) -> None:
    cache: dict[int, XfrmSocket] = getattr(_local, "sockets", {})
    for ns, s in list(cache.items()):
        if s is sock:
            del cache[ns]
    sock.close()


async def install_sa_pair(
    sa: SAPair,
    options: InstallOptions | None = None,
    *,
    replace_old: InstalledSA | None = None,
) -> InstalledSA:
    """Install ``sa`` (inbound + outbound SA and policies, as ``sa.role`` sees them)."""
    await trio.lowlevel.checkpoint()  # an async function that can be cancelled before it acts
    sock = _socket()
    try:
        return install_sync(sock, sa, options or InstallOptions(), replace_old=replace_old)
    except XfrmError as exc:
        if exc.errno in _SOCKET_ERRNOS:
            _forget(sock)
        raise


async def remove_sa_pair(
    installed: InstalledSA, *, keep_policies: tuple[PolicyKey, ...] = ()
) -> None:
    """Remove what :func:`install_sa_pair` installed (objects already gone are no error)."""
    await trio.lowlevel.checkpoint()
    sock = _socket()
    try:
        remove_sync(sock, installed, keep_policies=keep_policies)
    except XfrmError as exc:
        if exc.errno in _SOCKET_ERRNOS:
            _forget(sock)
        raise
