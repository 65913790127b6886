"""Fuzz target: the ``csv`` log parser on any bytes (see fuzz_log_any.run_format).

The documented outcome: sessions and ``file:line`` problem lines, every line accounted
(used, skipped by reason, a problem, or not this format's), in time linear in the input.
Seeds: hand-written lines in the format's shapes and the bad inputs of issues 17 and 21.
"""

from __future__ import annotations

from tests.fuzz.fuzz_log_any import run_format


def one_input(data: bytes) -> None:
    run_format("csv", data)
