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

# Re-exported: callers and tests read the exit codes next to ``main``.
from resume.exitcodes import EXIT_CONFIG as EXIT_CONFIG
from resume.exitcodes import EXIT_ERROR as EXIT_ERROR
from resume.exitcodes import EXIT_FALLBACK as EXIT_FALLBACK
from resume.exitcodes import EXIT_OK as EXIT_OK
from resume.exitcodes import EXIT_USAGE as EXIT_USAGE

# Modules that contribute subcommands, in help order.
COMMAND_MODULES = ("resume.commands", "store.cli", "ikeshim.cli", "analysis.cli")

#: Which module registers each subcommand.  ``main`` imports only the owner of the
#: subcommand it runs (``ikeresume resume`` is on the path of shell scripts that fall back
#: to a full IKE: every millisecond of start-up counts); ``--help``, no command or an
#: unknown one import them all.  tests/test_startup.py checks this table against what
#: the modules really register.
COMMAND_OWNERS = {
    "demo": "resume.commands",
    "serve": "resume.commands",
    "resume": "resume.commands",
    "cache": "store.cli",
    "harvest": "ikeshim.cli",
    "agent": "ikeshim.cli",
    "xfrm": "ikeshim.cli",
    "analyze": "analysis.cli",
    "synth": "analysis.cli",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``command`` (a known subcommand) only its owner's."""
    parser = argparse.ArgumentParser(
        prog="ikeresume",
        description="Resume IPsec sessions from cached credentials without a full IKE.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    owner = COMMAND_OWNERS.get(command or "")
    for name in (owner,) if owner else COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    # The only top-level option is -h: a first word not starting with "-" is the command.
    first = argv[0] if argv and not argv[0].startswith("-") else None
    parser = build_parser(first)
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
