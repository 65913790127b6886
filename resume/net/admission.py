"""Admission: what may reach the protocol core, decided from the fixed header alone.

Why a module of its own: this runs for every datagram of a flood, before any cryptography
or database work, and it is where the overload policy lives.  Cheapest checks first: the
RFC 7296 header's fields (:func:`resume.wire.peek_header_untrusted`, no payload parsed),
then the per-source bucket, the global new-exchange budget and the pending-work bound.
Message 3 is never charged to the new-exchange budget and gets twice the pending room of
message 1, so a flood of valid-looking message 1s cannot starve exchanges already under way.

A message 1 whose handle the store reported unknown moments ago is *not* dropped here:
spec 6.2 step 6 answers an unknown handle with a NACK, and a silent drop made the
initiator wait out its whole timeout before falling back to a full IKE.  The store link
answers such a message 1 from its memory of misses (no database read) and the core sends
the 36-byte NACK -- smaller than any message 1, so no amplification -- while the
per-source bucket here bounds a flood of them.  The core re-validates everything it
reads; this only decides whether it is worth reading.
"""

from __future__ import annotations

from resume.errors import DecodeError
from resume.net.config import LimitsSection
from resume.net.ratelimit import SourceLimiter, TokenBucket
from resume.wire import EXCHANGE_IKE_RESUME, FLAG_INITIATOR, FLAG_RESPONSE, peek_header_untrusted

_FLAGS_MASK = FLAG_RESPONSE | FLAG_INITIATOR


class Admission:
    """Drop reasons for datagrams the core should not see (``None``: admit)."""

    def __init__(self, limits: LimitsSection) -> None:
        self.sources = SourceLimiter(
            limits.per_source_rate,
            limits.per_source_burst,
            max_sources=limits.max_sources,
            ipv6_prefix=limits.ipv6_prefix,
        )
        rate = limits.new_exchange_rate
        self.new_exchanges = TokenBucket(rate, max(1.0, rate / 10), 0.0) if rate > 0 else None
        self.max_pending = limits.max_pending
        self.max_pending_new = limits.max_pending // 2
        #: set when the service drains: new exchanges are refused, message 3s still served
        self.draining = False

    def admit(self, data: bytes, host: str, now: float, pending: int) -> str | None:
        """``pending``: the core's outstanding requests, counting those admitted this batch."""
        try:
            h = peek_header_untrusted(data)
        except DecodeError:
            return "malformed"
        # fields: spi_i, spi_r, next payload, version, exchange type, flags, message id, length
        if h[3] >> 4 != 2 or h[4] != EXCHANGE_IKE_RESUME:
            return "not_resumption"
        if h[5] & _FLAGS_MASK != FLAG_INITIATOR:
            return "response_at_responder"
        if h[6] > 1:  # message id 0 or 1
            return "bad_message_id"
        if not self.sources.allow(host, now):
            return "rate_limited_source"
        if h[6] == 0:
            if self.draining:
                return "draining"
            if self.new_exchanges is not None and not self.new_exchanges.take(now):
                return "rate_limited_new"
            if pending >= self.max_pending_new:
                return "overload_new"
        elif pending >= self.max_pending:
            return "overload"
        return None
