"""Subcommands of the ``ikeshim`` package: ``harvest`` and ``xfrm`` (inspection)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tomllib
from pathlib import Path
from typing import Any

ENV_DB = "IKERESUME_DB"
ENV_VICI = "IKERESUME_VICI"


def register(sub: Any) -> None:
    """Add this package's subcommands to the ``ikeresume`` parser."""
    p: argparse.ArgumentParser = sub.add_parser(
        "harvest",
        help="cache strongSwan CHILD_SAs as resumption credentials (long-running)",
        description=(
            "Follow strongSwan's VICI events and turn every established CHILD_SA into a "
            "cached credential (keys from XFRM); record disconnects.  Run it as root in the "
            "daemon's network namespace, on both peers."
        ),
    )
    p.add_argument(
        "--vici",
        default=os.environ.get(ENV_VICI, "unix:///var/run/charon.vici"),
        help=f"VICI socket URI (default ${ENV_VICI} or unix:///var/run/charon.vici)",
    )
    p.add_argument("--db", help=f"database URL or SQLite path (default ${ENV_DB})")
    p.add_argument("--key-file", help="master key file (else $IKERESUME_MASTER_KEY[_FILE])")
    p.add_argument("--config", help="TOML file with [store] and [policy] tables")
    p.add_argument("--once", action="store_true", help="harvest installed SAs and exit")
    p.add_argument(
        "--replay-window", type=int, default=128, help="replay window resumed SAs will use"
    )
    p.add_argument(
        "--paper", action="store_true", help="paper-mode credentials (INSECURE, 2007 proposal)"
    )
    p.add_argument(
        "--counter-interval",
        type=float,
        default=5.0,
        help="seconds between byte-counter readings of live SAs (for session accounting)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per outcome")
    p.set_defaults(func=_cmd_harvest)

    x: argparse.ArgumentParser = sub.add_parser(
        "xfrm", help="list kernel SAs and policies through our XFRM client (no keys shown)"
    )
    x.add_argument("--json", action="store_true")
    x.set_defaults(func=_cmd_xfrm)


def _open_store(args: argparse.Namespace) -> Any:
    # lazy: --help and the other subcommands stay light (tests/test_startup.py)
    from store.keys import Keyring
    from store.policy import Policy
    from store.repository import Store

    cfg: dict[str, Any] = {}
    if args.config:
        cfg = tomllib.loads(Path(args.config).read_text())
    st = cfg.get("store", {})
    url = args.db or os.environ.get(ENV_DB) or st.get("url")
    if not url:
        raise ValueError(f"no database: pass --db or set ${ENV_DB}")
    policy = Policy.from_mapping(cfg.get("policy", {}))
    keyring = Keyring.load(args.key_file or st.get("key_file"))
    return Store.open(url, keyring, policy)


def _cmd_harvest(args: argparse.Namespace) -> int:
    # lazy: --help and the other subcommands stay light (tests/test_startup.py)
    from ikeshim.errors import HarvestError, XfrmError
    from ikeshim.harvest import HarvestReport, run_harvest
    from resume.exitcodes import EXIT_CONFIG, EXIT_ERROR, EXIT_OK

    try:
        store = _open_store(args)
    except Exception as exc:  # any config/DB/key problem: say so, stop
        print(f"ikeresume harvest: cannot open the store: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    stopping = False

    def stop_handler(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop_handler)
    signal.signal(signal.SIGINT, stop_handler)

    def emit(o: HarvestReport) -> None:
        if args.json:
            print(json.dumps(o.to_json()), flush=True)
        else:
            who = f"{o.ike}/{o.child}" if o.child else o.ike
            extra = f" handle={o.handle[:16]}" if o.handle else ""
            print(f"{o.kind:9} {who} {o.role}{extra} {o.detail}".rstrip(), flush=True)

    try:
        run_harvest(
            args.vici,
            store,
            on_outcome=emit,
            stop=lambda: stopping,
            once=args.once,
            replay_window=args.replay_window,
            paper=args.paper,
            counter_interval=args.counter_interval,
        )
    except (HarvestError, XfrmError) as exc:
        print(f"ikeresume harvest: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def _alg_name(s: Any) -> str | None:
    algo = s.aead or s.crypt
    return None if algo is None else str(algo.name)


def _cmd_xfrm(args: argparse.Namespace) -> int:
    # lazy: --help and the other subcommands stay light (tests/test_startup.py)
    from ikeshim.errors import XfrmError
    from ikeshim.xfrm import XfrmSocket
    from resume.exitcodes import EXIT_ERROR

    try:
        with XfrmSocket() as x:
            sas, pols = x.dump_sas(), x.dump_policies()
    except XfrmError as exc:
        print(f"ikeresume xfrm: {exc}", file=sys.stderr)
        return EXIT_ERROR
    rows = [
        {
            "src": s.src,
            "dst": s.dst,
            "spi": f"{s.spi:08x}",
            "mode": "tunnel" if s.mode else "transport",
            "reqid": s.reqid,
            "alg": _alg_name(s),
            "bytes": s.curlft.bytes,
            "packets": s.curlft.packets,
        }
        for s in sas
    ]
    if args.json:
        print(json.dumps({"sas": rows, "policies": len(pols)}))
    else:
        for r in rows:
            print(
                f"{r['src']} -> {r['dst']} spi {r['spi']} {r['mode']} reqid {r['reqid']} "
                f"{r['alg']} {r['bytes']}B/{r['packets']}p"
            )
        print(f"{len(pols)} policies")
    return 0
