"""``ikeshim.initiator.resume_and_install`` against the real responder service on loopback.

The stores are real SQLite stores; the XFRM side is a recording transport under the real
:class:`ikeshim.xfrm.XfrmOps` request code (the kernel's answers to these requests are
tested on a real kernel in UML, ``test_xfrm_kernel`` and ``test_e2e_resumption``): here the
subject is the orchestration -- what is installed when, what is undone when the durable
write or the install fails, and that the store moves on exactly when it must.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from ikeshim.errors import XfrmError
from ikeshim.initiator import StoreWriter, resume_and_install
from ikeshim.installer import build_policies
from ikeshim.netlink import Exchange, NetlinkMessage
from ikeshim.xfrm import XfrmOps
from ikeshim.xfrm.client import _RequestBuilder
from store.errors import StoreUnavailable
from tests.resume.net.conftest import (
    ID_R,
    PATIENT,
    CaptureInstaller,
    Env,
    eventually,
    id_i,
    open_env,
)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    """The responder service tests' environment (server and client SQLite stores)."""
    yield from open_env(tmp_path)


class RecordingXfrm(XfrmOps):
    """Records each request's operation; refuses the ``fail_at``-th one (1-based)."""

    def __init__(self, fail_at: int = 0) -> None:
        self._rb = _RequestBuilder()
        self.ops: list[str] = []
        self.fail_at = fail_at

    def _run(self, data: bytes, ex: Exchange) -> list[NetlinkMessage]:
        self.ops.append(ex.op)
        if len(self.ops) == self.fail_at:
            raise XfrmError(ex.op, errno.EINVAL, "refused by the test")
        return []


class FailingAdvance:
    """The client store, except that the durable write fails (disk gone)."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def advance_initiator(self, *args: Any) -> bool:
        raise StoreUnavailable("advance_initiator: disk I/O error")


def install_ops(sa: Any) -> list[str]:
    return ["add SA", "add SA"] + ["add policy"] * len(build_policies(sa))


@pytest.mark.parametrize("mode", ["inline", "writer", "overlap_to_thread", "overlap_writer"])
async def test_resumes_installs_and_ratchets(env: Env, nursery: trio.Nursery, mode: str) -> None:
    env.seed(1)
    cap = CaptureInstaller()
    svc = await env.start(nursery, installer=cap)
    with StoreWriter() as writer:
        kw: dict[str, Any] = {
            "writer": writer if mode.endswith("writer") else None,
            "overlap_write": mode.startswith("overlap"),
        }
        gens = []
        for _ in range(2):
            x = RecordingXfrm()
            r = await resume_and_install(
                env.client_store, ID_R, svc.addresses[0], x, id_i=id_i(0), config=PATIENT, **kw
            )
            assert r.resumed and r.installed is not None, r
            assert r.exchange is not None and r.exchange.sa is not None
            assert x.ops == install_ops(r.exchange.sa)
            assert r.installed.outbound.spi == r.exchange.sa.outbound.spi
            assert {"lookup", "exchange", "install", "ratchet"} <= set(r.timings)
            gens.append(r.exchange.used_generation)
            # the responder commits after message 3, then installs
            await eventually(lambda: len(cap.pairs) >= len(gens), "the responder's install")
    assert gens == [0, 1]  # the second run used the successor the first one stored


async def test_install_failure_rolls_back_and_the_store_still_advances(
    env: Env, nursery: trio.Nursery
) -> None:
    env.seed(1)
    cap = CaptureInstaller()
    svc = await env.start(nursery, installer=cap)
    x = RecordingXfrm(fail_at=3)  # the first policy
    r = await resume_and_install(env.client_store, ID_R, svc.addresses[0], x, config=PATIENT)
    assert r.outcome == "install_failed" and not r.resumed and "refused" in r.detail
    assert x.ops == ["add SA", "add SA", "add policy", "delete SA", "delete SA"]
    # message 3 was sent: the responder moved on, so the store had to follow
    await eventually(lambda: bool(cap.pairs), "the responder's install")
    r2 = await resume_and_install(
        env.client_store, ID_R, svc.addresses[0], RecordingXfrm(), config=PATIENT
    )
    assert r2.resumed and r2.exchange is not None and r2.exchange.used_generation == 1


@pytest.mark.parametrize("overlap", [False, True])
async def test_failed_durable_write_leaves_no_sas(
    env: Env, nursery: trio.Nursery, overlap: bool
) -> None:
    """Write first: nothing is installed.  Overlapped: what was installed is removed again."""
    env.seed(1)
    svc = await env.start(nursery, installer=CaptureInstaller())
    x = RecordingXfrm()
    store: Any = FailingAdvance(env.client_store)
    r = await resume_and_install(
        store, ID_R, svc.addresses[0], x, config=PATIENT, overlap_write=overlap
    )
    assert r.outcome == "store_error" and "disk I/O error" in r.detail
    assert r.installed is None and r.exchange is not None
    # message 3 never left: the responder still holds generation 0, and so does the cache
    again = await resume_and_install(
        env.client_store, ID_R, svc.addresses[0], RecordingXfrm(), config=PATIENT
    )
    assert again.resumed and again.exchange is not None and again.exchange.sa is not None
    assert again.exchange.used_generation == 0
    if not overlap:
        assert x.ops == []
        return
    sa = again.exchange.sa  # same parameters, so the same number of policies
    n = len(build_policies(sa))
    assert n >= 2
    assert x.ops == [*install_ops(sa), *["delete policy"] * n, "delete SA", "delete SA"]


async def test_no_credential_touches_nothing(env: Env) -> None:
    x = RecordingXfrm()
    r = await resume_and_install(env.client_store, ID_R, ("127.0.0.1", 9), x, config=PATIENT)
    assert r.outcome == "no_credential" and x.ops == []
