"""``ikeresume serve`` and ``ikeresume resume``.

Exit codes (``resume.cli``): 0 success; 3 (``EXIT_FALLBACK``) the resumption did not happen
-- NACK, timeout, no usable cached credential, store unavailable, install failed -- so the
caller must run a full IKE; 4 (``EXIT_CONFIG``) the configuration is unusable (message says
where); 1 the service failed at run time; 2 usage.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from resume.exitcodes import EXIT_CONFIG, EXIT_ERROR, EXIT_FALLBACK, EXIT_OK
from resume.identity import parse_identity as _parse_identity

if TYPE_CHECKING:
    from resume.net.hooks import Installer



def register(sub: Any) -> None:
    """Add ``serve`` and ``resume`` to the ``ikeresume`` parser."""
    p = sub.add_parser(
        "serve",
        help="run the resumption responder (UDP) next to the IKE daemon",
        description="Answer resumption requests from the credential cache. "
        "SIGTERM drains gracefully (in-flight exchanges finish, group commit flushes).",
    )
    p.add_argument("-c", "--config", help="TOML config (every option: --print-example)")
    p.add_argument("--listen", action="append", help="override [server] listen (repeatable)")
    p.add_argument("--db", help="override [store] url (SQLAlchemy URL or SQLite path)")
    p.add_argument("--key-file", help="override [store] key_file (master key)")
    p.add_argument("--check", action="store_true", help="validate the config and exit")
    p.add_argument("--print-example", action="store_true", help="print the documented config")
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_serve)

    r = sub.add_parser(
        "resume",
        help="resume a session from the cache (exit 3: run a full IKE)",
        description="Try a resumption with the cached credential for the responder identity. "
        "Exit 0 and print the SA summary (no keys) on success; exit 3 on NACK, timeout or "
        "no credential, so the caller starts a full IKE.",
    )
    r.add_argument(
        "--server",
        required=True,
        help="responder address HOST[:PORT] or [V6]:PORT; HOST may be a DNS name",
    )
    r.add_argument(
        "--peer",
        required=True,
        help="responder identity: fqdn:NAME, ipv4:A, "
        "ipv6:A, email:X, keyid:HEX, hex:RAW (type byte first), or a bare name/IP",
    )
    r.add_argument("--id", dest="id_i", help="our identity (when several are cached)")
    r.add_argument("--db", help="initiator credential cache (default $IKERESUME_DB)")
    r.add_argument("--key-file", help="master key file (default from the environment)")
    r.add_argument("--natt", action="store_true", help="NAT-T framing (non-ESP marker)")
    r.add_argument("--timeout", type=float, default=4.0, help="overall seconds (default 4)")
    r.add_argument("--rto", type=float, default=0.5, help="first retransmission after (s)")
    r.add_argument("--retransmits", type=int, default=3, help="message 1 retransmissions")
    r.add_argument(
        "--mlkem",
        choices=("off", "offer", "require"),
        default="off",
        help="ML-KEM-768 in the exchange (post-quantum): offer it, or require it (a "
        "responder that answers without it means exit 3); default off",
    )
    r.add_argument("--install", choices=("none", "xfrm", "hook"), default="none")
    r.add_argument("--hook", default="", help="executable or python:mod:func (with --install hook)")
    r.add_argument("--json", action="store_true", help="print the outcome as JSON")
    r.set_defaults(func=cmd_resume)


# -- serve -----------------------------------------------------------------------------------
def _err(msg: str) -> None:
    print(f"ikeresume: {msg}", file=sys.stderr)


def _load_serve_config(args: argparse.Namespace) -> Any:
    # lazy: --help and ikeresume resume stay light (tests/test_startup.py)
    from resume.net.config import (
        DEFAULT_PORT,
        ConfigError,
        ServeConfig,
        load_config,
        parse_hostport,
    )

    cfg: ServeConfig = load_config(args.config) if args.config else ServeConfig()
    if args.listen:
        try:
            listen = tuple(parse_hostport(x, DEFAULT_PORT) for x in args.listen)
        except ValueError as e:
            raise ConfigError(f"--listen: {e}") from None
        cfg = replace(cfg, server=replace(cfg.server, listen=listen))
    if args.db or args.key_file:
        cfg = replace(
            cfg,
            store=replace(
                cfg.store,
                url=args.db or cfg.store.url,
                key_file=args.key_file or cfg.store.key_file,
            ),
        )
    return cfg


def cmd_serve(args: argparse.Namespace) -> int:
    # lazy: --help and ikeresume resume stay light (tests/test_startup.py)
    from resume.net.config import EXAMPLE, ConfigError

    if args.print_example:
        sys.stdout.write(EXAMPLE.read_text())
        return EXIT_OK
    try:
        cfg = _load_serve_config(args)
    except ConfigError as e:
        _err(f"config error: {e}")
        return EXIT_CONFIG
    from resume.net.config import affinity_warning, responder_config

    try:
        rcfg = responder_config(cfg.protocol)
    except ConfigError as e:
        _err(f"config error: {cfg.source}: {e}")
        return EXIT_CONFIG
    if args.check:
        warning = affinity_warning(cfg, rcfg)
        if warning:
            print(f"ikeresume: warning: {cfg.source}: {warning}", file=sys.stderr)
        print(f"{cfg.source}: ok" + (" (1 warning)" if warning else ""))
        return EXIT_OK
    return _serve(cfg, args)


def _serve(cfg: Any, args: argparse.Namespace) -> int:
    # lazy: --help and ikeresume resume stay light (tests/test_startup.py)
    import trio

    from resume.net import logs
    from resume.net.config import ConfigError
    from resume.net.service import make_service
    from store.errors import MasterKeyError, StoreConfigError, StoreError
    from store.keys import Keyring
    from store.repository import Store

    logs.setup(cfg.log.level, cfg.log.format)
    try:
        keyring = Keyring.load(cfg.store.key_file or None)
    except MasterKeyError as e:
        _err(f"config error: [store] key_file: {e}")
        return EXIT_CONFIG
    try:
        store = Store.open(
            cfg.store.url, keyring, cfg.policy, sqlite_synchronous=cfg.store.sqlite_synchronous
        )
    except (StoreConfigError, MasterKeyError) as e:
        _err(f"config error: [store]: {e}")
        return EXIT_CONFIG
    except StoreError as e:
        _err(f"store unavailable: {e}")
        return EXIT_ERROR

    workers = cfg.server.workers if args.worker_index == 0 else 1
    children = _spawn_workers(args, workers) if workers > 1 else []
    if args.worker_index > 0 and cfg.http.listen:
        from resume.net.config import parse_hostport

        h = parse_hostport(cfg.http.listen, 9751)
        port = h.port + args.worker_index if h.port else 0
        host = f"[{h.host}]" if h.family_v6 else h.host
        cfg = replace(cfg, http=replace(cfg.http, listen=f"{host}:{port}"))

    async def main() -> None:
        service = make_service(cfg, store, reuse_port=cfg.server.workers > 1)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
            async with trio.open_nursery() as nursery:

                async def on_signal() -> None:
                    async for _ in sigs:
                        service.shutdown()
                        for c in children:
                            c.send_signal(signal.SIGTERM)

                nursery.start_soon(on_signal)
                await service.run()  # returns once drained
                nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    except ConfigError as e:
        _err(f"config error: {e}")
        return EXIT_CONFIG
    finally:
        store.close()
        for c in children:
            try:
                c.wait(cfg.server.shutdown_grace + 5)
            except subprocess.TimeoutExpired:
                c.kill()
    return EXIT_OK


def _spawn_workers(args: argparse.Namespace, workers: int) -> list[subprocess.Popen[bytes]]:
    """SO_REUSEPORT siblings: same config, same server secret, same store."""
    argv = [sys.executable, "-m", "resume.cli", "serve"]
    for name in ("config", "db", "key_file"):
        v = getattr(args, name)
        if v:
            argv += [f"--{name.replace('_', '-')}", v]
    for x in args.listen or []:
        argv += ["--listen", x]
    return [subprocess.Popen([*argv, "--worker-index", str(i)]) for i in range(1, workers)]


# -- resume ----------------------------------------------------------------------------------
def parse_identity(text: str) -> bytes:
    """Identity as the credential stores it: one ID type byte, then the data
    (:func:`resume.identity.parse_identity`, a bare name or IP accepted)."""
    return _parse_identity(text, bare=True)


def cmd_resume(args: argparse.Namespace) -> int:
    # lazy: --help and ikeresume resume stay light (tests/test_startup.py)
    from resume.errors import LocalProtocolError
    from resume.initiator import InitiatorConfig
    from resume.net.client import ClientOptions, ResumeResult, resume_with_store_blocking
    from resume.net.config import DEFAULT_PORT, resolve_hostport
    from store.errors import MasterKeyError, StoreConfigError, StoreError
    from store.keys import Keyring
    from store.repository import Store

    try:
        server = resolve_hostport(args.server, DEFAULT_PORT)
        peer = parse_identity(args.peer)
        id_i = parse_identity(args.id_i) if args.id_i else None
        config = InitiatorConfig(
            initial_rto=args.rto,
            max_retransmits=args.retransmits,
            timeout=args.timeout,
            mlkem=args.mlkem,
        )
        installer = _installer(args)
    except (ValueError, LocalProtocolError) as e:
        _err(f"config error: {e}")
        return EXIT_CONFIG
    url = args.db or os.environ.get("IKERESUME_DB")
    if not url:
        _err("config error: no credential cache: pass --db or set IKERESUME_DB")
        return EXIT_CONFIG
    try:
        store = Store.open(url, Keyring.load(args.key_file))
    except (StoreConfigError, MasterKeyError) as e:
        _err(f"config error: {e}")
        return EXIT_CONFIG
    except StoreError as e:
        _report(args, ResumeResult("store_error", 0.0, detail=str(e)))
        return EXIT_FALLBACK
    with store:
        options = ClientOptions(config=config, id_i=id_i, natt=args.natt)
        result = resume_with_store_blocking(store, peer, (server.host, server.port), options)
        if result.resumed and result.sa is not None and installer is not None:
            import trio

            from resume.net.hooks import InstallError

            try:
                trio.run(installer.install, result.sa)
            except InstallError as e:
                _report(args, result, install_error=str(e))
                return EXIT_FALLBACK
        _report(args, result)
    return EXIT_OK if result.resumed else EXIT_FALLBACK


def _installer(args: argparse.Namespace) -> Installer | None:
    """The ``--install`` installer, None for ``none``.

    ``none`` installs nothing, and the hooks (trio-based) would cost the common case trio's
    import time; the other modes load them here so a bad hook is still a config error.
    """
    if args.install == "none":
        return None
    # lazy: --help and ikeresume resume stay light (tests/test_startup.py)
    from resume.net.hooks import make_installer

    return make_installer(args.install, args.hook, max(args.timeout, 5.0))


def _report(args: argparse.Namespace, r: Any, install_error: str = "") -> None:
    out: dict[str, Any] = {
        "outcome": r.outcome if not install_error else "install_failed",
        "elapsed_ms": round(r.elapsed * 1e3, 3),
        "retransmits": r.retransmits,
    }
    if r.detail:
        out["detail"] = r.detail
    if install_error:
        out["install_error"] = install_error
    if r.sa is not None:  # SPIs and algorithms only: never keys
        out["spi_in"] = f"{r.sa.inbound.spi:#010x}"
        out["spi_out"] = f"{r.sa.outbound.spi:#010x}"
        out["generation"] = (r.used_generation or 0) + 1
        out["mode"] = r.sa.params.mode.value
        out["encr"] = r.sa.params.encr.name
    if r.successor is not None:  # what the run mixed in, and the chain's lineage now
        out["ke"] = r.ke
        out["lineage"] = r.successor.lineage.value
    out["time"] = round(time.time(), 3)
    if args.json:
        print(json.dumps(out))
    else:
        text = " ".join(f"{k}={v}" for k, v in out.items() if k != "time")
        stream = sys.stdout if r.resumed and not install_error else sys.stderr
        print(("resumed: " if r.resumed else "fallback to full IKE: ") + text, file=stream)
