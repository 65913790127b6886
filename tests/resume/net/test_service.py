"""The responder service and the client over loopback, with real SQLite stores."""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import sys

import pytest
import trio

from resume.initiator import InitiatorConfig
from resume.net.client import ClientOptions, keep_in_memory, resume_once, resume_with_store

from .conftest import (
    ID_R,
    PATIENT,
    SILENT,
    CaptureInstaller,
    Env,
    Relay,
    eventually,
    id_i,
    lossy,
    message_id,
)


async def _http(port: int, path: str) -> tuple[int, str]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        buf = b""
        while chunk := await stream.receive_some(65536):
            buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def _server_generation(env: Env, i: int) -> int | None:
    con = sqlite3.connect(env.tmp / "server.db")
    try:
        row = con.execute(
            "SELECT generation FROM credentials WHERE role='responder' AND id_i=?", (id_i(i),)
        ).fetchone()
    finally:
        con.close()
    return None if row is None else int(row[0])


async def test_success_ratchet_and_matching_keys(env: Env, nursery: trio.Nursery) -> None:
    env.seed(3)
    cap = CaptureInstaller()
    svc = await env.start(nursery, installer=cap)
    addr = svc.addresses[0]
    client_pairs = []
    for _round in range(2):
        for i in range(3):
            r = await resume_with_store(
                env.client_store, ID_R, addr, options=ClientOptions(id_i=id_i(i), config=PATIENT)
            )
            assert r.resumed, r
            assert r.used_generation == _round
            client_pairs.append(r.sa)
    await eventually(lambda: len(cap.pairs) >= 6, "six installs")
    assert [_server_generation(env, i) for i in range(3)] == [2, 2, 2]
    m = svc.metrics
    assert m.exchanges.get("resumed") == 6
    assert m.commits.get("ok") == 6
    assert m.latency.count == 6
    # both halves of every resumption derived the same, fresh keys
    by_spi = {p.i_to_r.spi: p for p in cap.pairs}
    spis = set()
    for cp in client_pairs:
        assert cp is not None
        sp = by_spi[cp.i_to_r.spi]
        assert sp.role == "responder" and cp.role == "initiator"
        assert sp.i_to_r == cp.i_to_r and sp.r_to_i == cp.r_to_i
        spis |= {cp.i_to_r.spi, cp.r_to_i.spi}
    assert len(spis) == 12  # fresh SPIs every time
    status, body = await _http(svc.http_port or 0, "/metrics")
    assert status == 200 and 'ikeresume_exchanges_total{outcome="resumed"} 6' in body
    assert (await _http(svc.http_port or 0, "/readyz"))[0] == 200
    assert (await _http(svc.http_port or 0, "/healthz"))[0] == 200


async def test_nack_for_unknown_credential(env: Env, nursery: trio.Nursery) -> None:
    env.seed(1, server=False)  # the client has a credential the server never saw
    svc = await env.start(nursery)
    r = await resume_with_store(
        env.client_store, ID_R, svc.addresses[0], options=ClientOptions(config=PATIENT)
    )
    assert r.outcome == "nack" and not r.resumed
    assert svc.metrics.cache.get("miss") == 1
    assert svc.metrics.exchanges.get("unknown_or_refused") == 1
    nothing = await resume_with_store(env.client_store, b"\x02other", svc.addresses[0])
    assert nothing.outcome == "no_credential"


async def test_store_failure_fails_closed(env: Env, nursery: trio.Nursery) -> None:
    env.seed(1)
    svc = await env.start(nursery)
    con = sqlite3.connect(env.tmp / "server.db")
    con.execute("DROP TABLE credentials")  # a broken database, not a mock
    con.commit()
    con.close()
    r = await resume_with_store(
        env.client_store, ID_R, svc.addresses[0], options=ClientOptions(config=PATIENT)
    )
    assert r.outcome == "nack"
    assert svc.metrics.cache.get("error") == 1
    assert not svc.ready
    assert (await _http(svc.http_port or 0, "/readyz"))[0] == 503


async def test_retransmission_after_lost_messages(env: Env, nursery: trio.Nursery) -> None:
    env.seed(2)
    svc = await env.start(nursery)
    for lose in ("up", "down"):  # message 1 lost, then message 2 lost
        dropped = []

        def decide(direction: str, data: bytes, lose: str = lose, dropped: list[int] = dropped):
            if direction == lose and not dropped:
                dropped.append(1)
                return "drop"
            return "pass"

        relay = Relay(svc.addresses[0], decide)
        at = await relay.start(nursery)
        i = 0 if lose == "up" else 1
        r = await resume_with_store(
            env.client_store, ID_R, at, options=ClientOptions(id_i=id_i(i), config=lossy())
        )
        assert r.resumed and r.retransmits == 1, (lose, r, relay.log)
    await eventually(lambda: svc.metrics.exchanges.get("resumed") >= 2, "two commits")
    # the lost message 2 was answered from the response cache, without a second lookup
    assert svc.lanes[0].responder.stats["retransmit_answered"] == 1


async def test_lost_message_3_does_not_strand_the_client(env: Env, nursery: trio.Nursery) -> None:
    env.seed(1)
    svc = await env.start(nursery)
    drop3 = {"on": True}

    def decide(direction: str, data: bytes) -> str:
        return "drop" if drop3["on"] and direction == "up" and message_id(data) == 1 else "pass"

    relay = Relay(svc.addresses[0], decide)
    at = await relay.start(nursery)
    r1 = await resume_with_store(env.client_store, ID_R, at, options=ClientOptions(config=PATIENT))
    assert r1.resumed  # the initiator cannot know message 3 was lost
    await eventually(lambda: ("up", 1, "drop") in relay.log, "message 3 dropped")
    assert svc.metrics.exchanges.get("resumed") == 0
    assert _server_generation(env, 0) == 0
    drop3["on"] = False
    # next time: the successor is unknown to the responder (NACK), the kept previous works
    r2 = await resume_with_store(env.client_store, ID_R, at, options=ClientOptions(config=PATIENT))
    assert r2.resumed and r2.used_generation == 0
    # the client returns once message 3 is sent; the responder commits right after
    await eventually(lambda: svc.metrics.exchanges.get("resumed") >= 1, "the first commit")
    r3 = await resume_with_store(env.client_store, ID_R, at, options=ClientOptions(config=PATIENT))
    assert r3.resumed and r3.used_generation == 1
    await eventually(lambda: svc.metrics.exchanges.get("resumed") >= 2, "the second commit")
    assert _server_generation(env, 0) == 2


async def _restart_between_2_and_3(env: Env, nursery: trio.Nursery, cfg: InitiatorConfig):
    """Message 2 from one responder process, message 3 to its restarted successor."""
    first = await env.start(nursery, env.config())
    port = first.addresses[0][1]

    def decide(direction: str, data: bytes) -> str:
        return "hold" if direction == "up" and message_id(data) == 1 else "pass"

    relay = Relay(("127.0.0.1", port), decide)
    at = await relay.start(nursery)
    r = await resume_with_store(env.client_store, ID_R, at, options=ClientOptions(config=cfg))
    assert r.resumed  # message 3 is in flight (sent once the successor was durable)
    await eventually(lambda: bool(relay.held), "message 3 held by the relay")
    assert len(relay.held) == 1
    first.shutdown()
    await eventually(lambda: first.lanes[0].endpoint.sock.fileno() == -1, "the old socket closed")
    # a new process: same server secret file, same database, same port, no shared memory
    second = await env.start(nursery, env.config(server={"listen": [f"127.0.0.1:{port}"]}))
    relay.decide = lambda direction, data: "pass"
    await relay.release()
    # the late message 3 has been handled (answered or refused) by the new process
    await eventually(lambda: second.lanes[0].responder.stats["datagrams"] >= 1, "message 3")
    await eventually(lambda: second.pending == 0, "message 3's outcome")
    return second, at


async def test_restart_between_messages_stateless_without_x25519(
    env: Env, nursery: trio.Nursery
) -> None:
    """Without X25519 everything message 3 needs is recomputed from the server secret."""
    env.seed(1)
    cfg = InitiatorConfig(initial_rto=10.0, max_retransmits=3, timeout=60.0, use_x25519=False)
    second, _ = await _restart_between_2_and_3(env, nursery, cfg)
    await eventually(lambda: second.metrics.exchanges.get("resumed") >= 1, "the commit")
    assert _server_generation(env, 0) == 1


async def test_restart_between_messages_with_x25519_costs_one_retry(
    env: Env, nursery: trio.Nursery
) -> None:
    """With X25519 the responder's per-tick key died with the old process (forward
    secrecy): the late message 3 is refused, nothing is committed, and the client's next
    attempt falls back to the kept previous generation and succeeds -- never stranded."""
    env.seed(1)
    second, at = await _restart_between_2_and_3(env, nursery, PATIENT)
    assert second.metrics.exchanges.get("resumed") == 0
    assert _server_generation(env, 0) == 0
    r = await resume_with_store(env.client_store, ID_R, at, options=ClientOptions(config=PATIENT))
    assert r.resumed and r.used_generation == 0  # the retry with the previous generation
    await eventually(lambda: second.metrics.exchanges.get("resumed") >= 1, "the commit")
    assert _server_generation(env, 0) == 1


async def test_garbage_is_dropped_and_counted(env: Env, nursery: trio.Nursery) -> None:
    env.seed(1)
    svc = await env.start(nursery)
    addr = svc.addresses[0]
    rnd = random.Random(4)
    header = bytes(16) + bytes([33, 0x20, 240, 0x08]) + (0).to_bytes(4, "big")
    junk = [b"", b"\x00", os.urandom(27), os.urandom(3000)]
    junk += [bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(28, 300))) for _ in range(200)]
    # well-framed headers with garbage bodies reach the core and are dropped there
    junk += [header + (28 + n).to_bytes(4, "big") + os.urandom(n) for n in range(0, 200, 7)]
    junk += [bytes(16) + bytes([33, 0x20, 240, 0x20]) + bytes(8)]  # a "response"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for j in junk:
            s.sendto(j, addr)
    r = await resume_with_store(env.client_store, ID_R, addr, options=ClientOptions(config=PATIENT))
    assert r.resumed  # the service is alive and unharmed
    early = sum(svc.metrics.drops.values.values())
    core = svc.lanes[0].responder.stats
    assert early + core["drop_malformed"] + core["nack"] >= len(junk)
    await eventually(lambda: svc.metrics.exchanges.get("resumed") >= 1, "the commit")
    assert svc.metrics.datagrams.get(svc.lanes[0].name) == len(junk) + 2
    assert core["msg1"] == 1  # no garbage became an exchange


async def test_per_source_limit_protects_other_sources(env: Env, nursery: trio.Nursery) -> None:
    env.seed(1)
    cfg = env.config(limits={"per_source_rate": 5.0, "per_source_burst": 5.0})
    svc = await env.start(nursery, cfg)
    addr = svc.addresses[0]
    fake = bytes(16) + bytes([33, 0x20, 240, 0x08]) + bytes(4) + (60).to_bytes(4, "big")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", 0))
        for _ in range(200):
            s.sendto(fake + os.urandom(32), addr)
    await eventually(lambda: svc.metrics.drops.get("rate_limited_source") >= 190, "the drops")
    cred = env.creds[0]
    opts = ClientOptions(config=PATIENT, local=("127.0.0.3", 0))
    r = await resume_once(cred, addr, options=opts, save=keep_in_memory)
    assert r.resumed


async def test_natt_framing_end_to_end(env: Env, nursery: trio.Nursery) -> None:
    env.seed(1)
    svc = await env.start(nursery, env.config(server={"natt_framing": True}))
    plain = await resume_once(
        env.creds[0], svc.addresses[0], options=ClientOptions(config=SILENT), save=keep_in_memory
    )
    assert plain.outcome == "timeout"  # unframed datagrams are not IKE on a NAT-T port
    ep = svc.lanes[0].endpoint
    await eventually(lambda: ep.drops.get("natt_not_ike", 0) >= 1, "the NAT-T drop")
    r = await resume_with_store(
        env.client_store, ID_R, svc.addresses[0], options=ClientOptions(natt=True, config=PATIENT)
    )
    assert r.resumed


async def test_ipv6_loopback(env: Env, nursery: trio.Nursery) -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    env.seed(1)
    svc = await env.start(nursery, env.config(server={"listen": ["[::1]:0", "127.0.0.1:0"]}))
    v6 = next(a for a in svc.addresses if ":" in a[0])
    r = await resume_with_store(env.client_store, ID_R, v6, options=ClientOptions(config=PATIENT))
    assert r.resumed


async def test_shutdown_with_exchanges_in_flight(env: Env, nursery: trio.Nursery) -> None:
    """Drain while exchanges are in flight: every exchange a client saw complete was
    committed durably, every other one left its credential untouched, and message 1s that
    arrive while draining are dropped.  Event-driven: the shutdown starts once a few
    clients have resumed and others are still running; the late group starts after it."""
    n_early, n_late = 30, 10
    env.seed(n_early + n_late)
    svc = await env.start(nursery)
    addr = svc.addresses[0]
    results: dict[int, object] = {}
    # an early client whose message 1 meets the drain is dropped and gives up at 5 s; one
    # served before it completes (no retransmission in between: RTO 10 s)
    early = InitiatorConfig(initial_rto=10.0, max_retransmits=1, timeout=5.0)
    # the late group meets a draining service that drops message 1: it can only time out
    quick = InitiatorConfig(initial_rto=0.05, max_retransmits=2, timeout=1.0)

    async def one(i: int, cfg: InitiatorConfig) -> None:
        results[i] = await resume_with_store(
            env.client_store, ID_R, addr, options=ClientOptions(id_i=id_i(i), config=cfg)
        )

    async with trio.open_nursery() as clients:
        for i in range(n_early):
            clients.start_soon(one, i, early)
        await eventually(lambda: svc.metrics.exchanges.get("resumed") >= 3, "a few resumptions")
        svc.shutdown()
        assert not svc.ready
        for i in range(n_early, n_early + n_late):
            clients.start_soon(one, i, quick)
    await eventually(lambda: svc.committer is None, "the drain")
    resumed = [i for i, r in results.items() if getattr(r, "resumed", False)]
    refused = [i for i, r in results.items() if not getattr(r, "resumed", False)]
    assert len(resumed) >= 3 and len(refused) >= n_late, (len(resumed), len(refused))
    for i in resumed:  # every exchange the client saw complete was committed durably
        assert _server_generation(env, i) == 1, i
    for i in refused:
        assert _server_generation(env, i) == 0, i
        assert results[i].outcome == "timeout"  # type: ignore[attr-defined]
    assert svc.metrics.drops.get("draining") >= n_late


async def test_failed_install_is_counted_not_fatal(env: Env, nursery: trio.Nursery) -> None:
    """install = "xfrm" on the host kernel, which has no ESP (or no CAP_NET_ADMIN): the
    kernel refuses, the failure is counted and logged, the service keeps serving."""
    env.seed(2)
    svc = await env.start(nursery, env.config(install={"mode": "xfrm", "hook_timeout": 5}))
    for i in range(2):
        r = await resume_with_store(
            env.client_store,
            ID_R,
            svc.addresses[0],
            options=ClientOptions(id_i=id_i(i), config=PATIENT),
        )
        assert r.resumed
    installs = svc.metrics.installs
    await eventually(lambda: installs.get("failed") + installs.get("ok") >= 2, "two installs")
    assert svc.metrics.installs.get("failed") == 2
    assert svc.ready


async def test_hook_receives_the_responder_sa(env: Env, nursery: trio.Nursery) -> None:
    env.seed(1)
    out = env.tmp / "hook.json"
    script = env.tmp / "hook.py"
    script.write_text(f"import sys\nopen({str(out)!r}, 'w').write(sys.stdin.read())\n")
    cfg = env.config(install={"mode": "hook", "hook": f"{sys.executable} {script}"})
    svc = await env.start(nursery, cfg)
    r = await resume_with_store(
        env.client_store, ID_R, svc.addresses[0], options=ClientOptions(config=PATIENT)
    )
    assert r.resumed and r.sa is not None
    await eventually(lambda: svc.metrics.installs.get("ok") >= 1, "the hook's install")
    desc = json.loads(out.read_text())
    assert desc["role"] == "responder"
    assert desc["i_to_r"]["spi"] == r.sa.i_to_r.spi
    assert desc["i_to_r"]["encr_key"] == r.sa.i_to_r.encr_key.hex()
