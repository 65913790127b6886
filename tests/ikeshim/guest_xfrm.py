"""XFRM client checks that run inside UML (a kernel with ESP), one boot for all of them.

Each ``check_*`` raises on failure; ``tests/ikeshim/test_xfrm_kernel.py`` reports them.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import socket
import time
from typing import Any

from ikeshim.errors import XfrmError, XfrmExistsError, XfrmNotFoundError, XfrmPermissionError
from ikeshim.installer import (
    InstalledSA,
    InstallOptions,
    build_policies,
    build_states,
    install_sa_pair,
    remove_sa_pair,
)
from ikeshim.xfrm import (
    XFRM_MODE_TRANSPORT,
    XFRM_MODE_TUNNEL,
    XFRM_POLICY_IN,
    XFRM_POLICY_OUT,
    Algo,
    Encap,
    LifetimeCfg,
    LifetimeCur,
    Mark,
    PolicyEvent,
    SAEvent,
    SAExpireEvent,
    SAKey,
    Selector,
    Template,
    XfrmEventSocket,
    XfrmPolicy,
    XfrmSocket,
    XfrmState,
)
from resume.sa import Lifetimes, Mode, TrafficSelector
from tests.ikeshim.caps import run_without_net_admin
from tests.ikeshim.pairs import SUITES, make_pair, make_params


def setup_each() -> None:
    with XfrmSocket() as x:
        x.flush_sas()
        x.flush_policies()


def _comparable(st: XfrmState) -> XfrmState:
    return dataclasses.replace(st, curlft=LifetimeCur(), stats_replay_window=0, seq=0)


def _states_for_roundtrip() -> list[XfrmState]:
    """A spread of SAs exercising every field we encode."""
    out: list[XfrmState] = []
    spi = 0x1000
    algos = [
        (None, None, Algo("rfc4106(gcm(aes))", os.urandom(20), 128)),
        (None, None, Algo("rfc4106(gcm(aes))", os.urandom(36), 128)),
        (None, None, Algo("rfc7539esp(chacha20,poly1305)", os.urandom(36), 128)),
        (Algo("cbc(aes)", os.urandom(16)), Algo("hmac(sha256)", os.urandom(32), 128), None),
        (Algo("cbc(aes)", os.urandom(32)), Algo("hmac(sha384)", os.urandom(48), 192), None),
        (Algo("cbc(aes)", os.urandom(32)), Algo("hmac(sha512)", os.urandom(64), 256), None),
    ]
    addrs = [("10.1.0.1", "10.1.0.2"), ("2001:db8::1", "2001:db8::2")]
    for crypt, auth, aead in algos:
        for src, dst in addrs:
            for mode in (XFRM_MODE_TRANSPORT, XFRM_MODE_TUNNEL):
                spi += 1
                fam = socket.AF_INET6 if ":" in src else socket.AF_INET
                out.append(
                    XfrmState(
                        src=src,
                        dst=dst,
                        spi=spi,
                        mode=mode,
                        reqid=spi + 7,
                        replay_window=32 if spi % 2 else 128,
                        selector=Selector.hosts(src, dst, 17)
                        if mode == XFRM_MODE_TRANSPORT
                        else Selector(fam),
                        crypt=crypt,
                        auth=auth,
                        aead=aead,
                        encap=Encap(4500, 4501) if fam == socket.AF_INET and spi % 3 == 0 else None,
                        lifetime=LifetimeCfg(
                            soft_bytes=10_000_000,
                            hard_bytes=20_000_000,
                            soft_packets=1000,
                            hard_packets=2000,
                            soft_add_seconds=3000,
                            hard_add_seconds=3600,
                            soft_use_seconds=None,
                            hard_use_seconds=7200,
                        ),
                        mark=Mark(spi, 0xFFFF) if spi % 4 == 0 else None,
                        if_id=spi if spi % 5 == 0 else None,
                        esn=spi % 7 == 0,
                    )
                )
    return out


def check_sa_roundtrip_every_field() -> dict[str, Any]:
    states = _states_for_roundtrip()
    with XfrmSocket() as x:
        for st in states:
            x.add_sa(st)
        for st in states:
            got = x.get_sa(st.key())
            assert _comparable(got) == st, f"GET differs:\n sent {st}\n got  {got}"
        dumped = {(d.dst, d.spi): d for d in x.dump_sas()}
        assert len(dumped) == len(states), (len(dumped), len(states))
        for st in states:
            d = _comparable(dumped[(st.dst, st.spi)])
            assert d == st, f"dump differs:\n sent {st}\n got  {d}"
            # Keys are visible only here; they must be byte-identical.
            for a, b in ((st.aead, d.aead), (st.crypt, d.crypt), (st.auth, d.auth)):
                assert (a is None and b is None) or (a and b and a.key == b.key)
    return {"sas": len(states)}


def check_policy_roundtrip_every_field() -> dict[str, Any]:
    pols = [
        XfrmPolicy(
            selector=Selector(
                socket.AF_INET, "10.2.0.0", "10.1.0.0", 16, 24, 6, 443, 0xFFFF, 1024, 0xFC00
            ),
            dir=XFRM_POLICY_OUT,
            priority=1234,
            templates=(
                Template(socket.AF_INET, XFRM_MODE_TUNNEL, 77, dst="192.0.2.2", src="192.0.2.1"),
            ),
            lifetime=LifetimeCfg(hard_add_seconds=100, soft_add_seconds=90),
            mark=Mark(5, 0xFF),
            if_id=9,
        ),
        XfrmPolicy(
            selector=Selector.hosts("2001:db8::2", "2001:db8::1"),
            dir=XFRM_POLICY_IN,
            priority=99,
            templates=(Template(socket.AF_INET6, XFRM_MODE_TRANSPORT, 78),),
        ),
    ]
    with XfrmSocket() as x:
        for p in pols:
            x.add_policy(p)
        dumped = x.dump_policies()
        assert len(dumped) == len(pols), dumped
        for p in pols:
            got = x.get_policy(p.key())
            norm = dataclasses.replace(got, index=0, curlft=LifetimeCur())
            assert norm == p, f"policy differs:\n sent {p}\n got  {norm}"
    return {"policies": len(pols)}


def check_typed_errors() -> None:
    st = _states_for_roundtrip()[0]
    with XfrmSocket() as x:
        x.add_sa(st)
        try:
            x.add_sa(st)
        except XfrmExistsError as exc:
            assert exc.errno == errno.EEXIST and "already exists" in str(exc)
        else:
            raise AssertionError("duplicate SA accepted")
        x.delete_sa(st.key())
        try:
            x.delete_sa(st.key())
        except XfrmNotFoundError as exc:
            assert exc.errno in (errno.ENOENT, errno.ESRCH)
        else:
            raise AssertionError("deleting a missing SA succeeded")
        bad = dataclasses.replace(st, aead=Algo("rfc4106(gcm(nosuchcipher))", b"k" * 20, 128))
        try:
            x.add_sa(bad)
        except XfrmError as exc:
            assert exc.errno != 0 and "add SA" in str(exc), exc
        else:
            raise AssertionError("unknown algorithm accepted")


def check_update_sa() -> None:
    st = _states_for_roundtrip()[0]
    with XfrmSocket() as x:
        x.add_sa(st)
        newer = dataclasses.replace(st, lifetime=LifetimeCfg(hard_add_seconds=42))
        x.update_sa(newer)
        assert x.get_sa(st.key()).lifetime.hard_add_seconds == 42


def check_dump_many_sas_multipart() -> dict[str, Any]:
    n = 2000
    key = os.urandom(20)
    with XfrmSocket() as x:
        t0 = time.monotonic()
        for i in range(n):
            x.add_sa(
                XfrmState(
                    src="10.9.0.1",
                    dst=f"10.{8 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}",
                    spi=0x20000 + i,
                    aead=Algo("rfc4106(gcm(aes))", key, 128),
                    reqid=i,
                )
            )
        t_add = time.monotonic() - t0
        t0 = time.monotonic()
        dumped = x.dump_sas()
        t_dump = time.monotonic() - t0
        ex = x.last_exchange
        assert ex is not None and ex.datagrams > 1, "2000 SAs fit one datagram?"
        assert sorted(d.spi for d in dumped) == [0x20000 + i for i in range(n)]
        assert all(d.aead is not None and d.aead.key == key for d in dumped)
        # The kernel-side address filter (used to find a replaced session's SAs).
        one = x.dump_sas(between=("10.9.0.1", "10.8.1.7"))
        assert [d.spi for d in one] == [0x20000 + 0x107], [d.spi for d in one]
        assert x.dump_sas(between=("10.8.1.7", "10.9.0.1")) == []
    return {
        "n": n,
        "datagrams": ex.datagrams,
        "add_s": round(t_add, 3),
        "dump_s": round(t_dump, 3),
        "filtered": len(one),
    }


def _kernel_snapshot(x: XfrmSocket) -> tuple[list[Any], list[Any]]:
    sas = sorted((s.dst, s.spi) for s in x.dump_sas())
    pols = sorted(
        repr(dataclasses.replace(p, index=0, curlft=LifetimeCur())) for p in x.dump_policies()
    )
    return sas, pols


def _tunnel_pair(role: str = "initiator", spis: tuple[int, int] = (0xA1, 0xA2)) -> Any:
    params = make_params(
        "cbc-sha256",
        mode=Mode.TUNNEL,
        tsi=(
            TrafficSelector.from_network("10.1.0.0/24"),
            TrafficSelector.from_network("10.3.0.0/24"),
        ),
        tsr=(TrafficSelector.from_network("10.2.0.0/24"),),
    )
    return make_pair(params, role, spis=spis, lifetimes=Lifetimes(3000, 3600, None, 10**9))


def check_install_and_remove() -> dict[str, Any]:
    pair = _tunnel_pair()
    with XfrmSocket() as x:
        before = _kernel_snapshot(x)
        inst = install_sa_pair(x, pair)
        sas = {s.spi: s for s in x.dump_sas()}
        assert set(sas) == {0xA1, 0xA2}
        assert sas[0xA1].src == "192.0.2.1" and sas[0xA1].dst == "192.0.2.2"  # outbound
        assert sas[0xA2].dst == "192.0.2.1"  # inbound
        assert sas[0xA1].lifetime.hard_add_seconds == 3600
        assert sas[0xA1].lifetime.hard_bytes == 10**9
        assert sas[0xA1].replay_window == 128
        pols = x.dump_policies()
        # 2 local TS x 1 remote TS x (out, in, fwd)
        assert len(pols) == 6, pols
        assert all(p.templates[0].reqid == inst.reqid for p in pols)
        remove_sa_pair(x, inst)
        assert _kernel_snapshot(x) == before
    return {"policies": len(pols)}


class FailingSocket(XfrmSocket):
    """A real kernel socket whose N-th mutating call fails (after reaching the kernel or not)."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise XfrmError("injected", errno.EIO, "injected failure")

    def add_sa(self, sa: XfrmState, *, update: bool = False) -> None:
        self._maybe_fail()
        super().add_sa(sa, update=update)

    def add_policy(self, pol: XfrmPolicy, *, update: bool = False) -> None:
        self._maybe_fail()
        super().add_policy(pol, update=update)


def check_rollback_at_every_step() -> dict[str, Any]:
    pair = _tunnel_pair()
    steps = 2 + len(build_policies(pair))
    with XfrmSocket() as x:
        # A pre-existing policy with the same selector as one of ours: it must be restored.
        prior = dataclasses.replace(build_policies(pair)[0], priority=7, templates=())
        x.add_policy(prior)
        before = _kernel_snapshot(x)
        for k in range(1, steps + 1):
            with FailingSocket(k) as fx:
                try:
                    install_sa_pair(fx, pair)
                except XfrmError as exc:
                    assert "injected" in str(exc)
                else:
                    raise AssertionError(f"no failure at step {k}")
            assert _kernel_snapshot(x) == before, f"leftovers after failure at step {k}"
    return {"steps": steps}


def check_rollback_on_kernel_conflict() -> None:
    pair = _tunnel_pair()
    _inbound, outbound = build_states(pair)
    with XfrmSocket() as x:
        x.add_sa(dataclasses.replace(outbound, reqid=1))  # occupies the outbound (dst, spi)
        before = _kernel_snapshot(x)
        try:
            install_sa_pair(x, pair)
        except XfrmExistsError:
            pass
        else:
            raise AssertionError("conflicting SA accepted")
        assert _kernel_snapshot(x) == before
        assert x.get_sa(outbound.key()).reqid == 1


def check_reinstall_is_idempotent() -> dict[str, Any]:
    """The responder's outbox replay after a crash: installing a pair that is already in
    the kernel (same SPIs and keys; later, with what remains of its lifetimes) succeeds and
    changes nothing; the same SPIs with other keys are a collision and change nothing."""
    pair = _tunnel_pair(spis=(0xD1, 0xD2))
    late = dataclasses.replace(pair, lifetimes=Lifetimes(2000, 2600, None, 10**9))
    with XfrmSocket() as x:
        first = install_sa_pair(x, pair)
        after_first = _kernel_snapshot(x)
        again = install_sa_pair(x, late)
        assert _kernel_snapshot(x) == after_first
        assert again.inbound == first.inbound and again.outbound == first.outbound
        assert again.removed == ()  # nothing of its own was "superseded"
        other = make_pair(pair.params, pair.role, spis=(0xD1, 0xD2))  # fresh keys
        try:
            install_sa_pair(x, other)
        except XfrmExistsError:
            pass
        else:
            raise AssertionError("an SA with the same SPI and other keys was accepted")
        assert _kernel_snapshot(x) == after_first
        remove_sa_pair(x, first)
        assert x.dump_sas() == [] and x.dump_policies() == []
    return {"sas": len(after_first[0])}


def check_replace_make_before_break() -> None:
    old = _tunnel_pair(spis=(0xB1, 0xB2))
    new = _tunnel_pair(spis=(0xC1, 0xC2))
    with XfrmSocket() as x:
        inst_old = install_sa_pair(x, old, InstallOptions(reqid=11))
        inst_new = install_sa_pair(x, new, InstallOptions(reqid=12), replace_old=inst_old)
        assert sorted(s.spi for s in x.dump_sas()) == [0xC1, 0xC2]
        pols = x.dump_policies()
        assert len(pols) == 6 and all(p.templates[0].reqid == 12 for p in pols)
        remove_sa_pair(x, inst_new)
        assert x.dump_sas() == [] and x.dump_policies() == []


def check_ipv6_transport_install() -> None:
    params = make_params("chacha", i_addr="2001:db8::1", r_addr="2001:db8::2")
    pair = make_pair(params, "responder", spis=(0xD1, 0xD2))
    with XfrmSocket() as x:
        inst = install_sa_pair(x, pair, InstallOptions(mark=Mark(3), if_id=4))
        got = x.get_sa(SAKey("2001:db8::2", 0xD1, mark=Mark(3)))  # inbound on the responder
        assert got.if_id == 4 and got.mark == Mark(3)
        assert got.selector == Selector.hosts("2001:db8::1", "2001:db8::2")
        remove_sa_pair(x, inst)


def check_natt_encap_install() -> None:
    params = make_params("gcm256", natt=(4500, 4501))
    pair = make_pair(params, "initiator", spis=(0xE1, 0xE2))
    with XfrmSocket() as x:
        install_sa_pair(x, pair)
        sas = {s.spi: s for s in x.dump_sas()}
        # outbound (i->r) from the initiator's port 4500 to the responder's 4501
        assert sas[0xE1].encap == Encap(4500, 4501), sas[0xE1].encap
        assert sas[0xE2].encap == Encap(4501, 4500)


def check_events_sa_policy_expire() -> dict[str, Any]:
    st = dataclasses.replace(
        _states_for_roundtrip()[0], lifetime=LifetimeCfg(soft_add_seconds=1, hard_add_seconds=3)
    )
    got: list[Any] = []
    with XfrmEventSocket(blocking=False) as ev, XfrmSocket() as x:
        x.add_sa(st)
        pol = XfrmPolicy(selector=Selector.hosts("10.1.0.1", "10.1.0.2"), dir=XFRM_POLICY_OUT)
        x.add_policy(pol)
        x.delete_policy(pol.key())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            got += ev.receive_untrusted()
            if any(isinstance(e, SAExpireEvent) and e.hard for e in got):
                break
            time.sleep(0.05)
    kinds = [(type(e).__name__, getattr(e, "kind", None), getattr(e, "hard", None)) for e in got]
    assert any(isinstance(e, SAEvent) and e.kind == "new" and e.key.spi == st.spi for e in got), (
        kinds
    )
    assert any(isinstance(e, PolicyEvent) and e.kind == "new" for e in got), kinds
    assert any(isinstance(e, PolicyEvent) and e.kind == "delete" for e in got), kinds
    soft = [e for e in got if isinstance(e, SAExpireEvent) and not e.hard]
    hard = [e for e in got if isinstance(e, SAExpireEvent) and e.hard]
    assert soft and hard, kinds
    assert hard[0].state.spi == st.spi
    return {"events": kinds}


def check_permission_error_without_cap_net_admin() -> str:
    code = (
        "from ikeshim.xfrm import XfrmSocket\n"
        "from ikeshim.errors import XfrmPermissionError\n"
        "from tests.ikeshim.guest_xfrm import _states_for_roundtrip\n"
        "try:\n"
        "    XfrmSocket().add_sa(_states_for_roundtrip()[0])\n"
        "except XfrmPermissionError as e:\n"
        "    print('PERM', e)\n"
    )
    out = run_without_net_admin(code)
    assert out.stdout.startswith("PERM"), (out.stdout, out.stderr)
    assert "CAP_NET_ADMIN" in out.stdout
    return out.stdout.strip()


def check_trio_async_socket() -> None:
    import trio

    from ikeshim.install import install_sa_pair, remove_sa_pair
    from ikeshim.xfrm import AsyncXfrmSocket

    async def main() -> None:
        st = _states_for_roundtrip()[3]
        async with AsyncXfrmSocket() as ax:
            await ax.add_sa(st)
            got = await ax.get_sa(st.key())
            assert _comparable(got) == st
            assert len(await ax.dump_sas()) == 1
            await ax.delete_sa(st.key())
            try:
                await ax.delete_sa(st.key())
            except XfrmNotFoundError:
                pass
            else:
                raise AssertionError("missing SA deleted")
        inst: InstalledSA = await install_sa_pair(_tunnel_pair())
        await remove_sa_pair(inst)

    trio.run(main)
    with XfrmSocket() as x:
        assert x.dump_sas() == [] and x.dump_policies() == []


def check_suites_accepted_by_kernel() -> list[str]:
    ok = []
    with XfrmSocket() as x:
        for i, suite in enumerate(SUITES):
            for mode in (Mode.TRANSPORT, Mode.TUNNEL):
                pair = make_pair(make_params(suite, mode=mode), spis=(0x300 + 2 * i, 0x301 + 2 * i))
                inst = install_sa_pair(x, pair)
                remove_sa_pair(x, inst)
                ok.append(f"{suite}/{mode.value}")
    return ok


_ = XfrmPermissionError


def check_superseded_sas_of_a_replaced_session_are_removed() -> dict[str, Any]:
    """A daemon's (or an earlier resumption's) SAs for the same selectors go once the new
    pair holds the policies; unrelated SAs stay."""
    old = _tunnel_pair(spis=(0xF1, 0xF2))
    new = _tunnel_pair(spis=(0xF3, 0xF4))
    with XfrmSocket() as x:
        install_sa_pair(x, old, InstallOptions(reqid=5))  # e.g. charon's reqid 5
        other = dataclasses.replace(_states_for_roundtrip()[0], reqid=5)  # other hosts
        x.add_sa(other)
        inst = install_sa_pair(x, new, InstallOptions(reqid=6))
        spis = sorted(s.spi for s in x.dump_sas())
        assert spis == sorted([0xF3, 0xF4, other.spi]), spis
        assert sorted(k.spi for k in inst.removed) == [0xF1, 0xF2]
    return {"removed": len(inst.removed)}


def check_service_entry_point_ikeshim_install() -> None:
    import trio

    from ikeshim.install import install_sa_pair as service_install
    from ikeshim.install import remove_sa_pair as service_remove

    async def main() -> None:
        inst = await service_install(_tunnel_pair())
        with XfrmSocket() as x:
            assert len(x.dump_sas()) == 2 and len(x.dump_policies()) == 6
        await service_remove(inst)

    trio.run(main)
    with XfrmSocket() as x:
        assert x.dump_sas() == [] and x.dump_policies() == []
