"""Run Python without CAP_NET_ADMIN, to see the kernel's EPERM path for real (host or guest)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any


def run_without_net_admin(code: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    """``python -c code`` with CAP_NET_ADMIN dropped from the inheritable and bounding sets."""
    drop = ["--inh-caps=-net_admin", "--bounding-set=-net_admin"]
    return subprocess.run(
        ["setpriv", *drop, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **kw,
    )
