"""What only the native engine has to prove: which engine serves, a panic in a service thread
never crosses into Python, bad rows and wrong keys fail closed (NACK, counted, readiness),
and two responders racing one message 3 on one database never both accept it -- on SQLite
(the Rust store) and on PostgreSQL (the Python store behind the native engine).  Every other
service test in this directory runs on the native engine as well (it is the default)."""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path

import pytest
import trio

from resume import native
from resume.initiator import InitiatorConfig
from resume.net.client import ClientOptions, keep_in_memory, resume_once, resume_with_store
from resume.net.config import ConfigError
from resume.net.server import ResponderService
from resume.net.service import make_service
from store.keys import Keyring, MasterKey
from store.repository import Store
from tests.conftest import require
from tests.facilities import PostgresCluster, postgres_cluster  # noqa: F401 (fixture)

from .conftest import HANG, ID_R, PATIENT, Env, eventually, id_i, message_id

pytestmark = pytest.mark.usefixtures("_needs_native")

#: no X25519: message 3 can be checked by any responder sharing the server secret
STATELESS = InitiatorConfig(initial_rto=10.0, max_retransmits=3, timeout=HANG, use_x25519=False)


@pytest.fixture
def _needs_native() -> None:
    require(native.available(), f"the native extension ({native.NATIVE_IMPORT_ERROR})")


def _generation(db: Path, i: int) -> int | None:
    con = sqlite3.connect(db)
    try:
        row = con.execute(
            "SELECT generation FROM credentials WHERE role='responder' AND id_i=?", (id_i(i),)
        ).fetchone()
    finally:
        con.close()
    return None if row is None else int(row[0])


def test_the_engine_is_chosen_by_the_configuration(env: Env) -> None:
    cfg = env.config()
    assert make_service(cfg, env.server_store).engine == "native"
    assert make_service(cfg, env.server_store, engine="python").engine == "python"
    py = make_service(env.config(server={"engine": "python"}), env.server_store)
    assert type(py) is ResponderService
    paper = env.config(protocol={"allow_paper_mode": True})
    assert make_service(paper, env.server_store).engine == "python"  # auto: says why, serves
    with pytest.raises(ConfigError, match="paper mode"):
        make_service(paper, env.server_store, engine="native")
    with pytest.raises(ConfigError, match="clock"):
        make_service(cfg, env.server_store, engine="native", clock=lambda: 0.0)


async def test_a_panic_in_a_service_thread_stops_the_service_not_python(env: Env) -> None:
    env.seed(1)
    async with trio.open_nursery() as nursery:
        svc = await env.start(nursery)
        r = await resume_with_store(
            env.client_store, ID_R, svc.addresses[0], options=ClientOptions(config=PATIENT)
        )
        assert r.resumed
        svc.native._inject_panic()  # type: ignore[attr-defined]
        # the service notices, stops and returns; nothing is raised into the event loop
    assert "injected" in (svc.native.failure or "")  # type: ignore[attr-defined]
    assert svc.closed and not svc.ready


async def test_a_corrupt_row_is_nacked_counted_and_readiness_recovers(
    env: Env, nursery: trio.Nursery
) -> None:
    env.seed(2)
    svc = await env.start(nursery)
    con = sqlite3.connect(env.tmp / "server.db")
    con.execute("UPDATE credentials SET secret_wrapped = X'00' WHERE id_i = ?", (id_i(0),))
    con.commit()
    con.close()
    opts = ClientOptions(id_i=id_i(0), config=PATIENT)
    bad = await resume_with_store(env.client_store, ID_R, svc.addresses[0], options=opts)
    assert bad.outcome == "nack"
    assert svc.metrics.cache.get("error") == 1 and not svc.ready
    # the probe finds the store answering again (the row stays refused)
    await eventually(lambda: svc.ready, "readiness back after a good probe")
    opts = ClientOptions(id_i=id_i(1), config=PATIENT)
    ok = await resume_with_store(env.client_store, ID_R, svc.addresses[0], options=opts)
    assert ok.resumed
    assert _generation(env.tmp / "server.db", 0) == 0


async def test_a_row_under_an_unknown_master_key_is_refused(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    """A rotation gone wrong: rows still wrapped under a key the service no longer has are
    NACKed (fail closed, counted), rows under its key resume."""
    old, new = MasterKey.generate(), MasterKey.generate()
    server_db, client_db = f"sqlite:///{tmp_path}/server.db", f"sqlite:///{tmp_path}/client.db"
    clients = Store.open(client_db, Keyring([new]))
    rotating = Store.open(server_db, Keyring([old]))
    env = Env(tmp_path, Keyring([new]), rotating, clients)
    (lost,) = env.seed(1)  # wrapped under the old key
    rotating.close()
    env.server_store = Store.open(server_db, Keyring([new, old]))
    (kept,) = env.seed(1)  # wrapped under the new key
    env.server_store.close()
    env.server_store = Store.open(server_db, Keyring([new]))  # the old key is gone
    try:
        svc = await env.start(nursery)
        opts = ClientOptions(config=PATIENT)
        bad = await resume_once(lost, svc.addresses[0], opts, save=keep_in_memory)
        assert bad.outcome == "nack" and svc.metrics.cache.get("error") == 1
        good = await resume_once(kept, svc.addresses[0], opts, save=keep_in_memory)
        assert good.resumed
    finally:
        nursery.cancel_scope.cancel()
        env.server_store.close()
        clients.close()


# -- two responders, one database, one message 3 ------------------------------------------
class Fork:
    """Client <-> responder A; the client's message 3 also goes, at the same moment, to B."""

    def __init__(self, a: tuple[str, int], b: tuple[str, int]) -> None:
        self.a, self.b = a, b
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.up = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client: tuple[str, int] | None = None

    async def start(self, nursery: trio.Nursery) -> tuple[str, int]:
        await self.sock.bind(("127.0.0.1", 0))
        await self.up.bind(("127.0.0.1", 0))
        nursery.start_soon(self._down)
        nursery.start_soon(self._back)
        addr: tuple[str, int] = self.sock.getsockname()
        return addr

    async def _down(self) -> None:
        while True:
            data, self.client = await self.sock.recvfrom(65535)
            if message_id(data) == 1:
                await self.up.sendto(data, self.b)
            await self.up.sendto(data, self.a)

    async def _back(self) -> None:
        while True:
            data, src = await self.up.recvfrom(65535)
            if src == self.a and self.client is not None:  # B's NACK stays here
                await self.sock.sendto(data, self.client)


async def _race(env: Env, nursery: trio.Nursery, a_store: Store, b_store: Store, n: int) -> None:
    env.seed(n)
    cfg = env.config(protocol={"allow_x25519": False})  # one server.key: same cookies
    a = make_service(cfg, a_store)
    b = make_service(cfg, b_store)
    assert a.engine == b.engine == "native"
    await nursery.start(a.run)
    await nursery.start(b.run)
    fork = Fork(a.addresses[0], b.addresses[0])
    via = await fork.start(nursery)
    for i in range(n):
        r = await resume_with_store(
            env.client_store, ID_R, via, options=ClientOptions(id_i=id_i(i), config=STATELESS)
        )
        assert r.resumed
    # every message 3 reached both and each responder decided it: accepted (durable
    # commit), refused by the compare-and-set, or refused at the lookup because the other
    # had already moved the record on
    def outcomes(svc: ResponderService) -> int:
        ex = svc.metrics.exchanges
        return int(ex.get("resumed") + ex.get("commit_failed") + ex.get("unknown_or_refused"))

    await eventually(lambda: outcomes(a) + outcomes(b) >= 2 * n, "both responders' verdicts")
    assert outcomes(a) + outcomes(b) == 2 * n
    assert a.metrics.exchanges.get("resumed") + b.metrics.exchanges.get("resumed") == n
    assert a.metrics.commits.get("ok") + b.metrics.commits.get("ok") == n


async def test_two_responders_on_one_sqlite_file_never_both_accept(
    env: Env, nursery: trio.Nursery
) -> None:
    other = Store.open(f"sqlite:///{env.tmp}/server.db", env.keyring)
    try:
        await _race(env, nursery, env.server_store, other, 8)
        assert [_generation(env.tmp / "server.db", i) for i in range(8)] == [1] * 8
    finally:
        nursery.cancel_scope.cancel()
        other.close()


@pytest.mark.postgres
async def test_two_responders_on_one_postgresql_never_both_accept(
    tmp_path: Path, request: pytest.FixtureRequest, nursery: trio.Nursery
) -> None:
    cluster: PostgresCluster = request.getfixturevalue("postgres_cluster")
    url = cluster.create_database()
    kr = Keyring([MasterKey.generate()])
    a, b = Store.open(url, kr), Store.open(url, kr)
    c = Store.open(f"sqlite:///{tmp_path}/client.db", kr)
    try:
        env = Env(tmp_path, kr, a, c)
        await _race(env, nursery, a, b, 8)
        for i in range(8):
            r = a.lookup(env.creds[i].handle, time.time())
            assert r is None  # generation 0 is gone everywhere: exactly one accepted it
    finally:
        nursery.cancel_scope.cancel()
        for s in (a, b, c):
            s.close()
