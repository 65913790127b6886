"""Two libreswan plutos in network namespaces a (responder) and b (initiator), in a UML guest.

pluto runs from the private, never-installed root of :mod:`tests.testbed.setup_libreswan`:
the guest bind-mounts its ``usr/libexec`` over ``/usr/libexec`` (pluto starts ``addconn`` and
``_updown`` from there; the mount is the guest's own, the host is untouched) and the
processes get ``LD_LIBRARY_PATH``.  Each pluto has its own NSS database, run directory and
config under ``workdir``; the connection is IKEv2 with a PSK, brought up from b.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.testbed.setup_libreswan import CERTUTIL, LIBEXEC, env
from tests.testbed.strongswan import A, B, Peer, sh

IPSEC = Path("/usr/libexec/ipsec")
HANG = 60.0  # bounds a hang only


@dataclass(frozen=True)
class Conn:
    """One connection (the same name on both peers); subnets as seen from A (responder)."""

    name: str
    esp: str = "aes_gcm256"
    a_subnet: str = "10.1.0.0/24"
    b_subnet: str = "10.2.0.0/24"


def mount_libexec() -> None:
    """Guest only: libreswan's helpers where pluto looks for them."""
    if not (IPSEC / "pluto").exists():
        sh(f"mount --bind {LIBEXEC} /usr/libexec")


def _conf(me: Peer, other: Peer, conn: Conn, updown: str) -> str:
    mine, theirs = (conn.a_subnet, conn.b_subnet) if me is A else (conn.b_subnet, conn.a_subnet)
    return f"""config setup
    dnssec-enable=no
conn {conn.name}
    ikev2=insist
    authby=secret
    left={me.addr}
    leftid=@{me.ident}
    leftsubnet={mine}
    right={other.addr}
    rightid=@{other.ident}
    rightsubnet={theirs}
    esp={conn.esp}
    ike=aes256-sha2_256;dh19
    leftupdown={updown}
    auto=add
"""


class Plutos:
    def __init__(self, workdir: Path, procs: list[subprocess.Popen[bytes]]) -> None:
        self.workdir = workdir
        self.procs = procs

    def whack(self, peer: Peer, *args: str) -> str:
        ctl = self.workdir / peer.ns / "run/pluto.ctl"
        out = subprocess.run(
            ["ip", "netns", "exec", peer.ns, str(IPSEC / "whack"), "--ctlsocket", str(ctl), *args],
            capture_output=True, text=True, env=env(), timeout=HANG, check=False,
        )  # fmt: skip
        return out.stdout + out.stderr

    def log(self, peer: Peer) -> str:
        return (self.workdir / peer.ns / "pluto.log").read_text(errors="replace")

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def start_plutos(
    workdir: Path, conn: Conn, updown: str, extra_env: dict[str, dict[str, str]]
) -> Plutos:
    """Start pluto in a and b, load ``conn`` with ``updown`` as leftupdown, listen."""
    mount_libexec()
    procs = []
    for me, other in ((A, B), (B, A)):
        d = workdir / me.ns
        for sub in ("nss", "run", "ipsec.d"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        sh(f"{CERTUTIL} -N -d sql:{d / 'nss'} --empty-password")
        (d / "ipsec.conf").write_text(_conf(me, other, conn, updown))
        (d / "ipsec.secrets").write_text(f'@{A.ident} @{B.ident} : PSK "ikeresume test psk 42"\n')
        cmd = [
            "ip", "netns", "exec", me.ns, str(IPSEC / "pluto"), "--config", str(d / "ipsec.conf"),
            "--secretsfile", str(d / "ipsec.secrets"), "--nssdir", str(d / "nss"),
            "--rundir", str(d / "run"), "--dumpdir", str(d / "run"),
            "--ipsecdir", str(d / "ipsec.d"), "--nofork", "--stderrlog",
        ]  # fmt: skip
        log = open(d / "pluto.log", "wb")  # noqa: SIM115 (the process keeps it)
        penv = {**env(), **extra_env.get(me.ns, {})}
        procs.append(subprocess.Popen(cmd, env=penv, stdout=log, stderr=subprocess.STDOUT))
    p = Plutos(workdir, procs)
    deadline = time.monotonic() + HANG
    ctls = [workdir / peer.ns / "run/pluto.ctl" for peer in (A, B)]
    while not all(c.exists() for c in ctls):
        if time.monotonic() > deadline or any(x.poll() is not None for x in procs):
            p.stop()
            raise RuntimeError("pluto did not start:\n" + p.log(A)[-2000:] + p.log(B)[-2000:])
        time.sleep(0.05)
    for peer in (A, B):
        d = workdir / peer.ns
        out = subprocess.run(
            ["ip", "netns", "exec", peer.ns, str(IPSEC / "addconn"), "--config",
             str(d / "ipsec.conf"), "--ctlsocket", str(d / "run/pluto.ctl"), conn.name],
            capture_output=True, text=True, env=env(), timeout=HANG, check=False,
        )  # fmt: skip
        if out.returncode:
            raise RuntimeError(f"addconn on {peer.ns}: {out.stdout}{out.stderr}")
        p.whack(peer, "--listen")
    return p


def up(p: Plutos, conn: Conn) -> str:
    """Initiate from b; wait (bounded) until both peers report the Child SA established."""
    out = p.whack(B, "--name", conn.name, "--initiate")
    deadline = time.monotonic() + HANG
    while True:
        status = [p.whack(peer, "--trafficstatus") for peer in (A, B)]
        if all("type=ESP" in s for s in status):
            return out
        if time.monotonic() > deadline:
            raise RuntimeError(f"{conn.name} not up: {out}\n{status}\n{p.log(A)[-2000:]}")
        time.sleep(0.1)

