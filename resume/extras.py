"""Optional dependencies ("extras") and the one error that names the extra to install.

Why extras: the responder, the clients and the cache tools need neither numpy nor
matplotlib (the log analyzer's numbers and plots) nor psycopg (a PostgreSQL store), so
``pip install ikeresume`` leaves them out; ``ikeresume[analysis]`` and
``ikeresume[postgres]`` bring them.  Code that needs one calls :func:`require` first, so a
missing extra is one clear message instead of an ImportError from deep inside.
"""

from __future__ import annotations

import importlib

#: extra -> the modules it provides (pyproject.toml's optional-dependencies)
EXTRAS: dict[str, tuple[str, ...]] = {
    "analysis": ("numpy", "matplotlib"),
    "postgres": ("psycopg",),
}


class MissingExtraError(ImportError):
    """A feature needs an optional dependency that is not installed."""

    def __init__(self, extra: str, module: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs {module}, which is not installed: "
            f"pip install 'ikeresume[{extra}]'",
            name=module,
        )
        self.extra = extra


def require(extra: str, purpose: str) -> None:
    """Import the modules of ``extra``, or raise :class:`MissingExtraError` naming it.

    ``purpose`` says what needs them ("ikeresume analyze", "a PostgreSQL store").  An
    installed module whose own dependency is missing is not a missing extra: that
    ImportError propagates as it is.
    """
    for module in EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name is not None and e.name.split(".")[0] != module:
                raise
            raise MissingExtraError(extra, module, purpose) from None
