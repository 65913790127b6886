"""The processes the crash test kills: a responder service and one-shot clients.

They are forked from a ``multiprocessing`` fork server that imported this module (and with
it trio, the service, the store and the client) once, so a kill and a restart cost a
``fork``, not an interpreter start: hundreds of SIGKILLs fit in CI's budget.  Each child
runs the real code paths -- the responder service ``ikeresume serve`` runs (the engine
:func:`resume.net.service.make_service` picks: native by default, ``IKERESUME_CORE=python``
for the reference engine) with a Python install hook,
:func:`resume.net.client.resume_with_store_blocking` -- against real SQLite files or a real
PostgreSQL server.

Two records the service itself does not keep are added here, both as appends to a file
(``O_APPEND``; what was written survives the SIGKILL of its writer):

* the install hook records every SA pair it installs (SPIs and a digest of the keys;
  ``fdatasync``'d, as an installer that must be durable would be);
* the responder's store records every compare-and-set it won, after the commit returned
  (a kill in between loses the line, never invents one): the ledger from which "no
  generation was accepted twice" is checked.  On the native engine with SQLite the Rust
  group committer commits, not the Python store: its durable commits reach Python as
  "committed" items (the pair to install), and the service records those instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import trio

from resume.events import SaveSuccessor
from resume.initiator import InitiatorConfig
from resume.net.client import (
    ClientOptions,
    ResumeResult,
    lookup,
    resume_once_blocking,
    resume_with_store_blocking,
    write_ahead,
)
from resume.net.config import from_mapping, responder_config
from resume.net.native_service import NativeResponderService
from resume.net.server import ResponderService
from resume.net.service import wants_native
from store.keys import Keyring
from store.policy import Policy
from store.repository import RatchetRequest, Store

ID_R = b"\x02vpn.crash.example"


def _warm_imports() -> None:
    """Import what a PostgreSQL store loads on first use (SQLAlchemy, its psycopg dialect)
    in the fork server too, so that a forked child does not spend its life importing."""
    from store.engine import make_engine

    make_engine("postgresql://warm@/warm?host=/nonexistent").dispose()  # connects nothing


_warm_imports()
HOOK_FILE_ENV = "IKR_CRASH_HOOK_FILE"


def client_id(i: int) -> bytes:
    return b"\x02client%d.crash.example" % i


def _append(path: str, line: str, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
        if sync:
            os.fdatasync(fd)
    finally:
        os.close(fd)


def _claim(flag: str, marker: str) -> bool:
    """Take the one-shot ``flag`` the test armed (atomically) and say so in ``marker``."""
    try:
        os.rename(flag, marker)
    except FileNotFoundError:
        return False
    return True


async def record_install(desc: dict[str, Any]) -> None:
    """The responder's install hook (``python:tests.crash.children:record_install``).

    When the test armed ``stall-install``, the first install to see it never finishes (it
    says so in ``stalled-install``): the responder is killed while an SA pair it committed
    is not installed yet -- the window the install outbox exists for.
    """
    work = os.path.dirname(os.environ[HOOK_FILE_ENV])
    if _claim(os.path.join(work, "stall-install"), os.path.join(work, "stalled-install")):
        await trio.sleep_forever()
    keys = "".join(desc[d][k] for d in ("i_to_r", "r_to_i") for k in ("encr_key", "integ_key"))
    digest = hashlib.sha256(keys.encode()).hexdigest()[:16]
    line = f"{desc['i_to_r']['spi']} {desc['r_to_i']['spi']} {digest}\n"
    _append(os.environ[HOOK_FILE_ENV], line, sync=True)


class LedgerStore(Store):
    """The real store, plus a line per compare-and-set won, once it is durable."""

    ledger = ""

    def commit_ratchet_many(
        self, reqs: Sequence[RatchetRequest], *, forget: Sequence[str] = ()
    ) -> list[bool]:
        results = super().commit_ratchet_many(reqs, forget=forget)
        lines = [
            f"{r.handle.hex()} {r.generation} {r.successor.handle.hex()}\n"
            for r, ok in zip(reqs, results, strict=True)
            if ok
        ]
        if lines and self.ledger:
            _append(self.ledger, "".join(lines), sync=False)
        return results


class LedgerNativeService(NativeResponderService):
    """The native service, plus a ledger line per durable compare-and-set of the Rust
    committer (each reaches Python with its SA pair to install)."""

    ledger = ""

    def _handle(self, item: tuple[Any, ...]) -> None:
        if item[0] == "committed" and self.ledger:
            _kind, _uid, handle, generation, succ = item[:5]
            _append(self.ledger, f"{handle.hex()} {generation} {succ.handle.hex()}\n", False)
        super()._handle(item)


@dataclass(frozen=True)
class Setup:
    """Everything a child needs (picklable: sent through the fork server)."""

    responder_url: str
    client_url: str  # "{i}" is replaced by the client's number (SQLite: one file each)
    keyline: str
    port: int
    work: str  # directory: server secret, hook file, ledger, client results

    def client_store_url(self, i: int) -> str:
        return self.client_url.replace("{i}", str(i))


def responder_main(setup: Setup, ready: Connection) -> None:
    """Serve until SIGTERM (graceful) or SIGKILL; report readiness and the start-up
    replay of the install outbox through ``ready``."""
    os.environ[HOOK_FILE_ENV] = os.path.join(setup.work, "installs.log")
    cfg = from_mapping(
        {
            "server": {
                "listen": [f"127.0.0.1:{setup.port}"],
                "server_secret_file": os.path.join(setup.work, "server.key"),
                "shutdown_grace": 10,
            },
            "install": {
                "mode": "hook",
                "hook": "python:tests.crash.children:record_install",
                "hook_timeout": 60,
                "node": "crash-node",
            },
            "limits": {"per_source_rate": 1e6, "per_source_burst": 1e6},
            "http": {"listen": ""},
            "log": {"level": "error"},
        }
    )
    store = LedgerStore.open(
        setup.responder_url, Keyring.from_text(setup.keyline), Policy(max_chain_age=86400.0)
    )
    store.ledger = os.path.join(setup.work, "ledger.log")

    async def main() -> None:
        service: ResponderService
        if wants_native(cfg, responder_config(cfg.protocol)):
            service = LedgerNativeService(cfg, store)
            service.ledger = store.ledger
        else:
            service = ResponderService(cfg, store)
        with trio.open_signal_receiver(signal.SIGTERM) as sigs:
            async with trio.open_nursery() as nursery:
                await nursery.start(service.run)
                r = service.outbox_replay
                ready.send(
                    ("ready", r.installed, r.failed, r.expired, r.unreadable, service.engine)
                )
                async for _ in sigs:
                    service.shutdown()  # run() returns once drained; the nursery waits
                    break

    try:
        trio.run(main)
    finally:
        store.close()


def client_main(setup: Setup, i: int, final: bool, stall: str = "") -> None:
    """One ``resume_with_store_blocking`` attempt of client ``i`` (the path of
    ``ikeresume resume``); exit 0 resumed, 3 otherwise.  ``final``: generous timers (the
    verdict phase, nothing is killed) and a result file.

    ``stall`` ("before_write" / "after_write"): the same attempt, assembled from the same
    parts (lookup, ``resume_once_blocking``, ``write_ahead``), stops for good around the
    durable write of the successor -- before message 3 can leave -- and says so in
    ``stalled-client-{i}``: the test kills it there."""
    if stall:
        _stalling_client(setup, i, stall)
        return
    store = Store.open(setup.client_store_url(i), Keyring.from_text(setup.keyline))
    before = store.lookup_peer(ID_R, time.time(), id_i=client_id(i))
    cfg = (
        InitiatorConfig(initial_rto=0.5, max_retransmits=6, timeout=120.0)
        if final
        else InitiatorConfig(initial_rto=0.2, max_retransmits=3, timeout=3.0)
    )
    opts = ClientOptions(config=cfg, id_i=client_id(i), bypass_ipsec=False)
    result = resume_with_store_blocking(store, ID_R, ("127.0.0.1", setup.port), opts)
    if final:
        current = None if before is None or before.credential is None else before.credential
        out = {
            "outcome": result.outcome,
            "detail": result.detail,
            "used_generation": result.used_generation,
            "held_generation": None if current is None else current.generation,
        }
        with open(os.path.join(setup.work, f"final-{i}.json"), "w") as f:
            json.dump(out, f)
    store.close()
    sys.exit(0 if result.resumed else 3)


def _stalling_client(setup: Setup, i: int, where: str) -> None:
    store = Store.open(setup.client_store_url(i), Keyring.from_text(setup.keyline))
    cfg = InitiatorConfig(initial_rto=0.2, max_retransmits=3, timeout=3.0)
    res = lookup(store, ID_R, client_id(i), time.time())
    if isinstance(res, ResumeResult):
        sys.exit(3)
    marker = os.path.join(setup.work, f"stalled-client-{i}")

    def save(ev: SaveSuccessor) -> None:
        if where == "after_write":
            write_ahead(store, ev, time.time())
        with open(marker, "w"):
            pass
        time.sleep(3600)  # killed here

    opts = ClientOptions(config=cfg, id_i=client_id(i), bypass_ipsec=False)
    resume_once_blocking(res, ("127.0.0.1", setup.port), opts, save=save)
    sys.exit(3)  # only without a message 2 (the responder was down): nothing to stall on
