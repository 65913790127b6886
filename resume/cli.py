"""The ``ikeresume`` command: one entry point, subcommands owned by each package.

Each package exposes ``register(subparsers)`` in its own ``cli`` module so that the
protocol, store, daemon-shim and analyzer commands evolve without touching one shared file.
Handlers import their heavy dependencies lazily: ``ikeresume --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that contribute subcommands, in help order.
COMMAND_MODULES = ("resume.commands", "store.cli", "ikeshim.cli", "analysis.cli")

# Exit codes shared by every subcommand (documented in the README).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_FALLBACK = 3  # resumption refused or timed out: caller must run a full IKE
EXIT_CONFIG = 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ikeresume",
        description="Resume IPsec sessions from cached credentials without a full IKE.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        rc = func(args)
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
