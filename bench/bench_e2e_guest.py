"""Guest half of ``bench_e2e.py`` (runs inside UML, as root, driven by the host script).

Per iteration, interleaved so both see the same machine state:

* full IKE: VICI ``initiate`` of the CHILD_SA on the initiator's charon (in-process VICI
  session, no swanctl process) -> first UDP datagram from b received by a through ESP;
  then ``terminate`` the IKE_SA.
* resumption: ``resume_with_store`` (the library path ``ikeresume resume`` takes) against a
  running ``ikeresume serve`` -> install on the initiator (``install_sa_pair``) -> first UDP
  datagram from b received by a through ESP (the responder installs asynchronously after its
  commit; the probe repeats every 0.5 ms until it gets through).

The probe datagram is sent through the installed SAs (checked: the ESP packet counters of
both ends' SAs grow).  Timings are wall clock (``time.perf_counter``) in this one process.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from ikeshim.installer import install_sa_pair
from ikeshim.testbed import in_netns
from ikeshim.testbed_strongswan import A, B, Child, make_namespaces, start_charons
from ikeshim.xfrm import XFRM_POLICY_IN, XFRM_POLICY_OUT, Selector, XfrmPolicy, XfrmSocket

WORK = Path("/tmp/bench-e2e")
PROBE_PORT = 9999


def _xfrm(ns: str) -> XfrmSocket:
    with in_netns(ns):
        return XfrmSocket()


def _cli(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-m", "resume.cli", *args]


def _bypass_port(port: int) -> None:
    """UDP ``port`` between the peers stays in clear (see guest_e2e: resume.net sockets do
    not call ikeshim.xfrm.bypass_socket yet)."""
    for ns, local, remote in (("a", A.addr, B.addr), ("b", B.addr, A.addr)):
        with _xfrm(ns) as x:
            for d, src, dst in ((XFRM_POLICY_OUT, local, remote), (XFRM_POLICY_IN, remote, local)):
                for field in ("dport", "sport"):
                    kw: dict[str, Any] = {field: port, f"{field}_mask": 0xFFFF}
                    sel = Selector(socket.AF_INET, dst, src, 32, 32, socket.IPPROTO_UDP, **kw)
                    x.add_policy(XfrmPolicy(selector=sel, dir=d, priority=100))


class Probe:
    """A UDP receiver in a and a sender in b: time until one datagram gets through."""

    def __init__(self) -> None:
        with in_netns("a"):
            self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with in_netns("b"):
            self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind((A.addr, PROBE_PORT))
        self.rx.setblocking(False)
        self.seq = 0

    def drain(self) -> None:
        while True:
            try:
                self.rx.recv(64)
            except BlockingIOError:
                return

    def first_through(self, timeout: float = 5.0) -> float:
        """Send until a datagram arrives; return the perf_counter time of its arrival."""
        self.seq += 1
        tag = self.seq.to_bytes(4, "big")
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with contextlib.suppress(OSError):  # EAGAIN/EPERM while no SA matches yet
                self.tx.sendto(tag, (A.addr, PROBE_PORT))
            t_end = time.perf_counter() + 0.0005
            while time.perf_counter() < t_end:
                try:
                    data = self.rx.recv(64)
                except BlockingIOError:
                    continue
                if data == tag:
                    return time.perf_counter()
        raise RuntimeError("no datagram got through")


def _esp_packets(ns: str) -> int:
    with _xfrm(ns) as x:
        return sum(s.curlft.packets for s in x.dump_sas())


def _clear_resumed(installed_b: Any) -> None:
    """Remove the resumed session's SAs and policies on both ends before a full IKE."""
    for ns in ("a", "b"):
        with _xfrm(ns) as x:
            for p in x.dump_policies():
                if p.priority == 1500:
                    x.delete_policy(p.key())
            for s in x.dump_sas():
                if s.reqid & 0x40000000:
                    x.delete_sa(s.key())


def main(runs: int, out_path: str) -> int:
    import vici

    from resume.initiator import InitiatorConfig
    from resume.net.client import resume_with_store
    from store.keys import Keyring, MasterKey
    from store.repository import Store

    WORK.mkdir(parents=True, exist_ok=True)
    key = MasterKey.generate().to_line()
    env = {**os.environ, "IKERESUME_MASTER_KEY": key}
    make_namespaces()
    charons = start_charons(WORK / "sw", [Child("host")])
    _bypass_port(4501)  # the probe port stays covered: it must ride the SAs it times
    vb = vici.Session(_unix(B.vici_path()))
    # Full IKE once and harvest both ends (in-process, as `ikeresume harvest --once` does).
    charons.initiate("host")
    for p in (A, B):
        subprocess.run(
            _cli(p.ns, "harvest", "--once", "--vici", p.vici_uri(), "--db",
                 str(WORK / f"{p.ns}.db")),
            check=True, env=env, capture_output=True, timeout=120,
        )
    charons.terminate_ike("ike4")
    conf = WORK / "serve.toml"
    conf.write_text(
        f'[server]\nlisten = ["{A.addr}:4501"]\nserver_secret_file = "{WORK}/server.key"\n'
        f'[store]\nurl = "sqlite:///{WORK}/a.db"\nsqlite_synchronous = "FULL"\n'
        '[install]\nmode = "xfrm"\n[http]\nlisten = ""\n[log]\nlevel = "warning"\n'
    )
    server = subprocess.Popen(
        _cli("a", "serve", "--config", str(conf)), env=env,
        stdout=open(WORK / "serve.out", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )
    store_b = Store.open(str(WORK / "b.db"), Keyring.from_text(key))
    probe = Probe()
    _wait_listening("a", 4501, server)
    full: list[float] = []
    resumed: list[float] = []
    proto: list[float] = []
    client_total: list[float] = []  # lookup + protocol + initiator ratchet commit
    install_b: list[float] = []  # initiator's XFRM install
    wait_responder: list[float] = []  # until the responder's SAs pass the probe
    esp_checked = {"full": 0, "resume": 0}
    id_r = bytes([2]) + A.ident.encode()
    cfg = InitiatorConfig(initial_rto=0.5, max_retransmits=3, timeout=5.0)
    for i in range(runs + 1):  # run 0 warms caches and is discarded
        # -- strongSwan full IKEv2 (IKE_SA_INIT + IKE_AUTH with the CHILD_SA) --
        probe.drain()
        t0 = time.perf_counter()
        for _ in vb.initiate({"child": "host", "ike": "ike4", "timeout": 10000}):
            pass
        t1 = probe.first_through()
        if i:
            full.append(t1 - t0)
        before = _esp_packets("a")
        probe.first_through()
        esp_checked["full"] += _esp_packets("a") > before
        for _ in vb.terminate({"ike": "ike4", "timeout": 10000}):
            pass
        # -- resumption through the library path of `ikeresume resume --install xfrm` --
        probe.drain()
        t0 = time.perf_counter()
        with in_netns("b"):
            result = trio.run(
                lambda: resume_with_store(store_b, id_r, (A.addr, 4501), config=cfg)
            )
        if not result.resumed or result.sa is None:
            raise RuntimeError(f"resumption {i} failed: {result.outcome} {result.detail}")
        t_resumed = time.perf_counter()
        with _xfrm("b") as xb:
            inst = install_sa_pair(xb, result.sa)
        t_installed = time.perf_counter()
        t1 = probe.first_through()
        if i:
            resumed.append(t1 - t0)
            proto.append(result.elapsed)
            client_total.append(t_resumed - t0)
            install_b.append(t_installed - t_resumed)
            wait_responder.append(t1 - t_installed)
        before = _esp_packets("a")
        probe.first_through()
        esp_checked["resume"] += _esp_packets("a") > before
        _clear_resumed(inst)
        print(f"run {i}: full {full[-1] if full else 0:.4f}s resume "
              f"{resumed[-1] if resumed else 0:.4f}s", flush=True)
    server.terminate()
    server.wait(timeout=30)
    charons.stop()

    def summary(xs: list[float]) -> dict[str, float]:
        return {
            "median_ms": statistics.median(xs) * 1e3,
            "p10_ms": statistics.quantiles(xs, n=10)[0] * 1e3,
            "p90_ms": statistics.quantiles(xs, n=10)[-1] * 1e3,
            "min_ms": min(xs) * 1e3,
            "max_ms": max(xs) * 1e3,
            "n": len(xs),
        }

    result_json = {
        "full_ike_to_first_esp": summary(full),
        "resumption_to_first_esp": summary(resumed),
        "resumption_protocol_only": summary(proto),
        "resumption_client_incl_store": summary(client_total),
        "initiator_install": summary(install_b),
        "after_install_until_through": summary(wait_responder),
        "speedup_median": statistics.median(full) / statistics.median(resumed),
        "esp_verified": esp_checked,
        "runs": runs,
        "guest_kernel": os.uname().release,
        "strongswan_proposals": "IKE aes128-sha256-x25519 PSK, ESP aes128gcm16, transport",
    }
    Path(out_path).write_text(json.dumps(result_json, indent=1))
    return 0


def _wait_listening(ns: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    """Until the server has bound its UDP port (its imports take seconds under UML)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["ip", "netns", "exec", ns, "ss", "-Hlun", f"sport = :{port}"],
            capture_output=True, text=True, check=False,
        ).stdout
        if out.strip():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited: {(WORK / 'serve.out').read_text()[-2000:]}")
        time.sleep(0.2)
    raise RuntimeError("serve did not bind its port")


def _unix(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), sys.argv[2]))
