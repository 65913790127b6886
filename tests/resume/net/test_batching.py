"""The hot path's shortcuts: admission from the header, one wake-up per burst of completions,
lookups in one worker-thread hop per batch (the PostgreSQL path, exercised on SQLite).  The
brief memory of unknown handles: test_unknown_handle_nack.py."""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Callable

import trio

from resume.net.admission import Admission
from resume.net.client import ClientOptions, resume_with_store
from resume.net.config import LimitsSection, ListenAddr
from resume.net.lane import Lane
from resume.net.service import make_service
from resume.net.udp import UdpEndpoint
from resume.responder import Responder, ResponderConfig
from resume.wire import EXCHANGE_IKE_RESUME, FLAG_INITIATOR, FLAG_RESPONSE

from .conftest import HANG, ID_R, PATIENT, Env, Relay, eventually, id_i, message_id
from .test_service import _server_generation


def _server_handle(env: Env, i: int) -> bytes:
    con = sqlite3.connect(env.tmp / "server.db")
    try:
        row = con.execute(
            "SELECT handle FROM credentials WHERE role='responder' AND id_i=?", (id_i(i),)
        ).fetchone()
    finally:
        con.close()
    return bytes(row[0])


def _header(mid: int = 0, flags: int = FLAG_INITIATOR, version: int = 0x20) -> bytes:
    return (
        bytes(16) + bytes([33, version, EXCHANGE_IKE_RESUME, flags]) + struct.pack(">II", mid, 28)
    )


def test_admission_reasons_cheapest_first() -> None:
    adm = Admission(LimitsSection(per_source_rate=1.0, per_source_burst=2.0, max_pending=10))
    assert adm.admit(b"short", "10.0.0.1", 0.0, 0) == "malformed"
    assert adm.admit(_header(version=0x10), "10.0.0.1", 0.0, 0) == "not_resumption"
    bad_xchg = bytearray(_header())
    bad_xchg[18] = 34  # IKE_SA_INIT
    assert adm.admit(bytes(bad_xchg), "10.0.0.1", 0.0, 0) == "not_resumption"
    flags = FLAG_INITIATOR | FLAG_RESPONSE
    assert adm.admit(_header(flags=flags), "10.0.0.1", 0.0, 0) == "response_at_responder"
    assert adm.admit(_header(flags=0), "10.0.0.1", 0.0, 0) == "response_at_responder"
    assert adm.admit(_header(mid=2), "10.0.0.1", 0.0, 0) == "bad_message_id"
    assert adm.admit(_header(mid=1 << 24), "10.0.0.1", 0.0, 0) == "bad_message_id"
    # nothing so far was charged to the source: malformed input is dropped before buckets
    assert adm.admit(_header(), "10.0.0.1", 0.0, 0) is None
    assert adm.admit(_header(mid=1), "10.0.0.1", 0.0, 0) is None
    assert adm.admit(_header(), "10.0.0.1", 0.0, 0) == "rate_limited_source"
    # message 1 gets half the pending room, message 3 all of it
    assert adm.admit(_header(), "10.0.0.2", 0.0, 5) == "overload_new"
    assert adm.admit(_header(mid=1), "10.0.0.3", 0.0, 9) is None
    assert adm.admit(_header(mid=1), "10.0.0.4", 0.0, 10) == "overload"
    adm.draining = True
    assert adm.admit(_header(), "10.0.0.5", 0.0, 0) == "draining"
    assert adm.admit(_header(mid=1), "10.0.0.5", 0.0, 0) is None


def test_new_exchange_budget_spares_message_3() -> None:
    adm = Admission(LimitsSection(per_source_rate=1e6, per_source_burst=1e6, new_exchange_rate=10))
    verdicts = [adm.admit(_header(), f"10.0.{i >> 8}.{i & 255}", 0.0, 0) for i in range(50)]
    assert verdicts.count(None) == 1 and verdicts.count("rate_limited_new") == 49
    assert all(adm.admit(_header(mid=1), f"10.1.0.{i}", 0.0, 0) is None for i in range(50))


class CountingToken:
    def __init__(self) -> None:
        self.real = trio.lowlevel.current_trio_token()
        self.calls = 0

    def run_sync_soon(self, fn: Callable[..., object], *args: object) -> None:
        self.calls += 1
        self.real.run_sync_soon(fn, *args)


async def test_lane_wakes_once_per_burst_and_loses_nothing() -> None:
    token = CountingToken()
    with UdpEndpoint.bind(ListenAddr("127.0.0.1", 0)) as ep:
        lane = Lane(ep, Responder(ResponderConfig(), bytes(32)), "t", token)
        for i in range(100):  # a committed batch answered in one go
            lane.post(("commit", i, None))
        await lane.wake.wait()
        assert token.calls == 1 and len(lane.inbox) == 100
        # from another thread, racing the drain: every item still arrives
        got: list[int] = []

        def producer() -> None:
            for i in range(2000):
                lane.post(("commit", i, None))

        async with trio.open_nursery() as n:
            lane.inbox.clear()
            lane.wake = trio.Event()
            n.start_soon(trio.to_thread.run_sync, producer)
            with trio.fail_after(HANG):
                while len(got) < 2000:
                    await lane.wake.wait()
                    lane.wake = trio.Event()
                    while lane.inbox:
                        got.append(lane.inbox.popleft()[1])
        assert got == list(range(2000))
        assert token.calls <= 2001


async def test_thread_lookups_batched_success_nack_and_failure(
    env: Env, nursery: trio.Nursery
) -> None:
    """The non-inline path (PostgreSQL's): resumes, NACKs unknown handles, fails closed."""
    env.seed(6)
    env.seed(1, server=False)  # the server never saw client 6
    svc = make_service(env.config(), env.server_store, inline_lookups=False)
    await nursery.start(svc.run)
    assert not svc.link.inline
    results = {}

    async def one(i: int) -> None:
        results[i] = await resume_with_store(
            env.client_store,
            ID_R,
            svc.addresses[0],
            options=ClientOptions(id_i=id_i(i), config=PATIENT),
        )

    async with trio.open_nursery() as clients:
        for i in range(7):
            clients.start_soon(one, i)
    assert [results[i].outcome for i in range(7)] == ["resumed"] * 6 + ["nack"]
    assert svc.metrics.cache.get("miss") >= 1  # (a retransmitted message 1 asks again)
    # a client reports success once its message 3 is sent
    await eventually(lambda: svc.metrics.commits.get("ok") >= 6, "six commits")
    assert svc.metrics.commits.get("ok") == 6
    con = sqlite3.connect(env.tmp / "server.db")
    con.execute("DROP TABLE credentials")  # a broken database, not a mock
    con.commit()
    con.close()
    env.seed(1, server=False)  # a client with a credential, a server with no table
    r = await resume_with_store(
        env.client_store,
        ID_R,
        svc.addresses[0],
        options=ClientOptions(id_i=id_i(7), config=PATIENT),
    )
    assert r.outcome == "nack" and svc.metrics.cache.get("error") >= 1
    assert not svc.ready


async def test_one_database_read_per_resumption(env: Env, nursery: trio.Nursery) -> None:
    """Message 3 reuses message 1's credential inside the core (the service's default);
    a record revoked between message 1 and message 3 is still refused, by the commit."""
    env.seed(2)
    svc = await env.start(nursery)
    assert svc.responder_config.credential_cache_size > 0
    server, cache = svc.addresses[0], svc.metrics.cache
    for _round in range(2):
        for i in range(2):
            r = await resume_with_store(
                env.client_store, ID_R, server, options=ClientOptions(id_i=id_i(i), config=PATIENT)
            )
            assert r.resumed
    # the clients return once message 3 is sent; the responder commits right after
    await eventually(lambda: svc.metrics.exchanges.get("resumed") >= 4, "four commits")
    assert cache.get("hit") == 4  # message 1 only
    assert sum(lane.responder.stats["credential_cache_hit"] for lane in svc.lanes) == 4
    assert [_server_generation(env, i) for i in range(2)] == [2, 2]

    # revoke peer 0 while its message 3 is held back: the commit, not the copy, decides
    held: list[bytes] = []

    def hold_msg3(direction: str, data: bytes) -> str:
        if direction == "up" and message_id(data) == 1 and not held:
            held.append(data)
            return "hold"
        return "pass"

    relay = Relay(server, hold_msg3)
    via = await relay.start(nursery)
    r = await resume_with_store(
        env.client_store, ID_R, via, options=ClientOptions(id_i=id_i(0), config=PATIENT)
    )
    assert r.resumed  # the initiator completes when it sends message 3
    await eventually(lambda: bool(relay.held), "message 3 held by the relay")
    assert env.server_store.revoke(handle=_server_handle(env, 0)) == 1
    await relay.release()
    await eventually(lambda: svc.metrics.commits.get("conflict") >= 1, "the refused commit")
    assert _server_generation(env, 0) is None  # nothing was written back
    assert svc.metrics.exchanges.get("resumed") == 4
