"""One convention for every fuzz target, so CI and the test suite treat them alike.

A target is a module ``tests/fuzz/fuzz_<name>.py`` that defines::

    def one_input(data: bytes) -> None:
        '''Feed ``data`` to one reader of untrusted input.'''

``one_input`` swallows exactly the reader's documented error type (``DecodeError`` for the
wire, a problem line for a log parser, ...) and lets anything else escape: an escaping
exception, a hang or a crash is a finding.  Its regression corpus lives in
``tests/fuzz/corpus/<name>/`` (one input per file; name files after what they hold, or by
``python -m tests.fuzz.run --add``).  ``tests/fuzz/test_corpus.py`` replays every corpus file
in the ordinary test suite; ``python -m tests.fuzz.run`` drives atheris (coverage-guided)
over the targets for a bounded time, seeded with the corpus, as ``.ci/run`` does.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
PREFIX = "fuzz_"

OneInput = Callable[[bytes], None]


def target_names() -> list[str]:
    """Every target's name (``fuzz_<name>.py`` in this package), sorted."""
    return sorted(
        m.name[len(PREFIX) :]
        for m in pkgutil.iter_modules([str(HERE)])
        if m.name.startswith(PREFIX)
    )


def load(name: str) -> ModuleType:
    """Import the module of target ``name``."""
    return importlib.import_module(f"{__package__}.{PREFIX}{name}")


def one_input(name: str) -> OneInput:
    fn: OneInput = load(name).one_input
    return fn


def corpus_dir(name: str) -> Path:
    return CORPUS / name


def corpus_files(name: str) -> list[Path]:
    """The regression inputs of target ``name``, sorted by file name."""
    d = corpus_dir(name)
    return sorted(p for p in d.iterdir() if p.is_file()) if d.is_dir() else []
