"""Post-quantum resumption over the real service (issue 22): UDP on loopback, real SQLite
stores on both sides, the durable ratchet, the install path, metrics and the
``require_pq_lineage`` policy.  Success paths use PATIENT (no timer can decide a verdict)."""

from __future__ import annotations

import dataclasses
import sqlite3
import time

import trio

from resume.credential import Credential, Lineage
from resume.net.client import ClientOptions, resume_with_store
from resume.testing import simulated_full_ike

from .conftest import ID_R, PATIENT, CaptureInstaller, Env, eventually, id_i

HYBRID = dataclasses.replace(PATIENT, mlkem="require")


def seed(env: Env, lineages: list[Lineage], now: float) -> list[Credential]:
    """Credential pairs as a full IKE with these lineages would leave them in both caches."""
    out = []
    for i, lineage in enumerate(lineages):
        c = dataclasses.replace(simulated_full_ike(id_i=id_i(i), id_r=ID_R), lineage=lineage)
        env.server_store.upsert_full_ike("responder", c, now)
        env.client_store.upsert_full_ike("initiator", c, now)
        out.append(c)
    return out


def server_row(env: Env, i: int) -> tuple[int, str]:
    con = sqlite3.connect(env.tmp / "server.db")
    try:
        row = con.execute(
            "SELECT generation, lineage FROM credentials WHERE role='responder' AND id_i=?",
            (id_i(i),),
        ).fetchone()
    finally:
        con.close()
    return int(row[0]), str(row[1])


async def test_hybrid_resumptions_through_several_ratchets(env: Env, nursery: trio.Nursery) -> None:
    """X25519 + ML-KEM-768 end to end, four generations deep for two clients: the same
    fresh keys on both sides every time, the ratchet durable on both, a classical chain
    turned pq-resumed by the first run and kept PQ by the next ones."""
    seed(env, [Lineage.CLASSICAL, Lineage.HYBRID_PQ], time.time())
    cap = CaptureInstaller()
    svc = await env.start(nursery, installer=cap)
    addr = svc.addresses[0]
    await eventually(lambda: svc.metrics.credentials.get("classical") == 1, "lineage gauge")
    assert svc.metrics.credentials.get("hybrid-pq") == 1
    client_pairs = []
    for gen in range(4):
        for i, after in ((0, "pq-resumed"), (1, "hybrid-pq")):
            opts = ClientOptions(id_i=id_i(i), config=HYBRID)
            r = await resume_with_store(env.client_store, ID_R, addr, options=opts)
            assert r.resumed, r
            assert (r.used_generation, r.ke) == (gen, "x25519+mlkem768")
            assert r.successor is not None and r.successor.lineage.value == after
            client_pairs.append(r.sa)
            # the client completes when it sends message 3; the server commits on receipt
            await eventually(lambda i=i, g=gen + 1, a=after: server_row(env, i) == (g, a),
                             f"client {i} at generation {gen + 1} on the server")  # fmt: skip
    await eventually(lambda: len(cap.pairs) >= 8, "eight installs")
    await eventually(lambda: svc.metrics.exchanges.get("resumed") == 8, "eight completions")
    by_spi = {p.i_to_r.spi: p for p in cap.pairs}
    keys = set()
    for cp in client_pairs:
        assert cp is not None
        sp = by_spi[cp.i_to_r.spi]
        assert (sp.i_to_r, sp.r_to_i) == (cp.i_to_r, cp.r_to_i)
        keys.add(cp.i_to_r.encr_key)
    assert len(keys) == 8  # fresh every run
    m = svc.metrics
    assert m.resumptions.get("x25519+mlkem768", "pq-resumed") == 4
    assert m.resumptions.get("x25519+mlkem768", "hybrid-pq") == 4
    # the client cache holds the PQ chains too (and the previous generation's lineage)
    got = env.client_store.lookup_peer(ID_R, time.time(), id_i=id_i(0))
    assert got is not None and got.credential is not None and got.previous is not None
    assert got.credential.lineage is Lineage.PQ_RESUMED
    assert got.credential.generation == 4
    # every ML-KEM entry was taken by its message 3
    assert all(lane.responder.describe()["mlkem_runs"] == 0 for lane in svc.lanes)
    text = svc.render_metrics()
    assert 'ikeresume_resumptions_total{ke="x25519+mlkem768",lineage="pq-resumed"} 4' in text


async def test_pq_lineage_policy_refuses_a_classical_chain_and_the_client_falls_back(
    env: Env, nursery: trio.Nursery
) -> None:
    seed(env, [Lineage.CLASSICAL, Lineage.HYBRID_PQ, Lineage.UNKNOWN], time.time())
    cfg = env.config(protocol={"require_pq_lineage": True})
    svc = await env.start(nursery, cfg)
    addr = svc.addresses[0]
    outcomes = []
    for i in range(3):
        opts = ClientOptions(id_i=id_i(i), config=dataclasses.replace(PATIENT, mlkem="offer"))
        r = await resume_with_store(env.client_store, ID_R, addr, options=opts)
        outcomes.append(r.outcome)
    # the NACK makes the client fall back at once (exit 3 of `ikeresume resume`); offering
    # ML-KEM does not save a classical chain: the policy judges the chain, not the run
    assert outcomes == ["nack", "resumed", "nack"]
    assert svc.metrics.exchanges.get("lineage") == 2
    await eventually(lambda: server_row(env, 1) == (1, "hybrid-pq"), "the PQ chain committed")
    assert server_row(env, 0) == (0, "classical")  # nothing consumed


async def test_a_client_requiring_ml_kem_falls_back_on_a_responder_that_refuses_it(
    env: Env, nursery: trio.Nursery
) -> None:
    seed(env, [Lineage.CLASSICAL], time.time())
    svc = await env.start(nursery, env.config(protocol={"allow_mlkem": False}))
    opts = ClientOptions(id_i=id_i(0), config=HYBRID)
    r = await resume_with_store(env.client_store, ID_R, svc.addresses[0], options=opts)
    assert r.outcome == "pq_refused" and not r.resumed
    assert server_row(env, 0) == (0, "classical")
    # offered, not required: a classical run, the chain stays classical
    opts = ClientOptions(id_i=id_i(0), config=dataclasses.replace(PATIENT, mlkem="offer"))
    r = await resume_with_store(env.client_store, ID_R, svc.addresses[0], options=opts)
    assert r.resumed and r.ke == "x25519"
    await eventually(lambda: server_row(env, 0) == (1, "classical"), "the classical run committed")
