"""Subcommands of the ``ikeshim`` package: ``harvest`` and ``xfrm`` (inspection, and
``xfrm describe``: a kernel CHILD_SA as the JSON SA description ``cache bootstrap`` reads)."""

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
        "xfrm",
        help="list kernel SAs and policies (no keys); 'xfrm describe': a CHILD_SA's SA description",
    )
    x.add_argument("--json", action="store_true")
    x.set_defaults(func=_cmd_xfrm)
    xs = x.add_subparsers(dest="xfrm_command", metavar="ACTION")
    d: argparse.ArgumentParser = xs.add_parser(
        "describe",
        help="write the JSON SA description of a kernel CHILD_SA (for cache bootstrap)",
        description="Read the two ESP SAs of a CHILD_SA from the kernel (any IKE daemon: "
        "libreswan, iked, ...) and write its JSON SA description (specs/sa-description.md), "
        "KEYS INCLUDED, to stdout or -o FILE (mode 0600): pipe it into 'ikeresume cache "
        "bootstrap --role R -'.  Both peers give the same initiator/responder view and get "
        "the same description.  Run as root in the daemon's network namespace.",
    )
    d.add_argument("--initiator", required=True, help="IKE initiator's address")
    d.add_argument("--responder", required=True, help="IKE responder's address")
    d.add_argument("--spi-i2r", help="SPI of the initiator->responder SA (0x.. or decimal)")
    d.add_argument("--spi-r2i", help="SPI of the responder->initiator SA")
    d.add_argument("--spi", action="append", help="instead: the two SPIs in any order (twice; "
                   "e.g. libreswan's updown $SPI_IN and $SPI_OUT)")  # fmt: skip
    d.add_argument("--reqid", type=int, help="instead: the SAs' kernel reqid (exactly one ESP "
                   "SA each way must have it)")  # fmt: skip
    d.add_argument("--id-i", required=True, help="initiator identity: fqdn:, email:, ipv4:, ...")
    d.add_argument("--id-r", required=True, help="responder identity")
    d.add_argument("--tsi", action="append", help="initiator traffic selector: ADDR[/LEN] "
                   "(repeat, in negotiated order; default the initiator's address)")  # fmt: skip
    d.add_argument("--tsr", action="append", help="responder traffic selector (default: address)")
    d.add_argument("--mode", choices=("tunnel", "transport"), help="default: the kernel SA's")
    d.add_argument("--replay-window", type=int, default=128)
    d.add_argument("--lineage", default="unknown", help="classical, hybrid-pq, ppk, unknown")
    d.add_argument("-o", "--output", help="file (created mode 0600; default stdout)")
    d.set_defaults(func=_cmd_xfrm_describe)


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


def _cmd_xfrm_describe(args: argparse.Namespace) -> int:
    """``ikeresume xfrm describe``: exit 4 on a bad argument, 1 if the SAs cannot be read."""
    # lazy: --help and the other subcommands stay light (tests/test_startup.py)
    import ipaddress

    from ikeshim.child_sa import describe_child_sa, find_child_sa
    from ikeshim.errors import HarvestError, XfrmError
    from ikeshim.xfrm import XfrmSocket
    from resume.exitcodes import EXIT_CONFIG, EXIT_ERROR
    from resume.identity import parse_identity
    from resume.sa import Mode, TrafficSelector
    from store.sa_description import (
        LINEAGES,
        MIN_SPI,
        SADescription,
        description_to_json,
        parse_sa_description,
    )

    def fail(rc: int, msg: str) -> int:
        print(f"ikeresume xfrm describe: {msg}", file=sys.stderr)
        return rc

    def spi_value(v: str | None) -> int | None:
        if v is None:
            return None
        spi = int(v, 16) if v.lower().startswith("0x") else int(v)
        if not MIN_SPI <= spi < 2**32:
            raise ValueError(f"SPI {v} is outside [256, 2^32-1]")
        return spi

    try:
        i_addr = str(ipaddress.ip_address(args.initiator))
        r_addr = str(ipaddress.ip_address(args.responder))
        if args.spi is not None and len(args.spi) != 2:
            raise ValueError("--spi takes the CHILD_SA's two SPIs: give it twice")
        either = {s for s in map(spi_value, args.spi or ()) if s is not None}
        i2r_spi, r2i_spi = spi_value(args.spi_i2r), spi_value(args.spi_r2i)
        id_i, id_r = parse_identity(args.id_i), parse_identity(args.id_r)
        tsi = tuple(TrafficSelector.from_network(t) for t in args.tsi or [i_addr])
        tsr = tuple(TrafficSelector.from_network(t) for t in args.tsr or [r_addr])
        if args.lineage not in LINEAGES:
            raise ValueError(f"lineage must be one of {', '.join(LINEAGES)}")
    except ValueError as e:
        return fail(EXIT_CONFIG, str(e))
    try:
        with XfrmSocket() as x:
            i2r, r2i = find_child_sa(
                x, i_addr, r_addr, spi_i2r=i2r_spi, spi_r2i=r2i_spi, spis=either,
                reqid=args.reqid,
            )  # fmt: skip
        params, k_i2r, k_r2i = describe_child_sa(
            i2r, r2i, initiator=i_addr, responder=r_addr, tsi=tsi, tsr=tsr,
            mode=Mode(args.mode) if args.mode else None, replay_window=args.replay_window,
        )  # fmt: skip
    except (XfrmError, HarvestError) as e:
        return fail(EXIT_ERROR, str(e))
    desc = SADescription(params, k_i2r, k_r2i, id_i, id_r, args.lineage)
    text = json.dumps(description_to_json(desc), indent=1) + "\n"
    parse_sa_description(text)  # what we write, bootstrap reads back (a bug otherwise)
    if args.output:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fp:
            fp.write(text)
    else:
        sys.stdout.write(text)
    return 0
