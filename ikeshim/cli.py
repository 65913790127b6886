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

    _register_agent(sub)

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


def _register_agent(sub: Any) -> None:
    a: argparse.ArgumentParser = sub.add_parser(
        "agent",
        help="resident initiator: resumes on request (ikeresume-resume) and when charon "
        "loses a kept-up IKE_SA",
        description="'run' serves requests on a UNIX socket and follows charon's VICI "
        "events; 'resume PEER' asks the running agent, or resumes in this process when "
        "none runs (exit 0 resumed, 3 refused or timed out: run a full IKE, 4 config).",
    )
    a.add_argument("-c", "--config", default=None, help="agent TOML (--print-example)")
    a.add_argument("--print-example", action="store_true", help="print the documented config")
    acts = a.add_subparsers(dest="agent_command", metavar="ACTION")
    acts.add_parser("run", help="serve until SIGTERM")
    acts.add_parser("check", help="validate the config and exit")
    r = acts.add_parser("resume", help="resume PEER now (through the agent when it runs)")
    r.add_argument("peer", help="a [peers.<name>] of the config")
    r.add_argument(
        "--timeout",
        type=float,
        default=90.0,
        help="seconds to wait for the agent (default 90: longer than any peer's attempt)",
    )
    a.set_defaults(func=_cmd_agent)


def _cmd_agent(args: argparse.Namespace) -> int:
    # lazy: --help and the other subcommands stay light (tests/test_startup.py)
    from ikeshim.agent.config import DEFAULT_CONFIG, EXAMPLE, AgentConfigError, load_config
    from resume.exitcodes import EXIT_CONFIG, EXIT_OK, EXIT_USAGE

    if args.print_example:
        sys.stdout.write(EXAMPLE.read_text())
        return EXIT_OK
    if args.agent_command is None:
        print("ikeresume agent: ACTION is one of run, check, resume", file=sys.stderr)
        return EXIT_USAGE
    path = args.config or os.environ.get("IKERESUME_AGENT_CONFIG") or DEFAULT_CONFIG
    try:
        cfg = load_config(path)
    except AgentConfigError as e:
        print(f"ikeresume agent: config error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    if args.agent_command == "check":
        print(f"{path}: ok ({len(cfg.peers)} peers)")
        return EXIT_OK
    if args.agent_command == "resume":
        return _agent_resume(cfg, args.peer, args.timeout)
    from ikeshim.agent.service import serve_forever

    try:
        store = _open_agent_store(cfg)
    except Exception as exc:  # any config/DB/key problem: say so, stop
        print(f"ikeresume agent: cannot open the store: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    with store:
        return serve_forever(cfg, store)


def _open_agent_store(cfg: Any) -> Any:
    from store.keys import Keyring
    from store.repository import Store

    if not cfg.db:
        raise ValueError(f"{cfg.source}: [store] url is empty")
    return Store.open(cfg.db, Keyring.load(cfg.key_file), cfg.policy)


def _agent_resume(cfg: Any, name: str, timeout: float) -> int:
    from ikeshim.agent.oneshot import ask_agent, resume_in_process
    from ikeshim.agent.wire import PEER_NAME, AgentRequestError, Request, format_reply, parse_reply
    from resume.exitcodes import EXIT_CONFIG, EXIT_FALLBACK, EXIT_OK, EXIT_USAGE

    if not PEER_NAME.fullmatch(name):
        print(f"ikeresume agent: {AgentRequestError('bad peer name')}", file=sys.stderr)
        return EXIT_USAGE
    try:
        line = ask_agent(cfg.socket, Request("resume", name), timeout)
    except OSError as exc:  # the agent took the request but did not answer in time
        line = format_reply(EXIT_FALLBACK, {"outcome": "timeout", "detail": f"agent: {exc}"})
    if line is None:
        peer = cfg.peers.get(name)
        if peer is None:
            print(f"ikeresume agent: config error: no [peers.{name}]", file=sys.stderr)
            return EXIT_CONFIG
        code, body = resume_in_process(cfg, peer)
    else:
        try:
            code, body = parse_reply(line)
        except ValueError:
            code, body = EXIT_FALLBACK, {"outcome": "timeout", "detail": "agent gave no reply"}
    out = sys.stdout if code == EXIT_OK else sys.stderr
    print(json.dumps(body), file=out)
    return code


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
