"""Two peers in two network namespaces inside UML: our installer's SAs carry real ESP.

Each check installs an SAPair on both ends with ``install_sa_pair`` (initiator in ``a``,
responder in ``b``), pings through, and reads the kernel's byte counters of all four SAs.
"""

from __future__ import annotations

import subprocess
from typing import Any

from ikeshim.installer import InstalledSA, install_sa_pair, remove_sa_pair
from ikeshim.xfrm import XfrmSocket
from resume.sa import Mode, SAPair, TrafficSelector
from tests.ikeshim.pairs import make_pair, make_params, mirror
from tests.testbed.netns import in_netns

_ready = False


def sh(cmd: str) -> str:
    out = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60)
    if out.returncode:
        raise AssertionError(f"{cmd!r} failed ({out.returncode}): {out.stdout}{out.stderr}")
    return out.stdout


def setup_each() -> None:
    global _ready
    if not _ready:
        sh(
            "ip netns add a; ip netns add b;"
            "ip link add va type veth peer name vb; ip link set va netns a; ip link set vb netns b;"
            "ip -n a addr add 192.0.2.1/24 dev va; ip -n b addr add 192.0.2.2/24 dev vb;"
            "ip -n a addr add 2001:db8::1/64 dev va nodad;"
            "ip -n b addr add 2001:db8::2/64 dev vb nodad;"
            "ip -n a link set va up; ip -n b link set vb up;"
            "ip -n a link set lo up; ip -n b link set lo up;"
            # inner networks for tunnel mode
            "ip -n a addr add 10.1.0.1/32 dev lo; ip -n b addr add 10.2.0.1/32 dev lo;"
            "ip -n a route add 10.2.0.0/24 via 192.0.2.2 src 10.1.0.1;"
            "ip -n b route add 10.1.0.0/24 via 192.0.2.1 src 10.2.0.1;"
            "ip -n a addr add fd01::1/128 dev lo; ip -n b addr add fd02::1/128 dev lo;"
            "ip -n a route add fd02::/64 via 2001:db8::2 src fd01::1;"
            "ip -n b route add fd01::/64 via 2001:db8::1 src fd02::1"
        )
        _ready = True
    for ns in ("a", "b"):
        with in_netns(ns):
            x = XfrmSocket()
        with x:
            x.flush_sas()
            x.flush_policies()


def _install_both(pair: SAPair) -> tuple[InstalledSA, InstalledSA]:
    with in_netns("a"):
        xa = XfrmSocket()
    with in_netns("b"):
        xb = XfrmSocket()
    with xa, xb:
        ia = install_sa_pair(xa, pair)
        ib = install_sa_pair(xb, mirror(pair))
    return ia, ib


def _counters(ns: str) -> dict[int, tuple[int, int]]:
    with in_netns(ns):
        x = XfrmSocket()
    with x:
        return {s.spi: (s.curlft.bytes, s.curlft.packets) for s in x.dump_sas()}


def _traffic_case(suite: str, mode: Mode, v6: bool, spis: tuple[int, int]) -> dict[str, Any]:
    i_addr, r_addr = ("2001:db8::1", "2001:db8::2") if v6 else ("192.0.2.1", "192.0.2.2")
    if mode is Mode.TUNNEL:
        tsi = (TrafficSelector.from_network("fd01::/64" if v6 else "10.1.0.0/24"),)
        tsr = (TrafficSelector.from_network("fd02::/64" if v6 else "10.2.0.0/24"),)
        target, source = ("fd01::1", "fd02::1") if v6 else ("10.1.0.1", "10.2.0.1")
    else:
        tsi, tsr = (TrafficSelector.host(i_addr),), (TrafficSelector.host(r_addr),)
        target, source = i_addr, r_addr
    pair = make_pair(
        make_params(suite, mode=mode, i_addr=i_addr, r_addr=r_addr, tsi=tsi, tsr=tsr), spis=spis
    )
    ia, ib = _install_both(pair)
    before_a = _counters("a")
    assert all(v == (0, 0) for v in before_a.values()), before_a
    sh(f"ip netns exec b ping -c 3 -i 0.2 -W 2 -I {source} {target}")
    after_a, after_b = _counters("a"), _counters("b")
    i_to_r, r_to_i = pair.i_to_r.spi, pair.r_to_i.spi
    # b (responder) sent echo requests on r_to_i, a answered on i_to_r; both ends count both.
    for c in (after_a, after_b):
        assert c[r_to_i][1] >= 3 and c[i_to_r][1] >= 3, c
        assert c[r_to_i][0] > 0 and c[i_to_r][0] > 0, c
    with in_netns("a"):
        xa = XfrmSocket()
    with in_netns("b"):
        xb = XfrmSocket()
    with xa, xb:
        remove_sa_pair(xa, ia)
        remove_sa_pair(xb, ib)
        assert xa.dump_sas() == [] and xb.dump_policies() == []
    # Without SAs but with no policy either, plain traffic flows again (nothing left behind).
    sh(f"ip netns exec b ping -c 1 -W 2 {i_addr}")
    return {"a": after_a, "b": after_b}


def check_transport_v4_gcm128() -> dict[str, Any]:
    return _traffic_case("gcm128", Mode.TRANSPORT, False, (0x1001, 0x1002))


def check_tunnel_v4_cbc_sha256() -> dict[str, Any]:
    return _traffic_case("cbc-sha256", Mode.TUNNEL, False, (0x2001, 0x2002))


def check_transport_v6_chacha() -> dict[str, Any]:
    return _traffic_case("chacha", Mode.TRANSPORT, True, (0x3001, 0x3002))


def check_tunnel_v6_gcm256() -> dict[str, Any]:
    return _traffic_case("gcm256", Mode.TUNNEL, True, (0x4001, 0x4002))


def check_transport_v4_cbc_sha512() -> dict[str, Any]:
    return _traffic_case("cbc-sha512", Mode.TRANSPORT, False, (0x5001, 0x5002))


def check_policy_without_sa_blocks_traffic() -> None:
    """Negative control: the SAs (not luck) carry the ping -- with the responder's SAs
    gone, its policy requires ESP that cannot be built and the ping fails."""
    pair = make_pair(make_params("gcm128"), spis=(0x6001, 0x6002))
    _ia, ib = _install_both(pair)
    with in_netns("b"):
        xb = XfrmSocket()
    with xb:
        xb.delete_sa(ib.outbound)
        xb.delete_sa(ib.inbound)
    out = subprocess.run(
        "ip netns exec b ping -c 1 -W 1 192.0.2.1", shell=True, capture_output=True, timeout=30
    )
    assert out.returncode != 0, "ping succeeded without SAs"


def check_bypass_socket_keeps_a_channel_clear_under_a_blocking_policy() -> dict[str, Any]:
    """Policies without SAs block b->a traffic; a bypassed UDP socket pair still talks."""
    import socket as s

    from ikeshim.xfrm import bypass_socket

    pair = make_pair(make_params("gcm128"), spis=(0x7001, 0x7002))
    _ia, ib = _install_both(pair)
    with in_netns("b"):
        xb = XfrmSocket()
    with xb:
        xb.delete_sa(ib.outbound)  # b's policy now requires an SA that does not exist

    def exchange(bypass: bool) -> bool:
        with in_netns("a"):
            srv = s.socket(s.AF_INET, s.SOCK_DGRAM)
        with in_netns("b"):
            cli = s.socket(s.AF_INET, s.SOCK_DGRAM)
        with srv, cli:
            if bypass:
                bypass_socket(srv)
                bypass_socket(cli)
            srv.bind(("192.0.2.1", 0))
            # a blocked datagram never comes (1 s to be sure); a passed one may be slow
            srv.settimeout(30.0 if bypass else 1.0)
            try:
                cli.sendto(b"ping", srv.getsockname())
                data, _addr = srv.recvfrom(100)
            except OSError:
                return False
            return data == b"ping"

    blocked = exchange(False)
    passed = exchange(True)
    assert not blocked, "datagram passed a policy whose SA is missing"
    assert passed, "bypassed socket was blocked"
    return {"without": blocked, "with": passed}
