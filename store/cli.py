"""Subcommands of the ``store`` package (filled in by its issue)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add this package's subcommands to the ``ikeresume`` parser."""
    _ = (sub, argparse)
