"""Subcommands of the ``resume`` package: demo, serve, resume (filled in by their issues)."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add this package's subcommands to the ``ikeresume`` parser."""
    _ = sub
