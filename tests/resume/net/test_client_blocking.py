"""The blocking client (``ikeresume resume``'s path) against the real service on loopback.

The service runs in this test's trio loop, so every blocking call goes through
``trio.to_thread.run_sync``; most tests run both clients to show they give the same outcomes.
"""

from __future__ import annotations

import functools
import json
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from resume.cli import EXIT_FALLBACK, EXIT_OK, main
from resume.events import Address
from resume.net.client import (
    ClientOptions,
    ResumeResult,
    keep_in_memory,
    keep_in_memory_blocking,
    resume_once,
    resume_once_blocking,
    resume_with_store,
    resume_with_store_blocking,
)
from store.keys import Keyring, MasterKey
from store.repository import Store

from .conftest import HANG, ID_R, PATIENT, SILENT, CaptureInstaller, Env, eventually, id_i

PATHS = ("async", "blocking")

WithStore = Callable[..., Awaitable[ResumeResult]]


async def _blocking_with_store(*args: Any, **kwargs: Any) -> ResumeResult:
    fn = functools.partial(resume_with_store_blocking, *args, **kwargs)
    result: ResumeResult = await trio.to_thread.run_sync(fn)
    return result


async def _blocking_once(*args: Any, **kwargs: Any) -> ResumeResult:
    fn = functools.partial(resume_once_blocking, *args, save=keep_in_memory_blocking, **kwargs)
    result: ResumeResult = await trio.to_thread.run_sync(fn)
    return result


WITH_STORE: dict[str, WithStore] = {"async": resume_with_store, "blocking": _blocking_with_store}
ONCE: dict[str, WithStore] = {
    "async": functools.partial(resume_once, save=keep_in_memory),
    "blocking": _blocking_once,
}


@pytest.fixture
def silent_port() -> Iterator[Address]:
    """A bound UDP port that never answers (datagrams queue up unread)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield ("127.0.0.1", s.getsockname()[1])


def _current(env: Env, i: int) -> tuple[int, int | None]:
    """The client cache's (current, kept previous) generation for client ``i``."""
    res = env.client_store.lookup_peer(ID_R, time.time(), id_i=id_i(i))
    assert res is not None and res.credential is not None
    prev = None if res.previous is None else res.previous.generation
    return res.credential.generation, prev


async def test_blocking_resumes_with_the_servers_keys_and_ratchets(
    env: Env, nursery: trio.Nursery
) -> None:
    env.seed(2)
    cap = CaptureInstaller()
    svc = await env.start(nursery, installer=cap)
    client_pairs = []
    for rnd in range(2):
        for i in range(2):
            r = await _blocking_with_store(
                env.client_store,
                ID_R,
                svc.addresses[0],
                options=ClientOptions(id_i=id_i(i), config=PATIENT),
            )
            assert r.resumed, r
            assert r.used_generation == rnd and r.retransmits == 0
            assert _current(env, i) == (rnd + 1, rnd)  # ratcheted, used generation kept
            client_pairs.append(r.sa)
            # the client returns once message 3 is sent: a next message 1 for this chain
            # before the commit would wait for it (a retransmission), so let it land first
            done = 2 * rnd + i + 1
            await eventually(lambda n=done: svc.metrics.commits.get("ok") >= n, "the commit")
    await eventually(lambda: len(cap.pairs) >= 4, "four installs")
    by_spi = {p.i_to_r.spi: p for p in cap.pairs}
    for cp in client_pairs:
        assert cp is not None
        sp = by_spi[cp.i_to_r.spi]
        assert sp.i_to_r == cp.i_to_r and sp.r_to_i == cp.r_to_i
    assert svc.metrics.commits.get("ok") == 4


@pytest.mark.parametrize("path", PATHS)
async def test_nack_and_no_credential(env: Env, nursery: trio.Nursery, path: str) -> None:
    env.seed(1, server=False)  # the server never saw this credential
    svc = await env.start(nursery)
    r = await WITH_STORE[path](
        env.client_store, ID_R, svc.addresses[0], options=ClientOptions(config=PATIENT)
    )
    assert (r.outcome, r.resumed, r.sa) == ("nack", False, None)
    assert _current(env, 0) == (0, None)  # a NACK leaves the cache alone
    r = await WITH_STORE[path](
        env.client_store, b"\x02other", svc.addresses[0], options=ClientOptions(config=PATIENT)
    )
    assert (r.outcome, r.detail) == ("no_credential", "no cached credential")


@pytest.mark.timing
@pytest.mark.parametrize("path", PATHS)
async def test_timeout_against_a_silent_port(env: Env, silent_port: Address, path: str) -> None:
    """Timing: both clients' real timers against a peer that never answers.  Every
    retransmission is due in the first 0.35 s and the give-up at 3 s, so the counts hold on
    a loaded host; the client never gives up early, and returns (no hang).  The exact
    schedule is tested on the sans-I/O Initiator with explicit times."""
    env.seed(1)
    t0 = time.monotonic()
    r = await WITH_STORE[path](
        env.client_store, ID_R, silent_port, options=ClientOptions(config=SILENT)
    )
    assert r.outcome == "timeout" and r.retransmits == SILENT.max_retransmits
    assert SILENT.timeout * 0.9 <= time.monotonic() - t0 < HANG
    assert _current(env, 0) == (0, None)


@pytest.mark.parametrize("path", PATHS)
async def test_socket_failure_is_a_network_outcome(env: Env, path: str) -> None:
    (cred,) = env.seed(1)
    r = await ONCE[path](
        cred, ("127.0.0.1", 9), options=ClientOptions(local=("192.0.2.1", 0), config=PATIENT)
    )
    assert r.outcome == "network" and r.detail.startswith("socket: ")


async def test_both_paths_give_the_same_outcomes(
    env: Env, nursery: trio.Nursery, silent_port: Address
) -> None:
    """Alternating clients share one ratchet, and agree on every outcome."""
    env.seed(1)
    env.seed(1, server=False)
    svc = await env.start(nursery, env.config(server={"natt_framing": True}))
    addr = svc.addresses[0]

    async def outcomes(path: str) -> list[tuple[str, int | None]]:
        run = WITH_STORE[path]
        out = []
        for who, server in (
            (id_i(0), addr),
            (id_i(1), addr),
            (id_i(0), silent_port),
            (b"\x02nobody", addr),
        ):
            config = SILENT if server == silent_port else PATIENT
            options = ClientOptions(id_i=who, natt=True, config=config)
            r = await run(env.client_store, ID_R, server, options=options)
            out.append((r.outcome, r.used_generation))
        return out

    first = await outcomes("async")
    second = await outcomes("blocking")
    assert first == [("resumed", 0), ("nack", None), ("timeout", None), ("no_credential", None)]
    assert second == [("resumed", 1), ("nack", None), ("timeout", None), ("no_credential", None)]
    assert _current(env, 0) == (2, 1)


# -- ikeresume resume, in process (a worker thread: the service owns this thread's loop) ------
HOOK_CALLS: list[dict[str, Any]] = []


def record_hook(description: dict[str, Any]) -> None:
    HOOK_CALLS.append(description)


def failing_hook(description: dict[str, Any]) -> None:
    raise RuntimeError("kernel says no")


@pytest.fixture
def keyed_env(tmp_path: Path) -> Iterator[tuple[Env, Path]]:
    """An :class:`Env` whose master key is also in a file, as the CLI needs it."""
    key = tmp_path / "master.key"
    key.write_text(MasterKey.generate().to_line() + "\n")
    kr = Keyring.from_file(key)
    ss = Store.open(f"sqlite:///{tmp_path}/server.db", kr)
    cs = Store.open(f"sqlite:///{tmp_path}/client.db", kr)
    try:
        yield Env(tmp_path, kr, ss, cs), key
    finally:
        ss.close()
        cs.close()


@pytest.mark.parametrize(
    ("install", "rc", "outcome"),
    [
        ([], EXIT_OK, "resumed"),
        (["--install", "hook", "--hook", f"python:{__name__}:record_hook"], EXIT_OK, "resumed"),
        (
            ["--install", "hook", "--hook", f"python:{__name__}:failing_hook"],
            EXIT_FALLBACK,
            "install_failed",
        ),
    ],
)
async def test_cli_resume_and_install(
    keyed_env: tuple[Env, Path],
    nursery: trio.Nursery,
    capsys: pytest.CaptureFixture[str],
    install: list[str],
    rc: int,
    outcome: str,
) -> None:
    env, key = keyed_env
    env.seed(1)
    svc = await env.start(nursery)
    host, port = svc.addresses[0]
    HOOK_CALLS.clear()
    argv = ["resume", "--server", f"{host}:{port}", "--peer", "fqdn:vpn.example.org"]
    argv += ["--db", f"{env.tmp}/client.db", "--key-file", str(key), "--json", *install]
    argv += ["--timeout", "60", "--rto", "10"]
    assert await trio.to_thread.run_sync(main, argv) == rc
    out = json.loads(capsys.readouterr().out)
    assert out["outcome"] == outcome and out["generation"] == 1
    if "record_hook" in " ".join(install):
        assert [c["i_to_r"]["spi"] for c in HOOK_CALLS] == [int(out["spi_out"], 16)]
