"""Cache lifetime policies: plain data, shared by the store, the responder and the analyzer.

The 2007 study defines three lifetimes for a cached credential, all measured from the last
full IKE exchange (the start of a *resumption chain*):

* clocked     -- wall-clock seconds since that full IKE;
* established -- seconds the peer was actually connected since that full IKE;
* data        -- bytes carried (both directions) since that full IKE.

Operators also need limits that bound exposure whatever the lifetime chosen: a hard cap on
the age of a chain, an idle expiry (time since the credential was last used or the session
last ended), a maximum number of resumptions per chain, and a capacity with LRU eviction
(a property of the cache, not of a record).  Every configured limit must hold for a
resumption to be allowed ("all must hold").

Why one module: a policy chosen by replaying logs in ``analysis`` must mean exactly what the
store enforces, so both evaluate :meth:`Policy.check` on the same :class:`Counters`.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from resume.sa import Lifetimes


class Refusal(enum.Enum):
    """Why a policy refuses a resumption (kept for metrics and the analyzer, never sent)."""

    CLOCKED = "clocked"
    ESTABLISHED = "established"
    DATA = "data"
    CHAIN_AGE = "chain_age"
    IDLE = "idle"
    RESUMPTIONS = "resumptions"


@dataclass(frozen=True)
class Counters:
    """Per-record accounting since the last full IKE; the state a policy judges.

    ``full_ike_at`` and ``last_used_at`` are POSIX seconds.  ``established_s`` and
    ``bytes_total`` accumulate over every session of the chain (the full IKE's and each
    resumed one's), as reported by disconnect/accounting events.
    """

    full_ike_at: float
    last_used_at: float
    established_s: float = 0.0
    bytes_total: int = 0
    resumptions: int = 0

    @classmethod
    def fresh(cls, now: float) -> Counters:
        """Counters right after a full IKE exchange."""
        return cls(full_ike_at=now, last_used_at=now)

    def after_session(self, duration_s: float, nbytes: int, ended_at: float) -> Counters:
        """Account one finished (or interim-reported) session segment."""
        if duration_s < 0 or nbytes < 0:
            raise ValueError("session duration and bytes must be non-negative")
        return replace(
            self,
            established_s=self.established_s + duration_s,
            bytes_total=self.bytes_total + nbytes,
            last_used_at=max(self.last_used_at, ended_at),
        )

    def after_resumption(self, now: float) -> Counters:
        return replace(self, resumptions=self.resumptions + 1, last_used_at=now)


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)\s*$", re.IGNORECASE)


def parse_duration(value: str | int | float) -> float:
    """Parse ``90``, ``"90s"``, ``"15m"``, ``"2h"``, ``"7d"``, ``"1w"`` into seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"not a duration: {value!r}")
        return float(value)
    m = _DURATION_RE.match(value)
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. 90s, 15m, 2h, 7d)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]


def parse_size(value: str | int) -> int:
    """Parse ``1048576``, ``"20MB"``, ``"1.5GiB"`` into bytes (MB = 10^6, MiB = 2^20)."""
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"not a size: {value!r}")
        return value
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(f"not a size: {value!r} (use e.g. 20MB, 1GiB)")
    unit = m.group(2).lower().rstrip("b")
    base = 1024 if unit.endswith("i") else 1000
    power = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}[unit.rstrip("i")]
    return int(float(m.group(1)) * base**power)


def format_duration(seconds: float) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def format_size(nbytes: int) -> str:
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if nbytes >= size and nbytes % size == 0:
            return f"{nbytes // size}{unit}"
    return str(nbytes)


@dataclass(frozen=True)
class Policy:
    """A cache policy; ``None`` disables a limit.  All configured limits must hold.

    ``capacity`` is the maximum number of cached records; the least recently used record is
    evicted when it is exceeded.  It does not take part in :meth:`check` (which judges one
    record) but in the store's and the replay engine's insertion.
    """

    clocked: float | None = None
    established: float | None = None
    data: int | None = None
    max_chain_age: float | None = 7 * 86400.0
    idle: float | None = None
    max_resumptions: int | None = None
    capacity: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None and (v < 0 or (isinstance(v, float) and not math.isfinite(v))):
                raise ValueError(f"policy limit {f.name} must be a non-negative number")

    def check(self, c: Counters, now: float) -> Refusal | None:
        """Return why a resumption at ``now`` is refused, or None if every limit holds.

        Limits are strict upper bounds on the state *before* this resumption: a credential
        whose clocked lifetime is 2h may be used at 1h59m59s, not at 2h.
        """
        age = now - c.full_ike_at
        if self.max_chain_age is not None and age >= self.max_chain_age:
            return Refusal.CHAIN_AGE
        if self.clocked is not None and age >= self.clocked:
            return Refusal.CLOCKED
        if self.established is not None and c.established_s >= self.established:
            return Refusal.ESTABLISHED
        if self.data is not None and c.bytes_total >= self.data:
            return Refusal.DATA
        if self.idle is not None and now - c.last_used_at >= self.idle:
            return Refusal.IDLE
        if self.max_resumptions is not None and c.resumptions >= self.max_resumptions:
            return Refusal.RESUMPTIONS
        return None

    def allows(self, c: Counters, now: float) -> bool:
        return self.check(c, now) is None

    def expires_at(self, c: Counters) -> float | None:
        """Wall-clock time after which the record can never be used again (for purging).

        Established and data limits only grow with use, so they do not bound wall time.
        """
        ends = [
            c.full_ike_at + lim for lim in (self.max_chain_age, self.clocked) if lim is not None
        ]
        if self.idle is not None:
            ends.append(c.last_used_at + self.idle)
        return min(ends) if ends else None

    def sa_lifetimes(self, c: Counters, now: float, soft_fraction: float = 0.9) -> Lifetimes:
        """Kernel lifetimes for SAs installed by a resumption at ``now``.

        The hard limits are what remains of the chain's budget, so a resumed session can
        not outlive the policy that allowed it; soft limits trigger rekey/resume earlier.
        """
        secs: list[float] = []
        for lim in (self.max_chain_age, self.clocked):
            if lim is not None:
                secs.append(c.full_ike_at + lim - now)
        if self.established is not None:
            secs.append(self.established - c.established_s)
        hard_s = None if not secs else max(1, int(min(secs)))
        hard_b = None if self.data is None else max(1, self.data - c.bytes_total)
        return Lifetimes(
            soft_seconds=None if hard_s is None else max(1, int(hard_s * soft_fraction)),
            hard_seconds=hard_s,
            soft_bytes=None if hard_b is None else max(1, int(hard_b * soft_fraction)),
            hard_bytes=hard_b,
        )

    def with_lifetime(self, kind: str, value: float) -> Policy:
        """The same policy with one of clocked/established/data set (used by sweeps)."""
        if kind == "data":
            return replace(self, data=int(value))
        if kind == "clocked":
            return replace(self, clocked=float(value))
        if kind == "established":
            return replace(self, established=float(value))
        raise ValueError(f"unknown lifetime kind {kind!r}")

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> Policy:
        """Build from a config table (TOML ``[policy]``); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown policy keys: {', '.join(sorted(unknown))}")
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if v is None or v == "none" or v is False:
                kw[k] = None
            elif k in ("clocked", "established", "max_chain_age", "idle"):
                kw[k] = parse_duration(v)
            elif k == "data":
                kw[k] = parse_size(v)
            else:
                if not isinstance(v, int) or isinstance(v, bool):
                    raise ValueError(f"policy {k} must be an integer")
                kw[k] = v
        return cls(**kw)

    def to_mapping(self) -> dict[str, Any]:
        """Config-table form, human units, ``"none"`` for disabled limits."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                out[f.name] = "none"
            elif f.name in ("clocked", "established", "max_chain_age", "idle"):
                out[f.name] = format_duration(v)
            elif f.name == "data":
                out[f.name] = format_size(v)
            else:
                out[f.name] = v
        return out

    def to_toml(self) -> str:
        """A ``[policy]`` table to paste into the server's config file."""
        lines = ["[policy]"]
        for k, v in self.to_mapping().items():
            lines.append(f"{k} = {v}" if isinstance(v, int) else f'{k} = "{v}"')
        return "\n".join(lines) + "\n"
