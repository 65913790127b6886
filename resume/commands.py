"""Subcommands of the ``resume`` package: ``demo``, ``serve`` and ``resume``.

``demo`` is the README's main job: by default the loopback deployment (the responder
service on UDP, a SQLite cache, a few hundred clients; :mod:`resume.net.demo`); with
``--in-process`` the protocol core alone, with simulated loss and the paper-mode contrast
(:mod:`resume.demo`).  Both import lazily so that ``ikeresume --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import Any

from resume.exitcodes import EXIT_ERROR, EXIT_OK, EXIT_USAGE

#: (loopback, in-process) defaults for the options both demos share
DEMO_DEFAULTS = {"clients": (300, 20), "rounds": (2, 15)}


def register(sub: Any) -> None:
    """Add this package's subcommands to the ``ikeresume`` parser."""
    # lazy: --help and the other subcommands stay light (tests/test_startup.py)
    from resume.net import cli as net_cli

    p = sub.add_parser(
        "demo",
        help="resume a few hundred clients against a loopback responder (SQLite)",
        description="Start a resumption responder on 127.0.0.1 with a SQLite cache, seed "
        "credentials as full IKEs would, resume every client --rounds times over UDP, and "
        "print outcomes, key fingerprints, latency and throughput; halfway through the last "
        "round the responder is stopped and replaced, and every client must come back.  "
        "Exit 0 only if every "
        "client resumed with the same keys on both sides and both caches ended at the same "
        "generation.  --in-process runs the protocol core alone instead (no socket, no "
        "database): lost messages 3, NACK fallback and the 2007 proposal's key reuse.",
    )
    p.add_argument("--in-process", action="store_true", help="the core alone, no socket or DB")
    p.add_argument("--clients", type=int, help="clients (default 300; in-process 20)")
    p.add_argument("--rounds", type=int, help="resumptions per client (default 2; in-process 15)")
    p.add_argument("--no-x25519", action="store_true", help="resume without X25519")
    p.add_argument(
        "--mlkem",
        choices=("off", "offer", "require"),
        default="offer",
        help="ML-KEM-768 in the clients' exchanges (default offer: post-quantum)",
    )
    p.add_argument("--workdir", help="keep the SQLite files here (default: a temp dir, removed)")
    p.add_argument(
        "--no-restart",
        action="store_true",
        help="keep one responder (default: it is restarted halfway through the last round)",
    )
    p.add_argument("--loss", type=float, help="in-process: fraction of messages 3 dropped (0.05)")
    p.add_argument("--seed", type=int, help="in-process: deterministic run (NOT for real keys)")
    p.add_argument("--json", action="store_true", help="machine-readable report")
    p.set_defaults(func=cmd_demo)
    net_cli.register(sub)


def _usage(msg: str) -> int:
    print(f"ikeresume demo: {msg}", file=sys.stderr)
    return EXIT_USAGE


def cmd_demo(args: argparse.Namespace) -> int:
    mode = 1 if args.in_process else 0
    clients = args.clients if args.clients is not None else DEMO_DEFAULTS["clients"][mode]
    rounds = args.rounds if args.rounds is not None else DEMO_DEFAULTS["rounds"][mode]
    if clients < 1 or rounds < 1:
        return _usage("--clients and --rounds must be >= 1")
    if args.in_process:
        if args.workdir is not None or args.no_restart:
            return _usage("--workdir and --no-restart need the loopback demo (drop --in-process)")
        loss = 0.05 if args.loss is None else args.loss
        if not 0.0 <= loss < 1.0:
            return _usage("--loss must be in [0, 1)")
        # lazy: --help and the other subcommands stay light (tests/test_startup.py)
        from resume import demo

        rep = demo.run_demo(clients, rounds, loss, not args.no_x25519, args.seed, args.mlkem)
        if args.json:
            print(json.dumps(rep, indent=2, sort_keys=True))
        else:
            demo.print_report(rep)
        return EXIT_OK if rep["ok"] else EXIT_ERROR
    if args.loss is not None or args.seed is not None:
        return _usage("--loss and --seed apply to --in-process only")
    # lazy: the loopback demo imports trio and the store, which --help must not
    from resume.net import demo as net_demo

    with tempfile.TemporaryDirectory(prefix="ikeresume-demo-") as tmp:
        s = net_demo.run_loopback_demo(
            clients,
            rounds,
            workdir=args.workdir or tmp,
            use_x25519=not args.no_x25519,
            restart=not args.no_restart,
            mlkem=args.mlkem,
        )
    if args.workdir is None:
        s.workdir = ""  # removed with the temp dir
    if args.json:
        print(json.dumps(s.to_json(), indent=2))
    else:
        net_demo.print_summary(s)
    return EXIT_OK if s.ok else EXIT_ERROR
