"""The client command on the host, without ESP: ``ikeresume-resume`` (native client, resident
agent) next to ``ikeresume resume`` (one Python process per attempt), one run.

The parts of issue 14's client path that need no kernel ESP: process start, the request,
the lookup, the exchange against ``ikeresume serve`` on 127.0.0.1 and the durable
write-ahead (SQLite, ``synchronous=FULL``); no install (``install = "none"``).  Each path
resumes its own credential chain, interleaved run by run.  Reported: wall time of the
command (median, p10, p90) and the CPU it burnt (user+system of the client process; the
agent's share is not in it -- it is in ``agent_cpu_ms_per_request``).  ``swanctl
--initiate`` cannot run here (the host kernel has no ESP); bench_e2e.py compares with it in
UML.

Run::

    python bench/bench_agent.py --runs 40 --json bench/results/bench_agent.json
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import cpu_model, write_json

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from resume.testing import simulated_full_ike  # noqa: E402
from store.keys import Keyring, MasterKey  # noqa: E402
from store.repository import Store  # noqa: E402

CLIENT = Path(sys.executable).with_name("ikeresume-resume")
ID_R = b"\x02vpn.example.org"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for(pred: Any, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if pred():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: exited: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not ready after 60 s")


def _summary(xs: list[float]) -> dict[str, float]:
    q = statistics.quantiles(xs, n=10)
    return {"median_ms": statistics.median(xs) * 1e3, "p10_ms": q[0] * 1e3,
            "p90_ms": q[-1] * 1e3, "n": len(xs)}  # fmt: skip


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) for one command that must exit 0."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, check=False, timeout=60)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {out.returncode}: {out.stderr!r}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    if not CLIENT.is_file():
        print("bench_agent: ikeresume-resume not built (pip install -e .)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    key = MasterKey.generate()
    (tmp / "master.key").write_text(key.to_line() + "\n")
    kr = Keyring([key])
    now = time.time()
    with Store.open(f"sqlite:///{tmp}/server.db", kr) as ss, \
            Store.open(f"sqlite:///{tmp}/client.db", kr) as cs:  # fmt: skip
        for n in (0, 1):
            c = simulated_full_ike(id_i=b"\x02client%d.example.org" % n, id_r=ID_R)
            ss.upsert_full_ike("responder", c, now)
            cs.upsert_full_ike("initiator", c, now)
    port = _free_port()
    (tmp / "serve.toml").write_text(
        f'[server]\nlisten = ["127.0.0.1:{port}"]\nserver_secret_file = "{tmp}/server.secret"\n'
        f'[store]\nurl = "sqlite:///{tmp}/server.db"\nkey_file = "{tmp}/master.key"\n'
        'sqlite_synchronous = "FULL"\n[http]\nlisten = ""\n[log]\nlevel = "warning"\n'
    )
    (tmp / "agent.toml").write_text(
        f'[agent]\nsocket = "{tmp}/agent.sock"\nvici = ""\n'
        f'[store]\nurl = "sqlite:///{tmp}/client.db"\nkey_file = "{tmp}/master.key"\n'
        f'[peers.gw]\nserver = "127.0.0.1:{port}"\npeer = "fqdn:vpn.example.org"\n'
        'id = "fqdn:client1.example.org"\ninstall = "none"\ntimeout = 10\nrto = 1\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("IKERESUME_")}
    env["IKERESUME_MASTER_KEY_FILE"] = str(tmp / "master.key")
    cli = Path(sys.executable).with_name("ikeresume")
    procs = []
    try:
        for name, argv in (
            ("serve", [str(cli), "serve", "-c", str(tmp / "serve.toml")]),
            ("agent", [str(cli), "agent", "-c", str(tmp / "agent.toml"), "run"]),
        ):
            log = tmp / f"{name}.out"
            procs.append(
                subprocess.Popen(argv, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
            )
        agent_log = tmp / "agent.out"
        _wait_for(lambda: '"ready"' in agent_log.read_text(), "agent", procs[1], agent_log)
        resume = [str(cli), "resume", "--server", f"127.0.0.1:{port}", "--peer",
                  "fqdn:vpn.example.org", "--id", "fqdn:client0.example.org",
                  "--db", f"sqlite:///{tmp}/client.db", "--timeout", "10",
                  "--rto", "1"]  # fmt: skip
        client = [str(CLIENT), "--socket", str(tmp / "agent.sock"), "gw"]
        wall: dict[str, list[float]] = {"resume_cli": [], "agent_client": []}
        cpu: dict[str, list[float]] = {"resume_cli": [], "agent_client": []}
        agent_cpu0 = 0.0
        for i in range(args.runs + 1):  # run 0 warms caches and is discarded
            if i == 1:
                agent_cpu0 = _proc_cpu(procs[1].pid)
            for path, argv in (("resume_cli", resume), ("agent_client", client)):
                w, c = _timed(argv, env)
                if i:
                    wall[path].append(w)
                    cpu[path].append(c)
        agent_cpu = (_proc_cpu(procs[1].pid) - agent_cpu0) / args.runs
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)
    load = os.getloadavg()
    data: dict[str, Any] = {
        "wall": {p: _summary(v) for p, v in wall.items()},
        "cpu": {p: _summary(v) for p, v in cpu.items()},
        "agent_cpu_ms_per_request": agent_cpu * 1e3,
        "ratio_wall": statistics.median(wall["resume_cli"])
        / statistics.median(wall["agent_client"]),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "loadavg": load},
        "runs": args.runs,
        "command": "python " + " ".join(sys.argv),
    }
    m = data["machine"]
    print(f"machine: {m['cpu']} x{m['cores']}, load average {load[0]:.2f} {load[1]:.2f} "
          f"{load[2]:.2f}; {args.runs} interleaved runs, host, no ESP, no install")  # fmt: skip
    print(f"{'':40} {'median':>9} {'p10':>9} {'p90':>9}")
    for label, kind, path in (
        ("ikeresume resume: wall", "wall", "resume_cli"),
        ("ikeresume-resume -> agent: wall", "wall", "agent_client"),
        ("ikeresume resume: CPU of the process", "cpu", "resume_cli"),
        ("ikeresume-resume: CPU of the process", "cpu", "agent_client"),
    ):
        d = data[kind][path]
        print(f"{label:40} {d['median_ms']:7.2f}ms {d['p10_ms']:7.2f}ms {d['p90_ms']:7.2f}ms")
    print(f"agent CPU per request (mean): {data['agent_cpu_ms_per_request']:.2f} ms")
    print(f"ratio (ikeresume resume / ikeresume-resume), wall: {data['ratio_wall']:.1f}x")
    write_json(args.json, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
