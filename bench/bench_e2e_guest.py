"""Guest half of ``bench_e2e.py`` (runs inside UML, as root, driven by the host script).

One long-running process, one ``trio.run`` for the whole benchmark (as an IKE daemon embeds
the library), five paths interleaved run by run so all see the same machine state:

* ``full_vici``: strongSwan full IKEv2 through the VICI session this process keeps open
  (``initiate``: IKE_SA_INIT + IKE_AUTH with the CHILD_SA) -> first datagram through ESP;
* ``resume_lib``: :func:`ikeshim.initiator.resume_and_install` with the initiator's store
  and XFRM socket already open (the embedding daemon's path; defaults: durable write-ahead
  in this thread, message 3, then the SA install) -> first datagram through ESP;
* ``resume_lib_overlap``: the same with the write in a warm writer thread overlapped with
  the install, message 3 after both (``overlap_write=True``, ``StoreWriter``);
* ``full_swanctl``: ``swanctl --initiate`` as a new process (process start included);
* ``resume_cli``: ``ikeresume resume --install xfrm`` as a new process (process start,
  imports and store open included);
* ``agent_client``: ``ikeresume-resume gw`` as a new process (the native client, issue 14)
  asking ``ikeresume agent`` -- resident in b with its store open, native core loaded, XFRM
  bound -- to resume and install.

The responder is ``ikeresume serve`` with ``[install] mode = "xfrm"`` (its own process, the
same single guest CPU).  "First datagram through ESP": a UDP datagram from b reaches a
through the new SAs (b's outbound, a's inbound); the sender retries every 0.2 ms and sleeps
in ``select`` in between, so it does not steal the CPU from the peers it waits for.  That the
probe really rode ESP is checked on every run (the ESP packet counters of a's SAs grow).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

from ikeshim.errors import XfrmNotFoundError
from ikeshim.initiator import StoreWriter, resume_and_install
from ikeshim.xfrm import XFRM_POLICY_IN, XFRM_POLICY_OUT, Selector, XfrmPolicy, XfrmSocket
from tests.testbed.netns import in_netns
from tests.testbed.strongswan import A, B, Child, make_namespaces, start_charons

WORK = Path("/tmp/bench-e2e")  # the guest's private tmpfs (sockets, configs)
PROBE_PORT = 9999
SERVE_LOG = ["serve.out in the database directory"]
RESUME_PORT = 4501
BYPASS_PRIORITY = 100
PATHS = (
    "full_vici", "resume_lib", "resume_lib_overlap", "full_swanctl", "resume_cli", "agent_client",
)  # fmt: skip
CLIENT = Path(sys.executable).with_name("ikeresume-resume")


def _xfrm(ns: str) -> XfrmSocket:
    with in_netns(ns):
        return XfrmSocket()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "resume.cli", *args]


def _bypass_port(port: int) -> None:
    """The resumption port stays in clear between the peers (the probe port stays covered)."""
    for ns, local, remote in (("a", A.addr, B.addr), ("b", B.addr, A.addr)):
        with _xfrm(ns) as x:
            for d, src, dst in ((XFRM_POLICY_OUT, local, remote), (XFRM_POLICY_IN, remote, local)):
                for fld in ("dport", "sport"):
                    kw: dict[str, Any] = {fld: port, f"{fld}_mask": 0xFFFF}
                    sel = Selector(socket.AF_INET, dst, src, 32, 32, socket.IPPROTO_UDP, **kw)
                    x.add_policy(XfrmPolicy(selector=sel, dir=d, priority=BYPASS_PRIORITY))


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

    def first_through(self, timeout: float = 5.0, interval: float = 0.0002) -> float:
        """Send until a datagram arrives; return the perf_counter time of its arrival."""
        self.seq += 1
        tag = self.seq.to_bytes(4, "big")
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with contextlib.suppress(OSError):  # EAGAIN/EPERM while no SA matches yet
                self.tx.sendto(tag, (A.addr, PROBE_PORT))
            # Sleep (do not spin): the peers we wait for share this one guest CPU.
            if select.select([self.rx], [], [], interval)[0]:
                while True:
                    try:
                        data = self.rx.recv(64)
                    except BlockingIOError:
                        break
                    if data == tag:
                        return time.perf_counter()
        raise RuntimeError("no datagram got through")


def _esp_packets(x: XfrmSocket) -> int:
    return sum(s.curlft.packets for s in x.dump_sas())


def _clear_resumed(xa: XfrmSocket, xb: XfrmSocket, policies: int = 2) -> None:
    """Remove the resumed session's SAs and policies on both ends before the next run.

    First wait until the service has finished its install on a (both SAs and ``policies``
    policies): the probe gets through as soon as a's inbound SA exists, while the service
    may still be adding the outbound SA and the policies, which would outlive the cleanup.
    """
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        sas = [s for s in xa.dump_sas() if s.reqid & 0x40000000]
        pols = [p for p in xa.dump_policies() if p.priority == 1500]
        if len(sas) >= 2 and len(pols) >= policies:
            break
        time.sleep(0.001)
    for x in (xa, xb):
        for p in x.dump_policies():
            if p.priority == 1500:
                with contextlib.suppress(XfrmNotFoundError):
                    x.delete_policy(p.key())
        for s in x.dump_sas():
            if s.reqid & 0x40000000:
                with contextlib.suppress(XfrmNotFoundError):
                    x.delete_sa(s.key())


def summary(xs: list[float]) -> dict[str, float]:
    q = statistics.quantiles(xs, n=10)
    return {
        "median_ms": statistics.median(xs) * 1e3,
        "p10_ms": q[0] * 1e3,
        "p90_ms": q[-1] * 1e3,
        "min_ms": min(xs) * 1e3,
        "max_ms": max(xs) * 1e3,
        "n": len(xs),
    }


def _wait_listening(ns: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    """Until the server has bound its UDP port (its imports take seconds under UML)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["ip", "netns", "exec", ns, "ss", "-Hlun", f"sport = :{port}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if out.strip():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited (log in {SERVE_LOG[0]})")
        time.sleep(0.2)
    raise RuntimeError("serve did not bind its port")


def _wait_agent(log: Path, proc: subprocess.Popen[bytes]) -> None:
    """Until the agent has bound its socket (its "ready" line)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.exists() and '"ready"' in log.read_text():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError("the agent did not start")


def _unix(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def main(runs: int, out_path: str, db_dir: str) -> int:
    import vici

    from resume.initiator import InitiatorConfig
    from store.keys import Keyring, MasterKey
    from store.repository import Store

    WORK.mkdir(parents=True, exist_ok=True)
    dbs = Path(db_dir)
    dbs.mkdir(parents=True, exist_ok=True)
    key = MasterKey.generate().to_line()
    env = {**os.environ, "IKERESUME_MASTER_KEY": key}
    make_namespaces()
    charons = start_charons(WORK / "sw", [Child("host")])
    _bypass_port(RESUME_PORT)
    vb = vici.Session(_unix(B.vici_path()))
    # Full IKE once and harvest both ends (as `ikeresume harvest --once` does).
    charons.initiate("host")
    for p in (A, B):
        with in_netns(p.ns):
            subprocess.run(
                _cli("harvest", "--once", "--vici", p.vici_uri(), "--db", str(dbs / f"{p.ns}.db")),
                check=True,
                env=env,
                capture_output=True,
                timeout=120,
            )
    charons.terminate_ike("ike4")
    conf = WORK / "serve.toml"
    conf.write_text(
        f'[server]\nlisten = ["{A.addr}:{RESUME_PORT}"]\nserver_secret_file = "{WORK}/server.key"\n'
        f'[store]\nurl = "sqlite:///{dbs}/a.db"\nsqlite_synchronous = "FULL"\n'
        '[install]\nmode = "xfrm"\n[http]\nlisten = ""\n[log]\nlevel = "warning"\n'
    )
    with in_netns("a"):
        server = subprocess.Popen(
            _cli("serve", "--config", str(conf)),
            env=env,
            stdout=open(dbs / "serve.out", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
    agent_conf = WORK / "agent.toml"
    agent_conf.write_text(
        f'[agent]\nsocket = "{WORK}/agent.sock"\nvici = ""\n[store]\nurl = "sqlite:///{dbs}/b.db"\n'
        f'[peers.gw]\nserver = "{A.addr}:{RESUME_PORT}"\npeer = "fqdn:{A.ident}"\n'
        'install = "xfrm"\ntimeout = 5\nrto = 0.5\nretransmits = 3\n'
    )
    with in_netns("b"):
        agent = subprocess.Popen(
            _cli("agent", "-c", str(agent_conf), "run"),
            env=env,
            stdout=open(dbs / "agent.out", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
    store_b = Store.open(str(dbs / "b.db"), Keyring.from_text(key))
    probe = Probe()
    xa, xb = _xfrm("a"), _xfrm("b")
    _wait_listening("a", RESUME_PORT, server)
    _wait_agent(dbs / "agent.out", agent)
    agent_client = [str(CLIENT), "--socket", f"{WORK}/agent.sock", "gw"]
    id_r = bytes([2]) + A.ident.encode()
    cfg = InitiatorConfig(initial_rto=0.5, max_retransmits=3, timeout=5.0)
    cli_resume = _cli(
        "resume", "--server", f"{A.addr}:{RESUME_PORT}", "--peer", f"fqdn:{A.ident}",
        "--db", str(dbs / "b.db"), "--install", "xfrm", "--json",
    )  # fmt: skip
    swanctl = ["swanctl", "--initiate", "--child", "host", "--ike", "ike4", "--uri", B.vici_uri()]
    t: dict[str, list[float]] = {p: [] for p in PATHS}
    parts: dict[str, list[float]] = {}
    esp_ok = dict.fromkeys(PATHS, 0)

    def part(name: str, value: float) -> None:
        parts.setdefault(name, []).append(value)

    def through(path: str) -> float:
        try:
            return probe.first_through()
        except RuntimeError:
            print(f"{path}: nothing got through; serve log tail:", file=sys.stderr)
            print((dbs / "serve.out").read_text()[-3000:], file=sys.stderr)
            for name, x in (("a", xa), ("b", xb)):
                print(name, [(hex(s.spi), s.src, s.dst, s.reqid) for s in x.dump_sas()])
                print(name, [(p.dir, p.priority, p.selector) for p in x.dump_policies()])
            raise

    def verify_esp(path: str) -> None:
        before = _esp_packets(xa)
        probe.first_through()
        esp_ok[path] += _esp_packets(xa) > before

    def terminate_full() -> None:
        """Tear the IKE_SA down and wait until neither charon has SAs or policies left.

        Why wait: charon removes its policies by selector; had the next resumption taken
        them over first (same selectors), charon's late removal would delete the resumed
        session's policies.  In deployment a resumption follows a teardown by seconds or
        more; here it must not start before the teardown is complete either.
        """
        for _ in vb.terminate({"ike": "ike4", "timeout": 10000}):
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            # dir 3/4: per-socket policies (the service's bypass), not charon's
            left = [x for x in (xa, xb) if x.dump_sas() or any(
                p.priority != BYPASS_PRIORITY and p.dir < 3 for p in x.dump_policies()
            )]  # fmt: skip
            if not left:
                return
            time.sleep(0.001)
        raise RuntimeError(
            "charon left SAs or policies behind after terminate: "
            + repr([(x.dump_sas(), x.dump_policies()) for x in (xa, xb)])
        )

    def command_path(path: str, argv: list[str], tag: str, keep: bool) -> None:
        """A resuming command as a new process -> first ESP; its exit and its exchange."""
        probe.drain()
        t0 = time.perf_counter()
        out = subprocess.run(argv, env=env, capture_output=True, timeout=30, check=False)
        t_done = time.perf_counter()
        if out.returncode != 0:
            raise RuntimeError(f"{path} exited {out.returncode}: {out.stderr!r}")
        t1 = probe.first_through()
        if keep:
            t[path].append(t1 - t0)
            part(f"{tag}_process_exit", t_done - t0)
            reply = json.loads(out.stdout)
            part(f"{tag}_exchange", reply["elapsed_ms"] / 1e3)
            if "agent_ms" in reply:  # the agent's whole work: lookup .. install
                part(f"{tag}_agent_work", reply["agent_ms"] / 1e3)
        verify_esp(path)
        _clear_resumed(xa, xb)

    async def loop() -> None:
        for i in range(runs + 1):  # run 0 warms caches and is discarded
            keep = i > 0
            # -- strongSwan, in-process VICI --
            probe.drain()
            t0 = time.perf_counter()
            for _ in vb.initiate({"child": "host", "ike": "ike4", "timeout": 10000}):
                pass
            t1 = probe.first_through()
            if keep:
                t["full_vici"].append(t1 - t0)
            verify_esp("full_vici")
            terminate_full()
            # -- resumption, library in this long-running process --
            for path, overlap in (("resume_lib", False), ("resume_lib_overlap", True)):
                probe.drain()
                t0 = time.perf_counter()
                r = await resume_and_install(
                    store_b, id_r, (A.addr, RESUME_PORT), xb, config=cfg,
                    writer=writer if overlap else None, overlap_write=overlap,
                )  # fmt: skip
                t_done = time.perf_counter()
                if not r.resumed:
                    raise RuntimeError(f"resumption {i} failed: {r.outcome} {r.detail}")
                t1 = through(path)
                if keep:
                    t[path].append(t1 - t0)
                    tag = "lib_overlap" if overlap else "lib"
                    for k, v in r.timings.items():
                        part(f"{tag}_{k}", v)
                    part(f"{tag}_until_responder_passes_esp", t1 - t_done)
                verify_esp(path)
                _clear_resumed(xa, xb)
            # -- strongSwan, swanctl process --
            probe.drain()
            t0 = time.perf_counter()
            subprocess.run(swanctl, check=True, capture_output=True, timeout=30)
            t1 = probe.first_through()
            if keep:
                t["full_swanctl"].append(t1 - t0)
            verify_esp("full_swanctl")
            terminate_full()
            # -- resumption, `ikeresume resume` process; native client -> resident agent --
            for path, argv, tag in (
                ("resume_cli", cli_resume, "cli"),
                ("agent_client", agent_client, "agent"),
            ):
                command_path(path, argv, tag, keep)
            print(f"run {i}: " + " ".join(f"{p} {t[p][-1] * 1e3:.1f}ms" for p in PATHS if t[p]))
            sys.stdout.flush()

    # The initiator's sockets (UDP for the exchange, processes it starts) live in b.
    with in_netns("b"), StoreWriter() as writer:
        trio.run(loop)
    server.terminate()
    server.wait(timeout=30)
    agent.terminate()
    agent.wait(timeout=30)
    charons.stop()
    store_b.close()

    result: dict[str, Any] = {p: summary(t[p]) for p in PATHS}
    result["breakdown"] = {k: summary(v) for k, v in parts.items()}
    med = {p: statistics.median(t[p]) for p in PATHS}
    result["ratio_lib"] = med["full_vici"] / med["resume_lib"]
    result["ratio_lib_overlap"] = med["full_vici"] / med["resume_lib_overlap"]
    result["ratio_cli"] = med["full_swanctl"] / med["resume_cli"]
    result["ratio_agent"] = med["full_swanctl"] / med["agent_client"]
    result["esp_verified"] = esp_ok
    result["runs"] = runs
    result["guest_kernel"] = os.uname().release
    result["db_dir"] = db_dir
    result["sqlite_synchronous"] = "FULL (initiator and responder)"
    result["strongswan_proposals"] = "IKE aes128-sha256-x25519 PSK, ESP aes128gcm16, transport"
    Path(out_path).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
