"""Fixtures for service tests: real SQLite stores, a real service on loopback, a lossy relay."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from resume.credential import Credential
from resume.initiator import InitiatorConfig
from resume.net.config import ServeConfig, from_mapping
from resume.net.hooks import Installer
from resume.net.server import ResponderService
from resume.net.service import make_service
from resume.sa import SAPair
from resume.testing import simulated_full_ike
from store.keys import Keyring, MasterKey
from store.repository import Store

ID_R = b"\x02vpn.example.org"

#: A deadline that only bounds a hang: it never decides a verdict (issue 18).
HANG = 60.0
#: Success paths over real sockets: no initiator timer fires on any plausible scheduling
#: delay, so a busy host cannot turn a success into a retransmission or a give-up.
PATIENT = InitiatorConfig(initial_rto=10.0, max_retransmits=3, timeout=HANG)
#: A peer that never answers (outcome "timeout" whatever the host's speed): all three
#: retransmissions are due in the first 0.35 s, the give-up only at 3 s.
SILENT = InitiatorConfig(initial_rto=0.05, max_retransmits=3, timeout=3.0)


def lossy(rto: float = 1.5) -> InitiatorConfig:
    """Recovery from a deliberate loss: one loss costs exactly one retransmission unless
    the retransmitted exchange stalls for 2 * ``rto``; the give-up bounds a hang only."""
    return InitiatorConfig(initial_rto=rto, max_retransmits=6, timeout=HANG)


async def eventually(predicate: Callable[[], object], what: str, timeout: float = HANG) -> None:
    """Wait until ``predicate()`` holds (checked every 10 ms); the deadline bounds a hang."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"still waiting after {timeout:.0f} s for {what}")


def id_i(n: int) -> bytes:
    return b"\x02client%d.example.org" % n


class CaptureInstaller:
    """Records the SA pairs the service installs (the server half of each resumption)."""

    def __init__(self) -> None:
        self.pairs: list[SAPair] = []

    async def install(self, sa: SAPair) -> None:
        self.pairs.append(sa)


@dataclass
class Env:
    tmp: Path
    keyring: Keyring
    server_store: Store
    client_store: Store
    creds: list[Credential] = field(default_factory=list)

    def seed(self, n: int, *, server: bool = True, now: float | None = None) -> list[Credential]:
        """n credential pairs as a full IKE would leave them in both caches."""
        t = time.time() if now is None else now
        out = []
        for i in range(len(self.creds), len(self.creds) + n):
            c = simulated_full_ike(id_i=id_i(i), id_r=ID_R)
            if server:
                self.server_store.upsert_full_ike("responder", c, t)
            self.client_store.upsert_full_ike("initiator", c, t)
            out.append(c)
        self.creds += out
        return out

    def config(self, **sections: dict[str, Any]) -> ServeConfig:
        doc: dict[str, Any] = {
            "server": {
                "listen": ["127.0.0.1:0"],
                "server_secret_file": str(self.tmp / "server.key"),
                "shutdown_grace": 5,
            },
            "http": {"listen": "127.0.0.1:0"},
            "limits": {"per_source_rate": 1000.0, "per_source_burst": 1000.0},
            "log": {"level": "warning"},
        }
        for name, table in sections.items():
            doc.setdefault(name, {}).update(table)
        return from_mapping(doc)

    async def start(
        self,
        nursery: trio.Nursery,
        cfg: ServeConfig | None = None,
        installer: Installer | None = None,
    ) -> ResponderService:
        svc = make_service(cfg or self.config(), self.server_store, installer=installer)
        started: ResponderService = await nursery.start(svc.run)
        return started


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from open_env(tmp_path)


def open_env(tmp_path: Path, key: MasterKey | None = None) -> Iterator[Env]:
    """Server and client SQLite stores under one keyring (``key``, else a fresh key), closed
    afterwards."""
    kr = Keyring([key or MasterKey.generate()])
    ss = Store.open(f"sqlite:///{tmp_path}/server.db", kr)
    cs = Store.open(f"sqlite:///{tmp_path}/client.db", kr)
    try:
        yield Env(tmp_path, kr, ss, cs)
    finally:
        ss.close()
        cs.close()


def message_id(data: bytes) -> int:
    return int.from_bytes(data[20:24], "big") if len(data) >= 28 else -1


Verdict = str  # "pass" | "drop" | "hold"


class Relay:
    """A UDP relay between one client and the service that can drop or hold datagrams.

    ``decide(direction, data)`` returns "pass", "drop" or "hold" ("up" = client to server).
    Held datagrams are forwarded by :meth:`release`.  Tests use it for loss and restarts.
    """

    def __init__(self, upstream: tuple[str, int], decide: Callable[[str, bytes], Verdict]):
        self.upstream = upstream
        self.decide = decide
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client: tuple[str, int] | None = None
        self.held: list[bytes] = []
        self.log: list[tuple[str, int, Verdict]] = []
        self.up = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    async def start(self, nursery: trio.Nursery) -> tuple[str, int]:
        await self.sock.bind(("127.0.0.1", 0))
        await self.up.bind(("127.0.0.1", 0))
        nursery.start_soon(self._down)
        nursery.start_soon(self._up)
        addr: tuple[str, int] = self.sock.getsockname()
        return addr

    async def _down(self) -> None:  # client -> relay -> server
        while True:
            data, addr = await self.sock.recvfrom(65535)
            self.client = addr
            v = self.decide("up", data)
            self.log.append(("up", message_id(data), v))
            if v == "pass":
                await self.up.sendto(data, self.upstream)
            elif v == "hold":
                self.held.append(data)

    async def _up(self) -> None:  # server -> relay -> client
        while True:
            data, _ = await self.up.recvfrom(65535)
            v = self.decide("down", data)
            self.log.append(("down", message_id(data), v))
            if v == "pass" and self.client is not None:
                await self.sock.sendto(data, self.client)

    async def release(self) -> None:
        held, self.held = self.held, []
        for data in held:
            await self.up.sendto(data, self.upstream)
