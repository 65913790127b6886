"""The collector's thresholds while services run: set by the first, restored by the last."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
import trio

from resume.net.gctune import SERVE_GC_THRESHOLD, serving_gc

from .conftest import Env


@pytest.fixture
def default_threshold() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        yield gc.get_threshold()
    finally:
        gc.set_threshold(*before)


def test_nested_services_restore_the_original_thresholds(
    default_threshold: tuple[int, int, int],
) -> None:
    with serving_gc():
        assert gc.get_threshold() == SERVE_GC_THRESHOLD
        with serving_gc((5000, 5, 5)):  # a second service keeps the first one's settings
            assert gc.get_threshold() == SERVE_GC_THRESHOLD
        assert gc.get_threshold() == SERVE_GC_THRESHOLD  # the first still runs
    assert gc.get_threshold() == default_threshold
    with pytest.raises(RuntimeError), serving_gc():
        raise RuntimeError("a service that dies still restores them")
    assert gc.get_threshold() == default_threshold
    with serving_gc(None):  # opted out
        assert gc.get_threshold() == default_threshold


async def test_service_sets_thresholds_while_it_runs(
    env: Env, default_threshold: tuple[int, int, int]
) -> None:
    async with trio.open_nursery() as nursery:
        svc = await env.start(nursery)
        assert gc.get_threshold() == SERVE_GC_THRESHOLD
        svc.shutdown()
    assert gc.get_threshold() == default_threshold
