"""``ikeresume cache ...``: operate the credential cache (list, show, revoke, purge, stats,
rotate-key, export, import, bootstrap, keygen), every report also as ``--json``.

Where things come from (first found wins): ``--db`` / ``$IKERESUME_DB`` / ``[store] url``
of ``--config``; ``--key-file`` / ``$IKERESUME_MASTER_KEY_FILE`` / ``$IKERESUME_MASTER_KEY``
/ ``[store] key_file``; the policy from the ``[policy]`` table of ``--config`` (the same
table the analyzer prints and the server reads).  Commands that never touch a secret
(list, show, revoke, purge, stats) work without the master key.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from store.engine import ENV_DB


def _handler(name: str) -> Callable[[argparse.Namespace], int]:
    """The handler ``name`` of :mod:`store.cache_commands`, imported when it runs."""

    def run(args: argparse.Namespace) -> int:
        # Lazy on purpose: ``ikeresume --help`` and the other subcommands must not import
        # the store, SQLAlchemy or cryptography (tests/test_startup.py).
        from store import cache_commands

        handler: Callable[[argparse.Namespace], int] = getattr(cache_commands, name)
        return handler(args)

    return run


def register(sub: Any) -> None:
    """Add ``cache`` and its subcommands to the ``ikeresume`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", help=f"database URL or SQLite path (default ${ENV_DB})")
    common.add_argument("--key-file", help="master key file (first line = current key)")
    common.add_argument("--config", help="TOML file with [store] and [policy] tables")
    common.add_argument("--json", action="store_true", help="machine-readable output")
    common.add_argument("--now", type=float, help=argparse.SUPPRESS)  # tests: fixed clock

    p = sub.add_parser("cache", help="inspect and maintain the credential cache")
    cs = p.add_subparsers(dest="cache_command", metavar="ACTION", required=True)

    a = cs.add_parser("list", parents=[common], help="list cached records (no secrets)")
    a.add_argument("--role", choices=("initiator", "responder"))
    a.add_argument("--limit", type=int)
    a.set_defaults(func=_handler("_cmd_list"))

    a = cs.add_parser("show", parents=[common], help="show one record by uid or handle (hex)")
    a.add_argument("ref")
    a.add_argument("--verify", action="store_true", help="check the secret unwraps (needs key)")
    a.set_defaults(func=_handler("_cmd_show"))

    a = cs.add_parser("revoke", parents=[common], help="delete a record by uid or handle (hex)")
    a.add_argument("ref")
    a.set_defaults(func=_handler("_cmd_revoke"))

    a = cs.add_parser("purge", parents=[common], help="delete records the policy never allows")
    a.add_argument("--dry-run", action="store_true")
    a.set_defaults(func=_handler("_cmd_purge"))

    a = cs.add_parser("stats", parents=[common], help="entries, bytes per record, oldest")
    a.set_defaults(func=_handler("_cmd_stats"))

    a = cs.add_parser(
        "rotate-key", parents=[common], help="rewrap every secret under the current key"
    )
    a.add_argument("--batch", type=int, default=500)
    a.set_defaults(func=_handler("_cmd_rotate"))

    a = cs.add_parser("export", parents=[common], help="export records as JSON lines")
    a.add_argument("-o", "--output", help="file (default stdout)")
    a.add_argument("--rewrap-key-file", help="re-encrypt secrets under this key file's key")
    a.set_defaults(func=_handler("_cmd_export"))

    a = cs.add_parser("import", parents=[common], help="import a JSON-lines export")
    a.add_argument("input", help="file ('-' for stdin)")
    a.add_argument("--source-key-file", help="key file the export was wrapped with (rewrap)")
    a.add_argument("--replace", action="store_true", help="replace records with same uid")
    a.set_defaults(func=_handler("_cmd_import"))

    a = cs.add_parser(
        "bootstrap",
        parents=[common],
        help="write generation 0 from a JSON SA description (any IKE daemon)",
        description="Read the negotiated CHILD_SA as a JSON SA description "
        "(specs/sa-description.md) from FILE or stdin and write generation 0 of this "
        "peer's credential, derived exactly as harvest derives it.  Both peers run it with "
        "the same description and their own --role.  Keys are read from the file only, "
        "never from the command line.  A bad description is refused naming the field; "
        "nothing is written then.",
    )
    a.add_argument("--role", required=True, choices=("initiator", "responder"))
    a.add_argument("input", nargs="?", default="-", help="file (default '-': stdin)")
    a.set_defaults(func=_handler("_cmd_bootstrap"))

    a = cs.add_parser("keygen", help="print (or write, mode 0600) a new master key line")
    a.add_argument("--id", dest="key_id", help="key id (default: derived from the key)")
    a.add_argument("-o", "--output", help="write to this file (refuses to overwrite)")
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_handler("_cmd_keygen"))
