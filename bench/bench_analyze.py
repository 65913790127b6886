"""`ikeresume analyze` end to end on 1M and 10M sessions, beside main at e908c76.

Run:  python bench/bench_analyze.py [--sizes 1000000 10000000] [--rounds 2]
                                     [--baseline-sizes 1000000] [--json FILE]

What it measures: the whole command as an operator runs it (a fresh process: imports,
parsing the CSV export, every sweep with and without rekeying, the capacity sweep, the
bootstrap intervals, the report and the four PNG plots, analysis.json), on a synthetic
trace written by ``ikeresume synth --profile remote`` scaled to the size asked.  Each
figure: wall time, CPU time (user + system of that child process alone), peak RSS
(``wait4``'s ``ru_maxrss`` of that child) and input lines per second of wall time.

Baseline: the same command from main at e908c76 (issue 17's "today"), unpacked with
``git archive`` into a temporary directory and run by the same interpreter on the same
file, interleaved round by round with ours (ours, main, ours, main...), best of
``--rounds`` per side, so load changes on a shared machine hit both.  The baseline is
run at ``--baseline-sizes`` only (main needs minutes and GBs at 10M).  Targets (issue 17):
1M sessions in <= 10 s wall and <= 300 MB, 10M in <= 100 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import cpu_model

REPO = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "e908c76"
REMOTE_CONNECTIONS = 241_291  # analysis.synth.PROFILES["remote"].connections


def machine() -> dict[str, Any]:
    import numpy as np

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": round(mem / 2**30, 1),
            "python": sys.version.split()[0], "numpy": np.__version__,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def unpack_baseline(dest: Path) -> Path:
    """main at BASELINE_COMMIT as a source tree (no work tree or checkout needed)."""
    archive = dest / "base.tar"
    with archive.open("wb") as fh:
        subprocess.run(["git", "-C", str(REPO), "archive", BASELINE_COMMIT], stdout=fh,
                       check=True)
    tree = dest / "base"
    tree.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def run(tree: Path, csv: Path, out: Path) -> dict[str, float]:
    """One ``ikeresume analyze`` in a child process: wall, CPU and peak RSS of that child."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, "-m", "resume.cli", "analyze", str(csv), "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _pid, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} in {tree} failed ({proc.returncode}):\n{err[-2000:]}")
    doc = json.loads((out / "analysis.json").read_text())
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime,
            "peak_rss_mb": ru.ru_maxrss / 1024, "sessions": doc["summary"]["sessions"]}


def best(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {k: (min(r[k] for r in rounds) if k != "sessions" else rounds[0][k])
            for k in rounds[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--baseline-sizes", type=int, nargs="*", default=[1_000_000])
    ap.add_argument("--rounds", type=int, default=2, help="per side and size (best of)")
    ap.add_argument("--json", default=str(REPO / "bench" / "results" / "bench_analyze.json"))
    args = ap.parse_args()
    res: dict[str, Any] = {"benchmark": "bench_analyze", "machine": machine(),
                           "baseline": f"main at {BASELINE_COMMIT}", "runs": []}
    m = res["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python "
          f"{m['python']}, numpy {m['numpy']}; load average at start "
          f"{m['load_average_at_start']} (a shared machine: compare within this run)")
    with tempfile.TemporaryDirectory(prefix="bench-analyze-") as d:
        tmp = Path(d)
        base_tree = unpack_baseline(tmp) if args.baseline_sizes else None
        for n in args.sizes:
            csv = tmp / f"remote-{n}.csv"
            scale = n / REMOTE_CONNECTIONS
            subprocess.run([sys.executable, "-m", "resume.cli", "synth", "--profile", "remote",
                            "--seed", "1", "--scale", f"{scale:.6f}", "--out", str(csv)],
                           cwd=REPO, check=True, stdout=subprocess.DEVNULL)
            lines = sum(1 for _ in csv.open("rb"))
            ours: list[dict[str, float]] = []
            base: list[dict[str, float]] = []
            with_base = base_tree is not None and n in args.baseline_sizes
            for _ in range(args.rounds if n < 5_000_000 else 1):
                ours.append(run(REPO, csv, tmp / "out-ours"))
                if with_base and base_tree is not None:
                    base.append(run(base_tree, csv, tmp / "out-base"))
            row: dict[str, Any] = {"sessions": int(ours[0]["sessions"]), "lines": lines,
                                   "csv_mb": round(csv.stat().st_size / 1e6, 1),
                                   "ours": best(ours), "ours_rounds": ours}
            if base:
                row["main"] = best(base)
                row["main_rounds"] = base
            res["runs"].append(row)
            csv.unlink()
    res["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"\n{'sessions':>12} {'side':>6} {'wall s':>8} {'CPU s':>8} {'peak MB':>8} "
          f"{'lines/s':>10}  target")
    for row in res["runs"]:
        n = row["sessions"]
        target = (10.0, 300.0) if n <= 1_500_000 else (100.0, None)
        for side in ("ours", "main"):
            r = row.get(side)
            if r is None:
                continue
            verdict = ""
            if side == "ours":
                ok_t = r["wall_s"] <= target[0]
                ok_m = target[1] is None or r["peak_rss_mb"] <= target[1]
                verdict = (f"<= {target[0]:g} s {'met' if ok_t else 'MISSED'}"
                           + ("" if target[1] is None else
                              f", <= {target[1]:g} MB {'met' if ok_m else 'MISSED'}"))
            print(f"{n:>12,} {side:>6} {r['wall_s']:>8.2f} {r['cpu_s']:>8.2f} "
                  f"{r['peak_rss_mb']:>8.0f} {row['lines'] / r['wall_s']:>10,.0f}  {verdict}")
        if "main" in row:
            o, b = row["ours"], row["main"]
            print(f"{'':>12} {'ratio':>6} {b['wall_s'] / o['wall_s']:>7.2f}x "
                  f"{b['cpu_s'] / o['cpu_s']:>7.2f}x {b['peak_rss_mb'] / o['peak_rss_mb']:>7.2f}x"
                  "  (main / ours)")
    print(f"load average at end {res['load_average_at_end']}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print(f"results: {out}")


if __name__ == "__main__":
    main()
