"""Durable ratchet accepts per second: group commit next to one-row-per-transaction.

For each store (SQLite WAL synchronous=FULL, SQLite synchronous=NORMAL, PostgreSQL with
fsync on) and each concurrency (1, 100 and 1000 accepts in flight), in the SAME run:

* group     -- ``GroupCommitter`` (one worker thread; every transaction takes everything
               queued; no accept acknowledged before its transaction is durable);
* baseline  -- the same path with ``max_batch=1``: one row per transaction, the plain way;
* direct    -- (concurrency 1 only) ``Store.commit_ratchet`` called inline, no thread hop;
* resume    -- the store's whole share of one resumption: ``Store.lookup`` at message 1,
               then the group-committed CAS, as the responder service does (message 3
               reuses message 1's credential inside the protocol core); ``--lookups 2``
               adds the message-3 read a core without that cache makes.
* outbox    -- ``resume`` as a service that installs SAs runs it: every CAS also inserts
               its SA pair into the install outbox (keys wrapped), and the row is deleted
               again in a later transaction (spec 6.2.1) -- its cost next to ``resume``.

Accepts come from trio tasks awaiting ``committer.commit_ratchet`` exactly as the responder
service does; each accept is a compare-and-set of (handle, generation) with a successor
wrapped under AES-256-GCM.  Successor credentials are generated before timing (and frozen
out of the garbage collector's sight: they stand for objects a real responder creates one
at a time).  Each cell runs for ``--seconds`` (or until ``--max-accepts``) over
``--records`` cached records (loaded with one ``upsert_full_ike_many`` transaction).

By default the process is pinned to ONE CPU (``--cpus 1``) so that "accepts/s on one core"
means what it says: trio, the committer thread, SQLite and the encryption share that core.
(The PostgreSQL server's own processes are not pinned: it is the shared store.)  Also
reported: CPU time per accept of this process (all its threads, user + system, which
includes the kernel's work for write() and fsync()), transactions and mean batch size,
latency percentiles, single-thread lookups/s, and ``store_cap_one_core``: the resumptions/s
one core could sustain if it did nothing but the store's work (1e6 / CPU us per resumption
of the ``resume`` cells) -- the figure to hold against the 25,000/s target, since wall-clock
rates at low concurrency are bounded by the disk's sync latency instead.  A calibration
(a pure-Python loop, a bare sqlite3 primary-key SELECT) describes the machine's speed.

    python bench/bench_store.py [--seconds 1.5] [--records 10000] [--json] [--no-pg]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy
import trio
from benchlib import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resume.credential import Credential
from resume.sa import DirectionKeys, Lifetimes, SAPair
from store.committer import GroupCommitter
from store.keys import Keyring, MasterKey
from store.outbox import InstallIntent
from store.policy import Policy
from store.repository import Store
from tests.store.helpers import make_credential

RESULTS = Path(__file__).resolve().parent / "results"
NOW = 1_800_000_000.0
TARGET = 25_000


def machine(db_dir: str) -> dict[str, Any]:
    cpu = cpu_model()
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024 // 1024} GiB"
    except OSError:
        pass
    fs = None
    try:
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, typ, *_ = line.split()
            if db_dir.startswith(mnt) and len(mnt) > len(best):
                best, fs = mnt, f"{typ} on {dev} (mounted at {mnt})"
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "memory": mem,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sqlalchemy.__version__,
        "db_directory": db_dir,
        "db_filesystem": fs,
        "pinned_cpus": sorted(os.sched_getaffinity(0)),
    }


def _next(c: Credential) -> Credential:
    """The successor the core would hand over (fresh handle and secret, same peers)."""
    r = os.urandom(48)
    return Credential(
        mode=c.mode, handle=r[:16], generation=c.generation + 1, secret=r[16:],
        id_i=c.id_i, id_r=c.id_r, params=c.params,
    )  # fmt: skip


def _intent(c: Credential) -> InstallIntent:
    """An SA pair as the responder's core reports it (random keys and SPIs)."""
    r = os.urandom(80)
    sa = SAPair(
        "responder", c.params,
        DirectionKeys(0x1000 + r[0], r[8:44], b""), DirectionKeys(0x2000 + r[1], r[44:80], b""),
        Lifetimes(soft_seconds=3240, hard_seconds=3600),
    )  # fmt: skip
    return InstallIntent.new("bench", sa)


def populate(store: Store, n: int) -> list[Credential]:
    creds = [make_credential(peer=f"peer{i}.example") for i in range(n)]
    for k in range(0, n, 5000):
        store.upsert_full_ike_many("responder", creds[k : k + 5000], NOW)
    return creds


def run_cell(
    store: Store, creds: list[Credential], *, concurrency: int, mode: str, seconds: float,
    max_accepts: int, lookups_per_resumption: int = 1,
) -> tuple[dict[str, Any], list[Credential]]:  # fmt: skip
    """Time one configuration; returns the figures and the chains' new heads."""
    per_task = max(1, max_accepts // concurrency)
    groups = [list(range(t, len(creds), concurrency)) for t in range(concurrency)]
    # successors generated up front: the store is timed, not os.urandom
    plans: list[list[tuple[int, Credential, InstallIntent | None]]] = []
    heads = list(creds)
    for g in groups:
        plan = []
        for k in range(per_task):
            i = g[k % len(g)]
            nxt = _next(heads[i])
            plan.append((i, nxt, _intent(nxt) if mode == "outbox" else None))
            heads[i] = nxt
        plans.append(plan)
    cur = list(creds)
    lat: list[float] = []
    installed: list[str] = []
    done = 0
    lost = 0
    lookups = 0

    async def direct_task(
        plan: list[tuple[int, Credential, InstallIntent | None]], deadline: float
    ) -> None:
        nonlocal done, lost
        for i, nxt, _ in plan:
            if time.perf_counter() >= deadline:
                return
            c = cur[i]
            t0 = time.perf_counter()
            ok = store.commit_ratchet(c.handle, c.generation, nxt, NOW)
            lat.append(time.perf_counter() - t0)
            done += 1
            lost += not ok
            cur[i] = nxt
            await trio.lowlevel.checkpoint()

    async def task(gc_: GroupCommitter, plan: list[tuple[int, Credential, InstallIntent | None]],
                   deadline: float, resume: bool) -> None:  # fmt: skip
        nonlocal done, lost, lookups
        for i, nxt, intent in plan:
            if time.perf_counter() >= deadline:
                return
            c = cur[i]
            t0 = time.perf_counter()
            if resume:  # message 1 (and, with --lookups 2, message 3) look it up
                for _ in range(lookups_per_resumption):
                    r = store.lookup(c.handle, NOW)
                    if r is None or not r.allowed:
                        raise SystemExit("lookup failed during benchmark: store bug")
                lookups += lookups_per_resumption
            ok = await gc_.commit_ratchet(c.handle, c.generation, nxt, NOW, intent)
            lat.append(time.perf_counter() - t0)
            if intent is not None:  # "installed": handed over for deletion in batches, as
                installed.append(intent.uid)  # the service does (every 0.25 s)
                if len(installed) >= 256:
                    gc_.forget(installed[:])
                    installed.clear()
            done += 1
            lost += not ok
            cur[i] = nxt

    stats: dict[str, Any] = {}

    async def main() -> float:
        deadline = time.perf_counter() + seconds
        t0 = time.perf_counter()
        if mode == "direct":
            async with trio.open_nursery() as n:
                for plan in plans:
                    n.start_soon(direct_task, plan, deadline)
            return time.perf_counter() - t0
        with GroupCommitter(store, max_batch=1 if mode == "baseline" else 4096) as gc_:
            async with trio.open_nursery() as n:
                for plan in plans:
                    n.start_soon(task, gc_, plan, deadline, mode in ("resume", "outbox"))
            wall = time.perf_counter() - t0
            stats.update(gc_.stats.__dict__)
        return wall

    gc.collect()
    gc.freeze()  # the pre-generated plans are not part of what is measured
    try:
        cpu0 = time.process_time()
        wall = trio.run(main)
        cpu = time.process_time() - cpu0
    finally:
        gc.unfreeze()
    if lost:
        raise SystemExit(f"{lost} accepts lost their CAS in an uncontended run: store bug")
    lat.sort()
    tx = stats.get("transactions", done)
    return {
        "mode": mode,
        "concurrency": concurrency,
        "accepts": done,
        "lookups": lookups,
        "wall_s": round(wall, 3),
        "accepts_per_s": round(done / wall, 1),
        "cpu_us_per_accept": round(cpu / done * 1e6, 1),
        "transactions": tx,
        "mean_batch": round(done / tx, 1) if tx else None,
        "latency_ms_p50": round(lat[len(lat) // 2] * 1e3, 3),
        "latency_ms_p99": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3, 3),
    }, cur


def lookups_per_s(store: Store, creds: list[Credential], n: int = 20000) -> dict[str, Any]:
    handles = [creds[k % len(creds)].handle for k in range(n)]
    for h in handles[: n // 4]:  # warm up: the cells' commits reset this connection's cache
        store.lookup(h, NOW)
    cpu0, t0 = time.process_time(), time.perf_counter()
    for h in handles:
        r = store.lookup(h, NOW)
        if r is None or not r.allowed:
            raise SystemExit("lookup failed during benchmark")
    wall = time.perf_counter() - t0
    return {
        "lookups": n,
        "lookups_per_s": round(n / wall, 1),
        "cpu_us_per_lookup": round((time.process_time() - cpu0) / n * 1e6, 1),
    }


CELLS = [(1, "direct"), (1, "baseline"), (1, "group"), (100, "baseline"), (100, "group"),
         (100, "resume"), (100, "outbox"), (1000, "group"), (1000, "resume"),
         (1000, "outbox")]  # fmt: skip


def bench_backend(
    name: str, url: str, args: argparse.Namespace, sync: str = "FULL"
) -> dict[str, Any]:
    kr = Keyring([MasterKey.generate()])
    # the service's default policy: the commit's compare-and-set re-checks it (its cost counts)
    store = Store.open(url, kr, Policy(), sqlite_synchronous=sync)
    creds = populate(store, args.records)
    cells = []
    for conc, mode in CELLS:
        if conc > 1 and mode in ("baseline", "direct") and args.max_accepts > 0:
            # one row per transaction: a few thousand say all there is to say
            cap = min(args.max_accepts, 20 * concurrency_floor(conc))
        else:
            cap = args.max_accepts
        cell, creds = run_cell(store, creds, concurrency=conc, mode=mode,
                               seconds=args.seconds, max_accepts=cap,
                               lookups_per_resumption=args.lookups)  # fmt: skip
        cells.append(cell)
        print(f"  {name:16} c={conc:<4} {mode:8} {cell['accepts_per_s']:>10,.0f}/s "
              f"cpu {cell['cpu_us_per_accept']:6.1f}us  batch {cell['mean_batch']}",
              file=sys.stderr)  # fmt: skip
    look = lookups_per_s(store, creds)
    store.close()
    by = {(c["concurrency"], c["mode"]): c for c in cells}
    ratios = {
        "group_vs_baseline_c1": _ratio(by[(1, "group")], by[(1, "baseline")]),
        "group_vs_baseline_c100": _ratio(by[(100, "group")], by[(100, "baseline")]),
        "group_c1000_vs_baseline_c100": _ratio(by[(1000, "group")], by[(100, "baseline")]),
        "outbox_vs_resume_c100": _ratio(by[(100, "outbox")], by[(100, "resume")]),
        "outbox_vs_resume_c1000": _ratio(by[(1000, "outbox")], by[(1000, "resume")]),
    }
    cpu_resume = min(by[(100, "resume")]["cpu_us_per_accept"],
                     by[(1000, "resume")]["cpu_us_per_accept"])  # fmt: skip
    return {"store": name, "url": url.split("?")[0], "cells": cells, "lookup": look,
            "ratios": ratios,
            "store_cap_one_core": {
                "cpu_us_per_resumption": cpu_resume,
                "resumptions_per_s": round(1e6 / cpu_resume),
                "best_wall_resumptions_per_s": max(by[(100, "resume")]["accepts_per_s"],
                                                   by[(1000, "resume")]["accepts_per_s"]),
            }}  # fmt: skip


def concurrency_floor(conc: int) -> int:
    return max(100, conc)


def _ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    return round(a["accepts_per_s"] / b["accepts_per_s"], 2)


def calibration(db_dir: str) -> dict[str, float]:
    """Machine speed: a pure-Python loop and a bare sqlite3 primary-key SELECT."""
    t0 = time.process_time()
    x = 0
    for k in range(1_000_000):
        x += k * 2
    py_ns = (time.process_time() - t0) * 1e3
    conn = sqlite3.connect(f"{db_dir}/calibration.db", isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t VALUES (?, ?)", ((i, os.urandom(64)) for i in range(10000)))
    conn.execute("COMMIT")
    cur = conn.cursor()
    t0 = time.process_time()
    for i in range(50000):
        cur.execute("SELECT v FROM t WHERE id = ?", (i % 10000,))
        cur.fetchone()
    sel_us = (time.process_time() - t0) / 50000 * 1e6
    conn.close()
    return {"python_loop_ns_per_iteration": round(py_ns, 1),
            "sqlite_pk_select_us": round(sel_us, 2)}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.5, help="per cell")
    ap.add_argument("--max-accepts", type=int, default=80_000, help="per cell")
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--lookups", type=int, choices=(1, 2), default=1,
                    help="store lookups per resumption in the resume cells (default: %(default)s, "
                         "as the service does)")  # fmt: skip
    ap.add_argument("--cpus", type=int, default=1, help="pin to this many CPUs (0 = no pin)")
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--pg-url", help="use this PostgreSQL instead of a private fsync=on one")
    ap.add_argument("--dir", help="directory for the SQLite files (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print the JSON result to stdout")
    args = ap.parse_args()
    if args.cpus:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.cpus]))
    tmp = tempfile.mkdtemp(prefix="bench-store-", dir=args.dir or "/var/tmp")
    out: dict[str, Any] = {"benchmark": "store ratchet accepts", "machine": machine(tmp),
                           "params": vars(args), "results": []}  # fmt: skip
    out["machine"]["load_average_start"] = os.getloadavg()
    out["calibration"] = calibration(tmp)
    for sync in ("FULL", "NORMAL"):
        out["results"].append(
            bench_backend(f"sqlite-{sync.lower()}", f"{tmp}/cache-{sync}.db", args, sync)
        )
    if not args.no_pg:
        if args.pg_url:
            out["results"].append(bench_backend("postgresql", args.pg_url, args))
        else:
            from tests.facilities import PostgresCluster

            # its own temp dir (the server runs as user postgres, and tmp is private to
            # root); the same filesystem as the SQLite files, which the JSON records
            pg_base = tempfile.mkdtemp(prefix="bench-store-pg-", dir=args.dir or "/var/tmp")
            os.chmod(pg_base, 0o755)  # traversable by the postgres user
            with PostgresCluster(fsync=True, base=pg_base) as pg:
                import psycopg

                with psycopg.connect(pg.conninfo()) as c:
                    out["machine"]["postgresql"] = c.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
                out["results"].append(
                    bench_backend("postgresql-fsync", pg.create_database("bench"), args)
                )
    out["machine"]["load_average_end"] = os.getloadavg()
    sqlite = [r for r in out["results"] if r["store"].startswith("sqlite")]
    best = max(c["accepts_per_s"] for r in sqlite for c in r["cells"] if c["mode"] == "group")
    cap = max(r["store_cap_one_core"]["resumptions_per_s"] for r in sqlite)
    out["target"] = {"resumptions_per_s": TARGET, "best_sqlite_group_accepts_per_s": best,
                     "sqlite_store_cap_one_core": cap, "met": cap >= TARGET}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_store.json").write_text(json.dumps(out, indent=2))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(_table(out))
    return 0


def _table(out: dict[str, Any]) -> str:
    m, cal = out["machine"], out["calibration"]
    lines = [
        f"machine: {m['cpu']}, {m['logical_cpus']} CPUs (pinned to {m['pinned_cpus']}), "
        f"{m['memory']}, {m['db_filesystem']}, SQLite {m['sqlite']}"
        + (f", PostgreSQL {m['postgresql']}" if "postgresql" in m else ""),
        f"load average {m['load_average_start'][0]:.2f} -> {m['load_average_end'][0]:.2f}; "
        f"calibration: python loop {cal['python_loop_ns_per_iteration']} ns/iteration, "
        f"sqlite3 PK SELECT {cal['sqlite_pk_select_us']} us",
        f"{'store':18}{'conc':>5}{'mode':>10}{'accepts/s':>12}{'cpu us':>9}{'batch':>8}"
        f"{'p50 ms':>9}{'p99 ms':>9}",
    ]
    for r in out["results"]:
        for c in r["cells"]:
            lines.append(
                f"{r['store']:18}{c['concurrency']:>5}{c['mode']:>10}{c['accepts_per_s']:>12,.0f}"
                f"{c['cpu_us_per_accept']:>9.1f}{c['mean_batch']!s:>8}"
                f"{c['latency_ms_p50']:>9.3f}{c['latency_ms_p99']:>9.3f}"
            )
        sc = r["store_cap_one_core"]
        lines.append(
            f"{'':18} ratios: {r['ratios']}; lookups {r['lookup']['lookups_per_s']:,.0f}/s "
            f"({r['lookup']['cpu_us_per_lookup']} us cpu); store work per resumption "
            f"{sc['cpu_us_per_resumption']} us cpu -> one core {sc['resumptions_per_s']:,}/s"
        )
    t = out["target"]
    lines.append(
        f"target {t['resumptions_per_s']:,} resumptions/s on one core, SQLite group commit: "
        f"store work allows {t['sqlite_store_cap_one_core']:,}/s (best measured group "
        f"accepts {t['best_sqlite_group_accepts_per_s']:,.0f}/s)"
        f" -> {'met' if t['met'] else 'NOT met'}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
