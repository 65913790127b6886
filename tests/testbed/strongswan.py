"""Two strongSwan charons in two network namespaces (inside a UML guest), for tests and bench.

Why in the package: the end-to-end test, the harvest test and ``bench/bench_e2e.py`` need
the same peers set up the same way; the recipe (own ``/run`` per charon, explicit plugin list
with ``kdf``, one VICI socket per node) is verified in ``docs/ipsec-testbed.md``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CHARON = "/usr/lib/ipsec/charon"
PLUGINS = (
    "random nonce aes sha1 sha2 hmac kdf gcm openssl pem pkcs1 x509 pubkey curve25519 "
    "kernel-netlink socket-default vici updown"
)


@dataclass(frozen=True)
class Peer:
    ns: str
    addr: str
    addr6: str
    ident: str

    def vici_uri(self) -> str:
        return f"unix:///tmp/sw-{self.ns}.vici"

    @property
    def ident6(self) -> str:
        """The identity of this peer's IPv6 connection when ``separate_v6_ids`` is set."""
        return f"v6.{self.ident}"

    def vici_path(self) -> str:
        return f"/tmp/sw-{self.ns}.vici"


A = Peer("a", "192.0.2.1", "2001:db8::1", "a.example")  # responder
B = Peer("b", "192.0.2.2", "2001:db8::2", "b.example")  # initiator


def sh(cmd: str, timeout: float = 60) -> str:
    # Testbed plumbing with fixed command strings (no outside input).
    out = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise RuntimeError(f"{cmd!r} failed ({out.returncode}): {out.stdout}{out.stderr}")
    return out.stdout


def make_namespaces() -> None:
    """Namespaces a and b joined by a veth pair, IPv4 and IPv6, plus inner tunnel networks."""
    sh(
        "ip netns add a; ip netns add b;"
        "ip link add va type veth peer name vb; ip link set va netns a; ip link set vb netns b;"
        f"ip -n a addr add {A.addr}/24 dev va; ip -n b addr add {B.addr}/24 dev vb;"
        f"ip -n a addr add {A.addr6}/64 dev va nodad; ip -n b addr add {B.addr6}/64 dev vb nodad;"
        "ip -n a link set va up; ip -n b link set vb up;"
        "ip -n a link set lo up; ip -n b link set lo up;"
        "ip -n a addr add 10.1.0.1/32 dev lo; ip -n b addr add 10.2.0.1/32 dev lo;"
        f"ip -n a route add 10.2.0.0/24 via {B.addr} src 10.1.0.1;"
        f"ip -n b route add 10.1.0.0/24 via {A.addr} src 10.2.0.1;"
        "ip -n a addr add fd01::1/128 dev lo; ip -n b addr add fd02::1/128 dev lo;"
        f"ip -n a route add fd02::/64 via {B.addr6} src fd01::1;"
        f"ip -n b route add fd01::/64 via {A.addr6} src fd02::1"
    )


def _strongswan_conf(peer: Peer, workdir: Path, retransmit_timeout: float | None = None) -> str:
    timeout = "" if retransmit_timeout is None else f"\n  retransmit_timeout = {retransmit_timeout}"
    return f"""charon {{
  load = {PLUGINS}
  install_routes = no
  retransmit_tries = 2{timeout}
  plugins {{
    vici {{
      socket = {peer.vici_uri()}
    }}
  }}
  filelog {{
    log {{
      path = {workdir}/charon-{peer.ns}.log
      default = 1
      ike = 2
      knl = 1
    }}
  }}
}}
"""


@dataclass(frozen=True)
class Child:
    """One CHILD_SA configuration (the same name on both peers)."""

    name: str
    mode: str = "transport"
    esp: str = "aes128gcm16"
    v6: bool = False
    local_ts_i: str = "dynamic"
    remote_ts_i: str = "dynamic"
    #: what charon does when DPD finds the peer dead ("clear": only tell, e.g. an agent)
    dpd_action: str = "none"


def _swanctl_conf(
    me: Peer,
    other: Peer,
    children: list[Child],
    psk: str,
    separate_v6_ids: bool = False,
    dpd_delay: str = "",
) -> str:
    initiator = me is B
    parts = []
    for c in children:
        lts, rts = (c.local_ts_i, c.remote_ts_i) if initiator else (c.remote_ts_i, c.local_ts_i)
        parts.append(
            f"""      {c.name} {{
        mode = {c.mode}
        esp_proposals = {c.esp}
        local_ts = {lts}
        remote_ts = {rts}
        start_action = none
        close_action = none
        dpd_action = {c.dpd_action}
      }}"""
        )
    conns = []
    dpd = f"\n    dpd_delay = {dpd_delay}" if dpd_delay else ""
    for fam in ("4", "6"):
        ch = [c for c in children if c.v6 == (fam == "6")]
        if not ch:
            continue
        local_addr = me.addr6 if fam == "6" else me.addr
        remote_addr = other.addr6 if fam == "6" else other.addr
        v6_ids = fam == "6" and separate_v6_ids
        my_id, other_id = (me.ident6, other.ident6) if v6_ids else (me.ident, other.ident)
        body = "\n".join(p for p, c in zip(parts, children, strict=True) if c.v6 == (fam == "6"))
        conns.append(
            f"""  ike{fam} {{
    version = 2
    local_addrs = {local_addr}
    remote_addrs = {remote_addr}
    proposals = aes128-sha256-x25519
    rekey_time = 0{dpd}
    local {{
      auth = psk
      id = {my_id}
    }}
    remote {{
      auth = psk
      id = {other_id}
    }}
    children {{
{body}
    }}
  }}"""
        )
    return (
        "connections {\n"
        + "\n".join(conns)
        + f"""
}}
secrets {{
  ike-peers {{
    id-a = {A.ident}
    id-b = {B.ident}
    id-a6 = {A.ident6}
    id-b6 = {B.ident6}
    secret = "{psk}"
  }}
}}
"""
    )


@dataclass
class Charons:
    """Two running charons; ``stop()`` ends them."""

    workdir: Path
    procs: list[subprocess.Popen[bytes]]

    def swanctl(self, peer: Peer, *args: str, timeout: float = 30) -> str:
        cmd = ["swanctl", *args, "--uri", peer.vici_uri()]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if out.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed: {out.stdout}{out.stderr}")
        return out.stdout

    def initiate(self, child: str, ike: str = "ike4") -> str:
        return self.swanctl(B, "--initiate", "--child", child, "--ike", ike)

    def terminate_ike(self, ike: str = "ike4") -> str:
        return self.swanctl(B, "--terminate", "--ike", ike)

    def log(self, peer: Peer) -> str:
        try:
            return (self.workdir / f"charon-{peer.ns}.log").read_text(errors="replace")
        except OSError:
            return ""

    def restart(self, peer: Peer, *, sigkill: bool = False) -> None:
        """Stop ``peer``'s charon (SIGKILL: a crash, its SAs stay in the kernel), start it
        again and load its configuration: it knows no IKE_SA any more."""
        i = (A, B).index(peer)
        old = self.procs[i]
        old.send_signal(signal.SIGKILL if sigkill else signal.SIGTERM)
        old.wait(timeout=30)
        self.procs[i] = _spawn(peer, self.workdir)
        _await_and_load(self, (peer,), [self.procs[i]])

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def _spawn(me: Peer, workdir: Path) -> subprocess.Popen[bytes]:
    d = workdir / me.ns
    env = {**os.environ, "STRONGSWAN_CONF": str(d / "strongswan.conf")}
    return subprocess.Popen(
        ["ip", "netns", "exec", me.ns, "sh", "-c", f"mount -t tmpfs tmpfs /run && exec {CHARON}"],
        env=env,
        stdout=open(workdir / f"charon-{me.ns}.out", "ab"),
        stderr=subprocess.STDOUT,
    )


def _vici_answers(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError:
        return False
    finally:
        s.close()
    return True


def _await_and_load(
    ch: Charons, peers: tuple[Peer, ...], procs: list[subprocess.Popen[bytes]]
) -> None:
    """Until each charon answers on its VICI socket, then load its swanctl.conf."""
    deadline = time.monotonic() + 20
    while not all(_vici_answers(p.vici_path()) for p in peers):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            ch.stop()
            raise RuntimeError(
                "charon did not start:\n" + ch.log(A)[-2000:] + "\n" + ch.log(B)[-2000:]
            )
        time.sleep(0.05)
    for p in peers:
        ch.swanctl(p, "--load-all", "--noprompt", "--file", str(ch.workdir / p.ns / "swanctl.conf"))


def start_charons(
    workdir: Path,
    children: list[Child],
    psk: str = "ikeresume-test-psk",
    *,
    separate_v6_ids: bool = False,
    dpd_delay: str = "",
    retransmit_timeout: float | None = None,
) -> Charons:
    """Start charon in namespaces a (responder) and b (initiator) and load the configs.

    ``separate_v6_ids``: the IPv6 connection authenticates as ``Peer.ident6`` so that its
    CHILD_SAs form a cache chain of their own (a full IKE between the same identities
    replaces the pair's previous chain).  ``dpd_delay`` (e.g. "1s") turns on dead peer
    detection; ``retransmit_timeout`` (seconds) shortens how long a dead peer takes to find.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    procs = []
    for me, other in ((A, B), (B, A)):
        d = workdir / me.ns
        d.mkdir(exist_ok=True)
        (d / "strongswan.conf").write_text(_strongswan_conf(me, workdir, retransmit_timeout))
        (d / "swanctl.conf").write_text(
            _swanctl_conf(me, other, children, psk, separate_v6_ids, dpd_delay)
        )
        procs.append(_spawn(me, workdir))
    ch = Charons(workdir, procs)
    _await_and_load(ch, (A, B), procs)
    return ch
