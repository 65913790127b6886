"""Subcommands of the ``resume`` package (each module registers its own)."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add this package's subcommands to the ``ikeresume`` parser."""
    from resume import demo

    demo.register(sub)
    from resume.net import cli as net_cli; net_cli.register(sub)  # noqa: E702, I001
