"""Exceptions of the protocol core (h11 style).

Why three classes and no more: the application must tell apart *its own* mistakes
(``LocalProtocolError``: a bug to fix, e.g. answering a token twice or enabling paper mode by
accident) from *the peer's* (``RemoteProtocolError``: count and drop, never crash).  Every
function that reads network bytes ends in ``_untrusted`` and raises only ``DecodeError`` for
any input whatsoever, so callers need exactly one ``except`` on the hot path.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every error the protocol core raises on purpose."""


class LocalProtocolError(ProtocolError):
    """The application misused the API or asked for something its configuration forbids."""


class RemoteProtocolError(ProtocolError):
    """The peer (or an attacker) sent something the protocol does not allow."""


class DecodeError(RemoteProtocolError):
    """Bytes from the network are not a well-formed message (the only error of ``*_untrusted``)."""
