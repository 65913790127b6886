"""The responder's install outbox in the service: a commit carries its SA pair, a crash
between commit and install is repaired at the next start-up, expired pairs are dropped.

The "crash" here is the service's task cancelled while its install is stuck (the process
dies before the install finished); ``tests/crash/test_sigkill.py`` kills real processes.
Each test runs on both engines: the native one commits the outbox row in Rust, in the
transaction of its compare-and-set.
"""

from __future__ import annotations

import dataclasses
import time

import pytest
import trio

from resume.initiator import InitiatorConfig
from resume.net.client import ClientOptions, resume_with_store
from resume.net.server import ResponderService
from resume.net.service import make_service
from resume.sa import SAPair
from store.policy import Policy

from .conftest import ID_R, PATIENT, CaptureInstaller, Env

DEADLINE = 30  # bounds a hang; never a verdict
#: the key exchanges of the committed run: an ML-KEM run goes through the outbox the same way
KE_CONFIGS = {
    "x25519": PATIENT,
    "x25519+mlkem768": dataclasses.replace(PATIENT, mlkem="require"),
}


@pytest.fixture(params=["python", "native"])
def engine(request: pytest.FixtureRequest) -> str:
    """The engine of every service a test starts."""
    from resume.native import available

    if request.param == "native" and not available():
        pytest.skip("the native core is not built")
    return str(request.param)


class StuckInstaller:
    """An install that never finishes (the process is killed in the middle of it)."""

    def __init__(self) -> None:
        self.started: list[SAPair] = []

    async def install(self, sa: SAPair) -> None:
        self.started.append(sa)
        await trio.sleep_forever()


def _outbox_rows(env: Env) -> int:
    with env.server_store.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM install_outbox").scalar_one())


async def _commit_then_die(
    env: Env, engine: str, config: InitiatorConfig = PATIENT
) -> tuple[SAPair, SAPair]:
    """A service commits one resumption and is gone before its install finished: the
    (client's, server's) SA pairs of that exchange."""
    stuck = StuckInstaller()
    async with trio.open_nursery() as doomed:
        svc = make_service(env.config(), env.server_store, installer=stuck, engine=engine)
        await doomed.start(svc.run)
        r = await resume_with_store(
            env.client_store, ID_R, svc.addresses[0], options=ClientOptions(config=config)
        )
        assert r.resumed and r.sa is not None
        assert r.ke == ("x25519+mlkem768" if config.mlkem == "require" else "x25519")
        with trio.fail_after(DEADLINE):
            while not stuck.started:
                await trio.sleep(0.01)
        doomed.cancel_scope.cancel()
    return r.sa, stuck.started[0]


def _same_keys(client: SAPair, server: SAPair) -> bool:
    return client.i_to_r == server.i_to_r and client.r_to_i == server.r_to_i


@pytest.mark.parametrize("ke", KE_CONFIGS)
async def test_a_pair_committed_but_not_installed_is_installed_before_serving(
    env: Env, nursery: trio.Nursery, engine: str, ke: str
) -> None:
    env.seed(1)
    client_sa, stuck_sa = await _commit_then_die(env, engine, KE_CONFIGS[ke])
    assert _same_keys(client_sa, stuck_sa)
    assert _outbox_rows(env) == 1  # the intent survived the "crash"
    cap = CaptureInstaller()
    svc = await env.start(
        nursery, env.config(server={"engine": engine}), installer=cap
    )  # returns once serving
    assert svc.outbox_replay.installed == 1 and svc.outbox_replay.expired == 0
    [replayed] = cap.pairs
    assert _same_keys(client_sa, replayed) and replayed.role == "responder"
    assert _outbox_rows(env) == 0
    # and the peers are in step: the next resumption works and is installed normally
    r = await resume_with_store(
        env.client_store, ID_R, svc.addresses[0], options=ClientOptions(config=KE_CONFIGS[ke])
    )
    assert r.resumed and r.used_generation == 1 and r.ke == ke
    with trio.fail_after(DEADLINE):
        while len(cap.pairs) < 2 or _outbox_rows(env):
            await trio.sleep(0.01)
    assert _same_keys(r.sa, cap.pairs[1])  # type: ignore[arg-type]


async def test_a_pair_whose_lifetime_passed_is_dropped_not_installed(
    env: Env, nursery: trio.Nursery, engine: str
) -> None:
    env.server_store.policy = Policy(max_chain_age=100.0)  # SAs get at most ~100 s
    env.seed(1)
    await _commit_then_die(env, engine)
    assert _outbox_rows(env) == 1
    cap = CaptureInstaller()
    later = ResponderService(
        env.config(), env.server_store, installer=cap, clock=lambda: time.time() + 200
    )
    svc = await nursery.start(later.run)
    assert svc.outbox_replay.expired == 1 and svc.outbox_replay.installed == 0
    assert cap.pairs == [] and _outbox_rows(env) == 0
    assert svc.metrics.installs.get("expired_not_installed") == 1


async def test_another_nodes_pairs_are_left_to_it(
    env: Env, nursery: trio.Nursery, engine: str
) -> None:
    env.seed(1)
    await _commit_then_die(env, engine)  # committed under this host's name
    cap = CaptureInstaller()
    other = env.config(install={"node": "gw-2.example"}, server={"engine": engine})
    svc = await env.start(nursery, other, installer=cap)
    assert svc.install_node == "gw-2.example"
    assert cap.pairs == [] and _outbox_rows(env) == 1


async def test_installed_pairs_leave_the_outbox_and_mode_none_writes_none(
    env: Env, nursery: trio.Nursery, engine: str
) -> None:
    env.seed(2)
    cap = CaptureInstaller()
    svc = await env.start(nursery, env.config(server={"engine": engine}), installer=cap)
    for i in range(2):
        opts = ClientOptions(config=PATIENT, id_i=env.creds[i].id_i)
        r = await resume_with_store(env.client_store, ID_R, svc.addresses[0], options=opts)
        assert r.resumed
    committer = svc.committer
    assert committer is not None
    # installed, then deleted by a later transaction; the committer thread counts the
    # deletion only after its transaction returns, so wait for the count too
    with trio.fail_after(DEADLINE):
        while len(cap.pairs) < 2 or _outbox_rows(env) or committer.stats.forgotten < 2:
            await trio.sleep(0.01)
    assert committer.stats.forgotten == 2
    svc.shutdown()

    env.seed(1)
    quiet = await env.start(
        nursery, env.config(install={"mode": "none"}, server={"engine": engine})
    )
    opts = ClientOptions(config=PATIENT, id_i=env.creds[2].id_i)
    r = await resume_with_store(env.client_store, ID_R, quiet.addresses[0], options=opts)
    assert r.resumed
    with trio.fail_after(DEADLINE):
        while quiet.metrics.commits.get("ok") < 1:
            await trio.sleep(0.01)
    assert _outbox_rows(env) == 0  # nothing installs here, so nothing is kept to install
