"""What a narrow path does to our datagrams: the real messages of every key exchange mode
sent through a router whose far link has a smaller MTU (1,280 bytes: IPv6's minimum),
over IPv4 and IPv6 with the NAT-T framing (UDP 4500, non-ESP marker), in three private
network namespaces (client -- router -- server; nothing outside them changes).

Each datagram is sent twice, 0.3 s apart, from a plain UDP socket with Linux's defaults
(IPv4: IP_PMTUDISC_WANT, DF set while the datagram fits the known path MTU; IPv6: source
fragmentation after a Packet Too Big), as an initiator's retransmission would resend it.
Reported per message: which of the two copies arrived whole, the fragments the client
created, and the ICMP "fragmentation needed" / "packet too big" the router sent.  The
first copy of a datagram larger than the narrow link is expected to be lost (the router
cannot forward it and reports the path MTU); the copy after it is fragmented by the
client's kernel and reassembled by the server's: one retransmission timeout (0.5 s with
the defaults, spec 8) the first time a peer meets such a path (the kernel then keeps the
learnt path MTU for a while).  The path is symmetric, so message 2 (server to client)
meets the same link as message 1; every datagram is measured in a fresh topology.

    python bench/bench_path.py [--mtu 1280] [--json]

Needs root and iproute2 (network namespaces).  Used by ``bench_pq.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

from resume.wire import message_sizes

MODES = {"none": (False, False), "x25519": (True, False), "mlkem768": (False, True),
         "x25519+mlkem768": (True, True)}  # fmt: skip
ADDR = {  # (client, router-client side, router-server side, server)
    4: ("10.77.1.2", "10.77.1.1", "10.77.2.1", "10.77.2.2", 24),
    6: ("fd77:1::2", "fd77:1::1", "fd77:2::1", "fd77:2::2", 64),
}
PORT = 4500
MARKER = 4  # the non-ESP marker before every message on UDP 4500

_SERVER = r"""
import json, select, socket, sys, time
socks = []
for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, @PORT@))
    socks.append(s)
print("ready", flush=True)
got = []
end = time.monotonic() + float(sys.argv[1])  # bounds a hang only: the client says "end"
while (left := end - time.monotonic()) > 0:
    r, _, _ = select.select(socks, [], [], left)
    datagrams = [s.recv(65535) for s in r]
    if b"end" in datagrams:
        break
    got += [d[:16].hex() + ":" + str(len(d)) for d in datagrams if d != b"warm"]
print(json.dumps(got), flush=True)
""".replace("@PORT@", str(PORT))

_CLIENT = r"""
import socket, sys, time
fam = socket.AF_INET if sys.argv[1] == "4" else socket.AF_INET6
dst, plan = (sys.argv[2], @PORT@), sys.argv[3:]
s = socket.socket(fam, socket.SOCK_DGRAM)
s.sendto(b"warm", dst)  # neighbour discovery and the router's forwarding path, first
time.sleep(0.3)
for item in plan:
    tag, size = item.split(":")
    body = bytes.fromhex(tag) + bytes(int(size) - 16)
    for _ in range(2):  # the datagram and its retransmission
        try:
            s.sendto(body, dst)
        except OSError as e:
            print("error", item, e.errno, flush=True)
        time.sleep(0.3)
s.sendto(b"end", dst)
""".replace("@PORT@", str(PORT))


def available() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _sysctl(ns: str, key: str, value: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}"], check=True)


@contextlib.contextmanager
def _topology(mtu: int) -> Iterator[tuple[str, str, str]]:
    tag = uuid.uuid4().hex[:6]
    c, r, s = (f"ikr-path-{x}-{tag}" for x in "crs")
    try:
        for ns in (c, r, s):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", f"pc{tag}", "netns", c, "type", "veth", "peer", f"pr{tag}", "netns", r)
        _ip("link", "add", f"qr{tag}", "netns", r, "type", "veth", "peer", f"qs{tag}", "netns", s)
        links = ((c, f"pc{tag}", 1500), (r, f"pr{tag}", 1500), (r, f"qr{tag}", mtu),
                 (s, f"qs{tag}", mtu))  # fmt: skip
        for ns, dev, m in links:
            _ip("-n", ns, "link", "set", dev, "mtu", str(m), "up")
        _sysctl(r, "net.ipv4.ip_forward", "1")
        _sysctl(r, "net.ipv6.conf.all.forwarding", "1")
        for fam, (ca, ra1, ra2, sa, plen) in ADDR.items():
            nodad = ["nodad"] if fam == 6 else []
            _ip("-n", c, f"-{fam}", "addr", "add", f"{ca}/{plen}", "dev", f"pc{tag}", *nodad)
            _ip("-n", r, f"-{fam}", "addr", "add", f"{ra1}/{plen}", "dev", f"pr{tag}", *nodad)
            _ip("-n", r, f"-{fam}", "addr", "add", f"{ra2}/{plen}", "dev", f"qr{tag}", *nodad)
            _ip("-n", s, f"-{fam}", "addr", "add", f"{sa}/{plen}", "dev", f"qs{tag}", *nodad)
            _ip("-n", c, f"-{fam}", "route", "add", "default", "via", ra1)
            _ip("-n", s, f"-{fam}", "route", "add", "default", "via", ra2)
        yield c, r, s
    finally:
        for ns in (c, r, s):
            subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True)


def _counters(ns: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in ("/proc/net/snmp", "/proc/net/snmp6"):
        text = subprocess.run(["ip", "netns", "exec", ns, "cat", f], capture_output=True,
                              text=True, check=True).stdout  # fmt: skip
        lines = text.splitlines()
        if f.endswith("6"):
            for ln in lines:
                k, v = ln.split()
                out[k] = int(v)
        else:
            for head, vals in zip(lines[::2], lines[1::2], strict=False):
                proto = head.split(":")[0]
                for k, v in zip(head.split()[1:], vals.split()[1:], strict=True):
                    out[proto + k] = int(v)
    return out


def _delta(a: dict[str, int], b: dict[str, int], key: str) -> int:
    return b.get(key, 0) - a.get(key, 0)


def measure(mtu: int = 1280) -> dict[str, Any]:
    """Every mode's three messages (UDP payload + marker), both families, through a path
    of ``mtu`` bytes; one datagram at a time so the counters are per datagram."""
    if not available():
        raise RuntimeError("needs root and iproute2")
    plan = []  # (mode, message, size with marker)
    for mode, (x, m) in MODES.items():
        for name, size in zip(("m1", "m2", "m3"), message_sizes(x, m), strict=True):
            plan.append((mode, name, size + MARKER))
    rows: list[dict[str, Any]] = []
    for fam in (4, 6):
        for mode, name, size in plan:
            # a fresh topology per datagram: the client's kernel learns the path MTU from
            # the router's ICMP and would fragment every later datagram from the start
            with _topology(mtu) as (c, r, s):
                tag = uuid.uuid4().hex[:32]
                srv = subprocess.Popen(
                    ["ip", "netns", "exec", s, sys.executable, "-c", _SERVER, "30"],
                    stdout=subprocess.PIPE, text=True,
                )  # fmt: skip
                assert srv.stdout is not None
                srv.stdout.readline()  # "ready"
                c0, r0 = _counters(c), _counters(r)
                cli = subprocess.run(
                    ["ip", "netns", "exec", c, sys.executable, "-c", _CLIENT, str(fam),
                     ADDR[fam][3], f"{tag}:{size}"],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                got = json.loads(srv.communicate(timeout=30)[0].strip().splitlines()[-1])
                c1, r1 = _counters(c), _counters(r)
                copies = sum(1 for g in got if g == f"{tag}:{size}")
                ip = 20 if fam == 4 else 40
                rows.append({
                    "mode": mode, "message": name, "family": f"IPv{fam}",
                    "udp_payload_with_marker": size, "ip_datagram": size + 8 + ip,
                    "copies_sent": 2, "copies_arrived": copies,
                    "first_copy_arrived": copies == 2,
                    "send_errors": cli.stdout.count("error"),
                    "fragments_created": _delta(c0, c1, "IpFragCreates" if fam == 4
                                                else "Ip6FragCreates"),
                    "router_icmp_too_big": _delta(r0, r1, "IcmpOutDestUnreachs" if fam == 4
                                                  else "Icmp6OutPktTooBigs"),
                })  # fmt: skip
    return {"path_mtu": mtu, "rows": rows}


def print_report(rep: dict[str, Any]) -> None:
    print(f"a {rep['path_mtu']}-byte link behind a router (client link 1,500), each datagram "
          "sent twice 0.3 s apart:")  # fmt: skip
    for r in rep["rows"]:
        if r["ip_datagram"] <= rep["path_mtu"] and r["copies_arrived"] == 2:
            continue  # fits: nothing to say
        print(
            f"  {r['family']} {r['mode']:<16} {r['message']} {r['ip_datagram']:5} B IP: "
            f"{r['copies_arrived']}/2 arrived (first {'yes' if r['first_copy_arrived'] else 'no'}),"
            f" {r['fragments_created']} fragments created, router ICMP too-big "
            f"{r['router_icmp_too_big']}, send errors {r['send_errors']}"
        )
    small = [r for r in rep["rows"] if r["ip_datagram"] <= rep["path_mtu"]]
    ok = sum(r["copies_arrived"] == 2 for r in small)
    print(f"  every other datagram ({ok}/{len(small)} fit the path) arrived at once, unfragmented")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mtu", type=int, default=1280)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not available():
        print("bench_path: needs root and iproute2", file=sys.stderr)
        return 1
    rep = measure(args.mtu)
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        print_report(rep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
