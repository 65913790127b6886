"""What every benchmark prints about the machine it ran on (imported from bench/ scripts)."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo, else whatever the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def pin_cpu(cpu: int) -> None:
    """Run this process on CPU ``cpu`` only (silently not, where that CPU does not exist)."""
    with contextlib.suppress(OSError, AttributeError):
        if (os.cpu_count() or 1) > cpu:
            os.sched_setaffinity(0, {cpu})


def write_json(path: str | None, data: object) -> None:
    """``--json PATH``: the report, indented, its directory created (nothing when None)."""
    if path:
        import json

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=1))
