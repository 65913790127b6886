"""Bounded memo tables for pure functions on the per-resumption path: one eviction rule.

Why these exist: a few pure computations run for every lookup or message (the SA
parameters' digest and canonical text, the store's AAD binding) over a small set of
distinct inputs -- a deployment has a handful of parameter sets and AAD heads, and as many
bindings as active peers.  Why one rule, *clear when full*: in normal operation a table
never fills, so a full table means churn and starting over is as good as anything; and a
hit then costs one dict lookup, where an LRU would pay its bookkeeping on every hit of the
hot path.  Only values that are not secret are memoized.
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
T = TypeVar("T")
V = TypeVar("V")


class Memo(Generic[K, V]):
    """Results by (hashable) argument value, at most ``size`` of them."""

    __slots__ = ("_d", "size")

    def __init__(self, size: int) -> None:
        self._d: dict[K, V] = {}
        self.size = size

    def get(self, key: K) -> V | None:
        return self._d.get(key)

    def put(self, key: K, value: V) -> V:
        if len(self._d) >= self.size:
            self._d.clear()
        self._d[key] = value
        return value

    def __len__(self) -> int:
        return len(self._d)


class IdentityMemo(Generic[T, V]):
    """Results by argument *identity*, for arguments whose hash costs more than the result
    (nested frozen dataclasses).  An entry keeps its argument alive, so its ``id`` cannot be
    reused by another object while the entry exists."""

    __slots__ = ("_d", "size")

    def __init__(self, size: int) -> None:
        self._d: dict[int, tuple[T, V]] = {}
        self.size = size

    def get(self, obj: T) -> V | None:
        hit = self._d.get(id(obj))
        return hit[1] if hit is not None and hit[0] is obj else None

    def put(self, obj: T, value: V) -> V:
        if len(self._d) >= self.size:
            self._d.clear()
        self._d[id(obj)] = (obj, value)
        return value

    def __len__(self) -> int:
        return len(self._d)
