"""Every test here needs the native extension: skipped (with the reason) on a machine where
it was not built, a failure under CI (``tests.conftest.require``)."""

from __future__ import annotations

import pytest

from resume import native
from tests.conftest import require


@pytest.fixture(autouse=True)
def _needs_native() -> None:
    require(
        native.available(),
        f"the native extension resume._native ({native.NATIVE_IMPORT_ERROR}; "
        "`pip install -e .` builds it)",
    )
