"""The non-blocking-first UDP endpoint over loopback: IPv4, IPv6, NAT-T framing."""

from __future__ import annotations

import socket

import pytest
import trio

from resume.net.config import ListenAddr
from resume.net.udp import UdpEndpoint
from resume.wire import NON_ESP_MARKER


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_batch_echo(host: str) -> None:
    if host == "::1" and not _has_ipv6():
        pytest.skip("no IPv6 loopback")
    ep = UdpEndpoint.bind(ListenAddr(host, 0), buffer_bytes=1 << 20)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with ep, socket.socket(fam, socket.SOCK_DGRAM) as c:
        c.bind((host, 0))
        c.settimeout(60)
        for i in range(50):
            c.sendto(b"x%d" % i, ep.local_addr)
        got: list[bytes] = []
        with trio.fail_after(60):
            while len(got) < 50:
                batch = await ep.recv_batch(16)
                assert 1 <= len(batch) <= 16
                got += [d for d, _ in batch]
                await ep.send_batch([(d.upper(), a) for d, a in batch])
        assert got == [b"x%d" % i for i in range(50)]
        echoed = [c.recvfrom(100)[0] for _ in range(50)]
        assert echoed == [b"X%d" % i for i in range(50)]
        assert ep.received == 50 and ep.sent == 50
        assert ep.recv_nowait(8) == []  # nothing queued: returns at once, never blocks


async def test_natt_framing_strips_adds_and_drops() -> None:
    ep = UdpEndpoint.bind(ListenAddr("127.0.0.1", 0), natt=True)
    with ep, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.bind(("127.0.0.1", 0))
        c.settimeout(60)
        c.sendto(b"\xff", ep.local_addr)  # NAT keepalive
        c.sendto(b"\x12\x34\x56\x78esp", ep.local_addr)  # ESP (non-zero SPI)
        c.sendto(NON_ESP_MARKER + b"ike", ep.local_addr)
        with trio.fail_after(60):
            batch = await ep.recv_batch(8)
            while len(batch) < 1:
                batch += await ep.recv_batch(8)
        assert [d for d, _ in batch] == [b"ike"]
        assert ep.drops == {"natt_keepalive": 1, "natt_not_ike": 1}
        await ep.send_batch([(b"reply", batch[0][1])])
        assert c.recvfrom(100)[0] == NON_ESP_MARKER + b"reply"


async def test_send_error_is_counted_not_raised() -> None:
    ep = UdpEndpoint.bind(ListenAddr("127.0.0.1", 0))
    with ep:
        # a datagram larger than UDP allows fails with EMSGSIZE for that peer only
        left = ep.send_nowait([(b"x" * 70000, ("127.0.0.1", 9)), (b"ok", ep.local_addr)])
        assert left == []
        assert sum(ep.drops.values()) == 1 and ep.sent == 1
        assert [d for d, _ in ep.recv_nowait(4)] == [b"ok"]


async def test_reuse_port_binds_twice() -> None:
    a = UdpEndpoint.bind(ListenAddr("127.0.0.1", 0), reuse_port=True)
    with a:
        b = UdpEndpoint.bind(ListenAddr("127.0.0.1", a.local_addr[1]), reuse_port=True)
        b.close()
        with pytest.raises(OSError):
            UdpEndpoint.bind(ListenAddr("127.0.0.1", a.local_addr[1]))
