"""Errors raised by the kernel and daemon bridges.

One base class per bridge so that callers (the server after a resumption, the harvester) can
catch "the kernel said no" without catching programming errors, and one *decode* error for
anything we read from the kernel that does not parse: a malformed netlink reply must never
surface as a ``struct.error`` or ``IndexError`` from deep inside a parser.
"""

from __future__ import annotations

import errno as _errno
import os


class XfrmError(Exception):
    """The kernel refused an XFRM request (NLMSG_ERROR) or a reply could not be used.

    ``errno`` is the positive errno the kernel returned (0 when the error is ours);
    ``op`` names the request (``"add SA"``...); ``kernel_message`` is the extended-ack text
    when the kernel provided one.
    """

    def __init__(
        self, op: str, errno: int, detail: str = "", kernel_message: str | None = None
    ) -> None:
        self.op = op
        self.errno = errno
        self.kernel_message = kernel_message
        reason = detail or (os.strerror(errno) if errno else "failed")
        msg = f"XFRM {op} failed: {reason}"
        if errno:
            msg += f" (errno {errno} {_errno.errorcode.get(errno, '?')})"
        if kernel_message:
            msg += f"; kernel says: {kernel_message}"
        super().__init__(msg)


class XfrmPermissionError(XfrmError):
    """EPERM/EACCES: XFRM changes need CAP_NET_ADMIN in the socket's network namespace."""


class XfrmNotFoundError(XfrmError):
    """ENOENT/ESRCH: no such SA or policy."""


class XfrmExistsError(XfrmError):
    """EEXIST: an SA or policy with the same identity is already installed."""


class XfrmDecodeError(XfrmError):
    """A netlink reply from the kernel was malformed (the ONE error our decoders raise)."""

    def __init__(self, detail: str) -> None:
        super().__init__("decode reply", 0, detail)


def xfrm_error(op: str, err: int, kernel_message: str | None = None) -> XfrmError:
    """Map a kernel errno (positive) to the most specific error class, with a clear message."""
    if err in (_errno.EPERM, _errno.EACCES):
        return XfrmPermissionError(
            op,
            err,
            "operation not permitted: XFRM changes need CAP_NET_ADMIN / root "
            "in this network namespace",
            kernel_message,
        )
    if err in (_errno.ENOENT, _errno.ESRCH):
        return XfrmNotFoundError(op, err, "no such SA or policy", kernel_message)
    if err == _errno.EEXIST:
        return XfrmExistsError(op, err, "already exists", kernel_message)
    if err == _errno.ENOSYS or err == _errno.EPROTONOSUPPORT:
        return XfrmError(
            op,
            err,
            "the kernel lacks this protocol (ESP module not loaded or not built?)",
            kernel_message,
        )
    return XfrmError(op, err, "", kernel_message)


class HarvestError(Exception):
    """A daemon-negotiated CHILD_SA could not be turned into a cache record."""
