"""Every committed fuzz input is replayed through its target on every test run.

An input that once made a reader escape its documented error (or was chosen as a seed)
stays here forever: the fix cannot regress silently.  A target without a corpus fails, so
a new reader cannot be added without at least its seeds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fuzz import harness

CASES = [(name, path) for name in harness.target_names() for path in harness.corpus_files(name)]


@pytest.mark.parametrize("name", harness.target_names())
def test_every_target_has_a_corpus(name: str) -> None:
    assert harness.corpus_files(name), f"tests/fuzz/corpus/{name}/ is empty"


@pytest.mark.parametrize(("name", "path"), CASES, ids=[f"{n}/{p.name}" for n, p in CASES])
def test_corpus_input_ends_in_documented_outcome(name: str, path: Path) -> None:
    harness.one_input(name)(path.read_bytes())  # anything escaping is the failure
