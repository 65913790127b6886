"""Prometheus text-format metrics without a client library.

Why our own: the responder updates counters on the per-datagram hot path, so an increment
must be a dict lookup and an integer add (no locks: one trio thread owns the registry), and
the exposition format (text 0.0.4) is small enough not to justify a dependency.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence

_LABEL_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    pairs = zip(names, values, strict=True)
    parts = [f'{n}="{str(v).translate(_LABEL_ESCAPES)}"' for n, v in pairs]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer():
        return str(int(v))
    return repr(float(v))


class Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)

    def samples(self) -> Iterable[str]:  # pragma: no cover - abstract
        return ()

    def render(self) -> str:
        head = f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.kind}\n"
        return head + "".join(s + "\n" for s in self.samples())


class Counter(Metric):
    """A monotonically increasing count, optionally split by label values."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self.values: dict[tuple[str, ...], float] = {}
        if not self.labelnames:
            self.values[()] = 0

    def inc(self, *labels: str, amount: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + amount

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0)

    def samples(self) -> Iterable[str]:
        for lv, v in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.labelnames, lv)} {_num(v)}"


class Gauge(Counter):
    """A value that goes up and down (queue depth, pending lookups, readiness)."""

    kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = value


class Histogram(Metric):
    """Cumulative buckets, ``_sum`` and ``_count`` (latencies in seconds)."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float]) -> None:
        super().__init__(name, help_text)
        self.bounds = sorted(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # last = +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def samples(self) -> Iterable[str]:
        acc = 0
        for bound, c in zip([*self.bounds, math.inf], self.counts, strict=True):
            acc += c
            yield f'{self.name}_bucket{{le="{_num(bound)}"}} {acc}'
        yield f"{self.name}_sum {_num(self.sum)}"
        yield f"{self.name}_count {self.count}"

    def quantile(self, q: float) -> float:
        """Upper bucket bound containing quantile ``q`` (coarse; benchmarks use raw samples)."""
        if self.count == 0:
            return math.nan
        target = q * self.count
        acc = 0
        for bound, c in zip([*self.bounds, math.inf], self.counts, strict=True):
            acc += c
            if acc >= target:
                return bound
        return math.inf


LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip


class ServerMetrics:
    """Every metric the responder service exports; names are part of the operator interface."""

    def __init__(self) -> None:
        self.datagrams = Counter(
            "ikeresume_datagrams_received_total", "UDP datagrams received", ["listener"]
        )
        self.sent = Counter("ikeresume_datagrams_sent_total", "UDP datagrams sent")
        self.drops = Counter(
            "ikeresume_drops_total",
            "Datagrams dropped before or by the protocol core, by reason",
            ["reason"],
        )
        self.exchanges = Counter(
            "ikeresume_exchanges_total",
            "Resumption exchanges finished at the responder, by outcome",
            ["outcome"],
        )
        self.latency = Histogram(
            "ikeresume_exchange_seconds",
            "Time from message 3 received to completion acknowledged (after durable commit)",
            LATENCY_BUCKETS,
        )
        self.cache = Counter(
            "ikeresume_cache_lookups_total",
            "Credential lookups by result (hit, miss, refused, error from the database; "
            "miss_recent answered from memory)",
            ["result"],
        )
        self.commits = Counter(
            "ikeresume_commits_total", "Ratchet commits by result (ok, conflict, error)", ["result"]
        )
        self.commit_batches = Counter(
            "ikeresume_commit_batches_total", "Group-commit transactions (durable flushes)"
        )
        self.queue_depth = Gauge(
            "ikeresume_queue_depth", "Work waiting, by queue (lookup, commit, install)", ["queue"]
        )
        self.installs = Counter(
            "ikeresume_installs_total", "SA installs and hook runs by result", ["result"]
        )
        self.ready = Gauge("ikeresume_ready", "1 when serving, 0 when starting or draining")
        self.core = Gauge(
            "ikeresume_core_stat", "Counters reported by the protocol core itself", ["name"]
        )
        self.resumptions = Counter(
            "ikeresume_resumptions_total",
            "Completed resumptions by the key exchanges mixed in (none, x25519, mlkem768, "
            "x25519+mlkem768) and the lineage of the chain after the run",
            ["ke", "lineage"],
        )
        self.credentials = Gauge(
            "ikeresume_credentials",
            "Responder credentials in the store by lineage (refreshed every minute)",
            ["lineage"],
        )

    def all(self) -> list[Metric]:
        return [m for m in vars(self).values() if isinstance(m, Metric)]

    def render(self) -> str:
        return "".join(m.render() for m in self.all())
