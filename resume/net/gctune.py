"""The cyclic garbage collector's thresholds while a service runs.

Why: every resumption allocates a few dozen short-lived container objects (events, slots,
run secrets) while the service keeps tens of thousands of long-lived ones (response cache,
reuse cache, latency bookkeeping).  With CPython's default thresholds (700, 10, 10) a
young-generation collection runs every few resumptions and drags in what the caches just
stored.  Measured under closed-loop load (the capacity phase of ``bench/bench_server.py``,
2 s windows, GC time summed from ``gc.callbacks``): young and middle generations cost
10-23 us of CPU per resumption with the defaults, 3-4 us with ``(10_000, 10, 10)``; full
collections (45-60 ms each on that heap) ran once per window with the defaults and not at
all with these, but in a long run their rate is also bounded by CPython's own rule (a full
pass only once survivors exceed a quarter of the old generation), so only the young-
generation saving is claimed.  Cycles are still collected, in bigger, rarer passes;
reference counting frees everything else at once as before.

The thresholds are process-wide, so they are set while at least one service runs and the
previous ones restored when the last one stops (services may nest, e.g. in tests).
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["SERVE_GC_THRESHOLD", "serving_gc"]

#: young-generation allocations between collections, then the older generations' ratios
SERVE_GC_THRESHOLD: tuple[int, int, int] = (10_000, 10, 10)

_lock = threading.Lock()
_active = 0
_saved: tuple[int, int, int] | None = None


@contextlib.contextmanager
def serving_gc(threshold: tuple[int, int, int] | None = SERVE_GC_THRESHOLD) -> Iterator[None]:
    """Apply ``threshold`` (``None``: leave the collector alone) until the last user exits."""
    global _active, _saved
    if threshold is None:
        yield
        return
    with _lock:
        if _active == 0:
            _saved = gc.get_threshold()
            gc.set_threshold(*threshold)
        _active += 1
    try:
        yield
    finally:
        with _lock:
            _active -= 1
            if _active == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                _saved = None
