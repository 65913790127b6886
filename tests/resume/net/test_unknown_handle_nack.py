"""A message 1 for a handle the store reported unknown moments ago gets its NACK (spec 6.2
step 6) from the service's memory of misses: no database read, no silent drop.

Before, admission dropped it, so the initiator waited out its whole timeout before falling
back to a full IKE.  Every verdict here is an outcome (NACK, resumed), never a duration:
the initiator waits PATIENTly (its timeout only bounds a hang), and the memory's expiry is
waited out on the wall clock, which only moves forward.
"""

from __future__ import annotations

import time

import pytest
import trio

from resume.net.client import ClientOptions, resume_with_store

from .conftest import ID_R, PATIENT, Env


async def test_a_remembered_miss_is_nacked_without_a_database_read(
    env: Env, nursery: trio.Nursery
) -> None:
    (cred,) = env.seed(1, server=False)
    svc = await env.start(nursery, env.config(store={"miss_reuse_seconds": 3600.0}))
    server = svc.addresses[0]
    opts = ClientOptions(config=PATIENT)
    first = await resume_with_store(env.client_store, ID_R, server, options=opts)
    assert first.outcome == "nack" and svc.metrics.cache.get("miss") == 1
    env.server_store.upsert_full_ike("responder", cred, time.time())  # a full IKE landed
    again = await resume_with_store(env.client_store, ID_R, server, options=opts)
    assert again.outcome == "nack"  # answered at once, not a timeout, and not accepted
    assert svc.metrics.cache.get("miss") == 1  # no database read for it
    assert svc.metrics.cache.get("miss_recent") >= 1


@pytest.mark.timing
async def test_the_memory_expires_and_then_the_handle_resumes(
    env: Env, nursery: trio.Nursery
) -> None:
    """Timing: the memory's expiry is the subject, so real seconds pass; the verdict does not
    depend on speed (the wait ends only once the wall clock is past the expiry)."""
    (cred,) = env.seed(1, server=False)
    memory = 0.5
    svc = await env.start(nursery, env.config(store={"miss_reuse_seconds": memory}))
    server = svc.addresses[0]
    opts = ClientOptions(config=PATIENT)
    first = await resume_with_store(env.client_store, ID_R, server, options=opts)
    assert first.outcome == "nack"
    answered = time.time()  # the miss was remembered before this, until at most + memory
    env.server_store.upsert_full_ike("responder", cred, time.time())
    while time.time() <= answered + memory:
        await trio.sleep(memory)
    ok = await resume_with_store(env.client_store, ID_R, server, options=opts)
    assert ok.resumed and svc.metrics.cache.get("hit") >= 1

