"""The native responder service vs the Python service, the CPython floor and strongSwan.

One run, side by side, on this machine (issue 13's targets):

1. **Capacity** (per round): the responder service in its own process pinned to CPU 0 --
   ``ikeresume serve``'s service, durable SQLite (WAL, ``synchronous=FULL``, group commit:
   every accept durable before its completion) -- driven by the Rust load generator
   (``native/examples/loadgen.rs``, native initiator engine, 2048 loopback sources) pinned to
   CPU 1, closed loop.  Reported: achieved resumptions/s and the responder process's CPU per
   resumption (every thread, from ``/proc/PID/task/*/schedstat``): ``1e6 / us`` is the
   one-core capacity even where the generator or a busy machine does not saturate it.
   Native engine without and with X25519, and the Python engine (same generator).
2. **strongSwan** (per round): responder CPU per full IKEv2 handshake, PSK+x25519 and
   RSA-2048+MODP-2048 (``bench_strongswan.py``); each ratio is taken within its round.
3. **Floor**: ``bench_floor.py``'s CPython floor (UDP calls, hashing, X25519, SQLite).
4. **Latency** at 50% and 90% of the measured one-core capacity (open loop): message 1
   sent -> valid message 2 (keys in hand) at the client, message 3 -> durable commit at the
   responder; p50/p99.  Without and with X25519.
5. **Flood**: legitimate resumptions at 25% of capacity while the generator's flood thread
   sends 10x that rate, half random garbage (half of it with a valid-looking header), half
   message 1s replayed from the legitimate traffic, from 4096 source addresses
   (127.20.0.0/16), under the service's default per-source limits.  Success ratio, p99,
   drops by reason, the responder's RSS (current and peak).
6. **PostgreSQL**: a private server (``fsync=on``), the native engine (lookups and accepts
   through the Python store, in batches) and the Python engine: resumptions/s of one
   responder process and its CPU per resumption.

Every accept is durable before it counts; only loopback traffic; the machine is shared, so
runs are short and the load average is recorded.  Writes ``bench/results/native_server.json``::

    python bench/bench_native_server.py             # ~4 min
    python bench/bench_native_server.py --quick     # ~1.5 min, indicative only
    python bench/bench_native_server.py --repeat 3  # medians of 3 rounds
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # tests.facilities (PostgreSQL)

from bench_strongswan import (
    machine_description,
    measure_strongswan,
    proc_cpu_seconds,
    strongswan_available,
)
from benchlib import pin_cpu as _pin

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ROOT / "native"
LOADGEN = NATIVE / "target" / "release" / "examples" / "loadgen"
SERVER_CPU, CLIENT_CPU = 0, 1
ID_R = b"\x02vpn.example.org"
SOURCES = 2048
FLOOD_SOURCES = 4096
RESULTS = Path(__file__).resolve().parent / "results"
#: issue 13's targets: resumptions/s on one core; strongSwan CPU / ours; flood
TARGETS = {
    "no_x25519_per_s": 50_000,
    "x25519_per_s": 15_000,
    "psk-x25519": 40,
    "rsa-modp2048": 300,
    "psk-x25519_with_x25519": 10,
    "flood_ok": 0.99,
    "flood_p99_ms": 5.0,
}


def build_loadgen() -> None:
    subprocess.run(
        ["cargo", "build", "-q", "--release", "--features", "server", "--example", "loadgen"],
        cwd=NATIVE,
        check=True,
    )


# -- the responder process --------------------------------------------------------------------
def _thread_cpu(pid: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            name = (task / "comm").read_text().strip()
            ns = int((task / "schedstat").read_text().split()[0])
            out[name] = out.get(name, 0.0) + ns / 1e9
    return out


def _rss_kib(pid: int) -> dict[str, int]:
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0])
    return out


def _server_main(
    url: str, key_line: str, wd: str, engine: str, x25519: bool, flood: bool, conn: Any
) -> None:
    _pin(SERVER_CPU)
    import trio

    from resume.net.config import from_mapping
    from resume.net.service import make_service
    from store.keys import Keyring
    from store.repository import Store

    store = Store.open(url, Keyring.from_text(key_line))
    limits: dict[str, Any] = {"max_pending": 16384}
    if not flood:  # the capacity phases' 2048 sources each send ~100 datagrams/s
        limits |= {"per_source_rate": 1000.0, "per_source_burst": 2000.0}
    cfg = from_mapping(
        {
            "server": {
                "listen": ["127.0.0.1:0"],
                "server_secret_file": f"{wd}/server.key",
                "recv_batch": 64,
                "engine": engine,
            },
            "store": {"group_commit_max": 1024},
            "limits": limits,
            "protocol": {
                "max_pending": 16384,
                "response_cache_size": 65536,
                "allow_x25519": x25519,
            },
            "http": {"listen": ""},
            "log": {"level": "error"},
        }
    )

    async def main() -> None:
        svc = make_service(cfg, store)
        svc.latency_samples = []
        async with trio.open_nursery() as n:
            await n.start(svc.run)
            conn.send({"addr": svc.addresses[0], "pid": os.getpid(), "engine": svc.engine})
            while (cmd := await trio.to_thread.run_sync(conn.recv)) != "stop":
                m = svc.metrics
                if cmd == "mark":
                    svc.latency_samples = []
                conn.send(
                    {
                        "resumed": m.exchanges.get("resumed"),
                        "transactions": m.commit_batches.get(),
                        "exchanges": {k[0]: v for k, v in m.exchanges.values.items() if v},
                        "drops": {k[0]: v for k, v in m.drops.values.items() if v},
                        "cache": {k[0]: v for k, v in m.cache.values.items() if v},
                        "latency": list(svc.latency_samples or []),
                    }
                )
            svc.shutdown()

    trio.run(main)
    store.close()


class Server:
    def __init__(
        self, url: str, key_line: str, wd: str, engine: str, x25519: bool, flood: bool = False
    ) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_server_main, args=(url, key_line, wd, engine, x25519, flood, child)
        )
        self.proc.start()
        hello = self.conn.recv()
        self.addr: tuple[str, int] = tuple(hello["addr"])  # type: ignore[assignment]
        self.pid: int = hello["pid"]
        self.engine: str = hello["engine"]

    def stats(self, mark: bool = False) -> dict[str, Any]:
        self.conn.send("mark" if mark else "stats")
        out: dict[str, Any] = self.conn.recv()
        return out

    def stop(self) -> None:
        self.conn.send("stop")
        self.proc.join(60)


# -- one phase: a server, the generator, the window ---------------------------------------------
def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def phase(
    url: str,
    key_line: str,
    wd: str,
    creds: Path,
    *,
    engine: str,
    x25519: bool,
    duration: float,
    rate: float = 0.0,
    window: int = 1024,
    flood_rate: float = 0.0,
    sources: int = SOURCES,
) -> dict[str, Any]:
    """One fresh responder; warm-up, then the measured window (CPU from schedstat)."""
    srv = Server(url, key_line, wd, engine, x25519, flood=flood_rate > 0)
    host, port = srv.addr
    argv = [
        str(LOADGEN),
        "--server",
        f"{host}:{port}",
        "--creds",
        str(creds),
        "--duration",
        str(duration),
        "--warmup",
        "1",
        "--cpu",
        str(CLIENT_CPU),
        "--window",
        str(window),
        "--sources",
        str(sources),
        "--x25519",
        "1" if x25519 else "0",
        "--rate",
        str(rate),
        "--flood-rate",
        str(flood_rate),
        "--flood-sources",
        str(FLOOD_SOURCES),
        "--rto",
        "0.5",
        "--timeout",
        "4",
    ]
    try:
        lg = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert lg.stdout is not None
        lg.stdout.readline()  # {"phase": "measure"}
        s0, c0, t0 = srv.stats(mark=True), proc_cpu_seconds(srv.pid), _thread_cpu(srv.pid)
        client = json.loads(lg.stdout.readline())
        lg.wait()
        time.sleep(0.3)  # the last message 3s reach durable commit
        s1, c1, t1 = srv.stats(), proc_cpu_seconds(srv.pid), _thread_cpu(srv.pid)
        rss = _rss_kib(srv.pid)
    finally:
        srv.stop()
    n = s1["resumed"] - s0["resumed"]
    us = (c1 - c0) / n * 1e6 if n else float("nan")
    lat = s1["latency"]
    return {
        "engine": srv.engine,
        "x25519": x25519,
        "offered_rate": rate or None,
        "client": client,
        "server": {
            "resumed": n,
            "cpu_s": round(c1 - c0, 4),
            "us_cpu_per_resumption": round(us, 2),
            "one_core_capacity_per_s": round(1e6 / us) if n else 0,
            "threads_us_per_resumption": {
                k: round((v - t0.get(k, 0.0)) / max(1, n) * 1e6, 2)
                for k, v in t1.items()
                if v - t0.get(k, 0.0) > 0.0005
            },
            "transactions": s1["transactions"] - s0["transactions"],
            "msg3_to_durable_ms": {
                "n": len(lat),
                "p50": round(_pct(lat, 0.5) * 1e3, 3),
                "p99": round(_pct(lat, 0.99) * 1e3, 3),
            },
            "drops": s1["drops"],
            "cache": s1["cache"],
            "exchanges": s1["exchanges"],
            "rss_kib": rss,
        },
    }


# -- seeding -------------------------------------------------------------------------------------
_COPIES = itertools.count()


def fresh_copy(template: Path) -> str:
    """A copy of the seeded SQLite cache for one phase: every phase starts from the
    generations the generator's credential file holds (a phase advances its ratchets)."""
    dst = template.with_name(f"phase-{next(_COPIES)}.db")
    for suffix in ("", "-wal"):
        src = Path(f"{template}{suffix}")
        if src.exists():
            shutil.copyfile(src, f"{dst}{suffix}")
    return f"sqlite:///{dst}"


def seed(url: str, n: int, out: Path) -> str:
    from resume.testing import simulated_full_ike
    from store.codec import params_text
    from store.keys import Keyring, MasterKey
    from store.repository import Store

    mk = MasterKey.generate()
    creds = [simulated_full_ike(id_i=b"\x02client-%06d" % i, id_r=ID_R) for i in range(n)]
    with Store.open(url, Keyring([mk]), sqlite_synchronous="NORMAL") as store:
        store.upsert_full_ike_many("responder", creds, time.time())
    with out.open("w") as f:
        for c in creds:
            f.write(
                json.dumps(
                    {
                        "handle": c.handle.hex(),
                        "generation": c.generation,
                        "secret": c.secret.hex(),
                        "id_i": c.id_i.hex(),
                        "id_r": c.id_r.hex(),
                        "params": params_text(c.params),
                    }
                )
                + "\n"
            )
    return mk.to_line()


# -- the run -------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=4.0, help="seconds per measured window")
    ap.add_argument("--pool", type=int, default=30_000, help="credentials seeded")
    ap.add_argument("--handshakes", type=int, default=200, help="strongSwan handshakes/suite")
    ap.add_argument("--repeat", type=int, default=1, help="capacity rounds (medians)")
    ap.add_argument("--quick", action="store_true", help="short phases (indicative only)")
    ap.add_argument("--no-strongswan", action="store_true")
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--no-python", action="store_true", help="skip the Python engine")
    ap.add_argument("--json", metavar="PATH", default=str(RESULTS / "native_server.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.pool, args.handshakes = 2.0, 12_000, 60
    build_loadgen()
    _pin(CLIENT_CPU)
    load0 = os.getloadavg()
    out: dict[str, Any] = {"machine": machine_description(), "config": vars(args)}
    with_ss = not args.no_strongswan and strongswan_available()
    wd = tempfile.mkdtemp(prefix="ikr-native-bench-", dir="/var/tmp")
    template = Path(wd) / "responder.db"
    url = f"sqlite:///{template}"
    creds = Path(wd) / "creds.jsonl"
    key_line = seed(url, args.pool, creds)

    rounds: list[dict[str, Any]] = []
    for k in range(args.repeat):
        r: dict[str, Any] = {}
        for suite in ("psk-x25519", "rsa-modp2048") if with_ss else ():
            ss = measure_strongswan(suite, args.handshakes)
            r[f"strongswan_{suite}"] = asdict(ss)
            print(
                f"round {k + 1}: strongSwan {suite}: {ss.us_per_handshake:.0f} us responder "
                "CPU per full handshake"
            )
        for name, engine, x in (
            ("native", "native", False),
            ("native_x25519", "native", True),
            ("python", "python", False),
        ):
            if engine == "python" and args.no_python:
                continue
            p = phase(
                fresh_copy(template), key_line, wd, creds, engine=engine, x25519=x,
                duration=args.duration,
            )  # fmt: skip
            r[name] = p
            s = p["server"]
            print(
                f"round {k + 1}: {name}: achieved {p['client']['rate']:,.0f}/s; responder "
                f"{s['us_cpu_per_resumption']} us CPU/resumption => "
                f"{s['one_core_capacity_per_s']:,}/s per core; by thread "
                f"{s['threads_us_per_resumption']}"
            )
        rounds.append(r)
    out["rounds"] = rounds

    def med(name: str) -> float:
        return float(statistics.median(r[name]["server"]["us_cpu_per_resumption"] for r in rounds))

    from bench_floor import crypto_floor, sqlite_floor, udp_floor

    _pin(CLIENT_CPU)
    udp = udp_floor(20_000)
    _pin(SERVER_CPU)
    crypto, db = crypto_floor(10_000), sqlite_floor()
    _pin(CLIENT_CPU)
    io = 2 * udp["recv_us"] + udp["send_us"]
    floor = io + crypto["hashing_us"] + db["read_us"] + db["update_row_us"]
    out["floor"] = {
        "udp": udp,
        "crypto": crypto,
        "sqlite": db,
        "no_x25519_us": round(floor, 1),
        "x25519_us": round(floor + crypto["x25519_us"], 1),
    }
    print(
        f"CPython floor: {floor:.1f} us/resumption without X25519, "
        f"{floor + crypto['x25519_us']:.1f} with"
    )

    loads: dict[str, Any] = {}
    for name, x in (("native", False), ("native_x25519", True)):
        cap = 1e6 / med(name)
        for frac in (0.5, 0.9):
            p = phase(
                fresh_copy(template),
                key_line,
                wd,
                creds,
                engine="native",
                x25519=x,
                duration=args.duration,
                rate=round(cap * frac),
            )
            loads[f"{name}@{int(frac * 100)}%"] = p
            c, d = p["client"], p["server"]["msg3_to_durable_ms"]
            print(
                f"{name} at {frac:.0%} ({cap * frac:,.0f}/s offered): achieved "
                f"{c['rate']:,.0f}/s; to keys p50 {c['latency_ms']['p50']:.2f} p99 "
                f"{c['latency_ms']['p99']:.2f} ms; msg3->durable p50 {d['p50']} p99 "
                f"{d['p99']} ms"
            )
    out["latency_at_load"] = loads

    legit = round(0.25 * 1e6 / med("native"))
    fl = phase(
        fresh_copy(template),
        key_line,
        wd,
        creds,
        engine="native",
        x25519=False,
        duration=args.duration,
        rate=legit,
        flood_rate=10 * legit,
        sources=FLOOD_SOURCES,
    )
    c = fl["client"]
    ok = c["resumed"] / max(1, c["started"])
    out["flood"] = {"legit_rate": legit, "flood_rate": 10 * legit, "success_ratio": ok, **fl}
    print(
        f"flood: legit {legit:,}/s + {10 * legit:,}/s garbage/replayed message 1 from "
        f"{FLOOD_SOURCES} sources: success {ok:.4f}, p99 {c['latency_ms']['p99']:.2f} ms, "
        f"RSS {fl['server']['rss_kib']}; drops {fl['server']['drops']}"
    )

    if not args.no_pg:
        out["postgresql"] = postgres_phases(args)
    out["load_average"] = {"start": load0, "end": os.getloadavg()}
    out["summary"] = summary(out, with_ss)
    print_summary(out["summary"], args.quick)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    print(f"wrote {args.json}")
    return 0


def postgres_phases(args: argparse.Namespace) -> dict[str, Any]:
    from tests.facilities import PostgresCluster, pg_available

    ok, why = pg_available()
    if not ok:
        print(f"PostgreSQL skipped: {why}")
        return {"skipped": why}
    base = tempfile.mkdtemp(prefix="ikr-native-bench-pg-", dir="/var/tmp")
    os.chmod(base, 0o755)  # traversable by the postgres user
    res: dict[str, Any] = {}
    with PostgresCluster(fsync=True, base=base) as pg:
        wd = tempfile.mkdtemp(prefix="ikr-native-bench-pgc-", dir="/var/tmp")
        for engine in ("native", "python"):  # each on a freshly seeded database
            url = pg.create_database(f"bench_{engine}")
            creds = Path(wd) / f"creds-{engine}.jsonl"
            key_line = seed(url, min(args.pool, 10_000), creds)
            p = phase(
                url,
                key_line,
                wd,
                creds,
                engine=engine,
                x25519=False,
                duration=args.duration,
                window=256,
            )
            res[engine] = p
            print(
                f"PostgreSQL, {engine} engine: achieved {p['client']['rate']:,.0f}/s per "
                f"responder process; {p['server']['us_cpu_per_resumption']} us responder "
                "CPU/resumption"
            )
    return res


def summary(out: dict[str, Any], with_ss: bool) -> list[dict[str, str]]:
    rounds = out["rounds"]

    def med(name: str) -> float:
        return float(statistics.median(r[name]["server"]["us_cpu_per_resumption"] for r in rounds))

    rows = []
    fl = out["floor"]
    py = med("python") if "python" in rounds[0] else float("nan")
    for name, target, floor in (
        ("native", TARGETS["no_x25519_per_s"], fl["no_x25519_us"]),
        ("native_x25519", TARGETS["x25519_per_s"], fl["x25519_us"]),
    ):
        us = med(name)
        cap = 1e6 / us
        achieved = statistics.median(r[name]["client"]["rate"] for r in rounds)
        rows.append(
            {
                "measure": "resumptions/s, one core, durable SQLite "
                f"({'with' if 'x25519' in name else 'no'} X25519)",
                "native": f"{cap:,.0f} ({us:.1f} us CPU; {achieved:,.0f}/s achieved)",
                "baseline": f"Python service {1e6 / py:,.0f} ({py:.0f} us)"
                if "x25519" not in name
                else f"CPython floor {1e6 / floor:,.0f} ({floor:.0f} us)",
                "ratio": f"{py / us:.1f}x the Python service"
                if "x25519" not in name
                else f"floor/native {floor / us:.2f}",
                "target": f">= {target:,}",
                "met": "yes" if cap >= target else "NO",
            }
        )
    rows.append(
        {
            "measure": "CPython floor (bench_floor): no X25519 / X25519",
            "native": "",
            "baseline": f"{fl['no_x25519_us']} / {fl['x25519_us']} us",
            "ratio": f"floor/native {fl['no_x25519_us'] / med('native'):.2f}",
            "target": "",
            "met": "",
        }
    )
    if with_ss:
        for suite, name, target in (
            ("psk-x25519", "native", TARGETS["psk-x25519"]),
            ("rsa-modp2048", "native", TARGETS["rsa-modp2048"]),
            ("psk-x25519", "native_x25519", TARGETS["psk-x25519_with_x25519"]),
        ):
            ratios = [
                r[f"strongswan_{suite}"]["us_per_handshake"]
                / r[name]["server"]["us_cpu_per_resumption"]
                for r in rounds
            ]
            ratio = statistics.median(ratios)
            ss_us = statistics.median(r[f"strongswan_{suite}"]["us_per_handshake"] for r in rounds)
            rows.append(
                {
                    "measure": f"responder CPU vs strongSwan full IKEv2 {suite}"
                    + (" (native with X25519)" if "x25519" in name else " (native, no X25519)"),
                    "native": f"{med(name):.1f} us",
                    "baseline": f"{ss_us:.0f} us",
                    "ratio": f"1/{ratio:.1f}",
                    "target": f"<= 1/{target}",
                    "met": "yes" if ratio >= target else "NO",
                }
            )
    for key, p in out["latency_at_load"].items():
        c, d = p["client"], p["server"]["msg3_to_durable_ms"]
        rows.append(
            {
                "measure": f"latency {key} ({p['offered_rate']:,}/s offered)",
                "native": f"to keys p50 {c['latency_ms']['p50']:.2f} / "
                f"p99 {c['latency_ms']['p99']:.2f} ms",
                "baseline": f"msg3->durable {d['p50']} / {d['p99']} ms",
                "ratio": f"{c['rate']:,.0f}/s achieved",
                "target": "",
                "met": "",
            }
        )
    fl_ = out["flood"]
    c = fl_["client"]
    p99 = c["latency_ms"]["p99"]
    rows.append(
        {
            "measure": f"flood: legit {fl_['legit_rate']:,}/s + 10x garbage/replayed msg1, "
            f"{FLOOD_SOURCES} sources",
            "native": f"success {fl_['success_ratio']:.4f}, p99 {p99:.2f} ms",
            "baseline": f"RSS {fl_['server']['rss_kib'].get('VmRSS', 0) / 1024:.0f} MiB "
            f"(peak {fl_['server']['rss_kib'].get('VmHWM', 0) / 1024:.0f})",
            "ratio": "",
            "target": ">= 99%, p99 < 5 ms",
            "met": "yes"
            if fl_["success_ratio"] >= TARGETS["flood_ok"] and p99 < TARGETS["flood_p99_ms"]
            else "NO",
        }
    )
    pg = out.get("postgresql", {})
    if "native" in pg:
        n, p = pg["native"], pg["python"]
        rows.append(
            {
                "measure": "PostgreSQL store: resumptions/s per responder process",
                "native": f"{n['client']['rate']:,.0f}/s "
                f"({n['server']['us_cpu_per_resumption']} us)",
                "baseline": f"Python engine {p['client']['rate']:,.0f}/s "
                f"({p['server']['us_cpu_per_resumption']} us)",
                "ratio": f"{n['client']['rate'] / max(1.0, p['client']['rate']):.1f}x",
                "target": "",
                "met": "",
            }
        )
    return rows


def print_summary(rows: list[dict[str, str]], quick: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title="native responder service vs baselines"
        + (" (--quick: indicative only)" if quick else "")
    )
    cols = ("measure", "native", "baseline", "ratio", "target", "met")
    for col in cols:
        t.add_column(col)
    for r in rows:
        t.add_row(*(r[c] for c in cols))
    Console(width=200).print(t)


if __name__ == "__main__":
    sys.exit(main())
