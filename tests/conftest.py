"""Shared test plumbing.

Tests that need a real component (PostgreSQL, User-Mode Linux, strongSwan, root) call
:func:`require`.  On a developer machine a missing component skips the test; under CI
(``CI`` set, as `.ci/run` runs) it fails, so CI can never go green by skipping them.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def require(ok: bool, what: str) -> None:
    """Skip (developer machine) or fail (CI) when a real component is missing."""
    if ok:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI requires {what}; .ci/run should have installed it", pytrace=False)
    pytest.skip(f"needs {what}")
