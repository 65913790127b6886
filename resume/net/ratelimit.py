"""Early drop: per-source token buckets and a global new-exchange budget.

Why here and not in the core: the cheapest work is the work never done.  The service
classifies each datagram from its fixed header (a struct unpack, no cryptography, no
database) and consults these buckets before handing it to the protocol core, so a flood
from a few sources is cut at the first bucket, and a flood of valid-looking message 1s from
many (spoofed) sources is capped by the global new-exchange budget without touching the
exchanges already under way (message 3 is never charged to that budget).

Memory is bounded: at most ``max_sources`` buckets; when full, buckets that have refilled
(and so carry no information) are forgotten first, then the oldest half.
"""

from __future__ import annotations

import ipaddress


class TokenBucket:
    """One bucket: ``rate`` tokens per second, at most ``burst`` banked."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        tokens = self.tokens + (now - self.last) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.last = now
        if tokens < cost:
            self.tokens = tokens
            return False
        self.tokens = tokens - cost
        return True


class SourceLimiter:
    """Per-source fairness: one token bucket per IPv4 address or IPv6 prefix."""

    def __init__(
        self, rate: float, burst: float, *, max_sources: int = 65536, ipv6_prefix: int = 64
    ) -> None:
        if rate <= 0 or burst < 1 or max_sources < 1 or not 1 <= ipv6_prefix <= 128:
            raise ValueError("rate > 0, burst >= 1, max_sources >= 1, 1 <= ipv6_prefix <= 128")
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self.ipv6_prefix = ipv6_prefix
        # list [tokens, last] rather than TokenBucket objects: fewer attribute lookups per datagram
        self._buckets: dict[str, list[float]] = {}
        self._v6keys: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def key(self, host: str) -> str:
        """The fairness unit for ``host``: the address itself, or its IPv6 prefix."""
        if ":" not in host:
            return host
        k = self._v6keys.get(host)
        if k is None:
            try:
                net = ipaddress.IPv6Network((host.split("%", 1)[0], self.ipv6_prefix), strict=False)
                k = str(net)
            except ValueError:
                k = host
            if len(self._v6keys) >= self.max_sources:
                self._v6keys.clear()
            self._v6keys[host] = k
        return k

    def allow(self, host: str, now: float) -> bool:
        key = host if ":" not in host else self.key(host)
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_sources:
                self._evict(now)
            self._buckets[key] = [self.burst - 1.0, now]
            return True
        tokens = b[0] + (now - b[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        b[1] = now
        if tokens < 1.0:
            b[0] = tokens
            return False
        b[0] = tokens - 1.0
        return True

    def _evict(self, now: float) -> None:
        full_after = self.burst / self.rate
        idle = [k for k, b in self._buckets.items() if now - b[1] >= full_after]
        for k in idle:
            del self._buckets[k]
        if len(self._buckets) >= self.max_sources:
            for k in list(self._buckets)[: max(1, len(self._buckets) // 2)]:
                del self._buckets[k]
