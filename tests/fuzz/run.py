"""Run the fuzz targets with atheris for a bounded time (what ``.ci/run`` does).

    python -m tests.fuzz.run                      # every target, 5 s each
    python -m tests.fuzz.run wire import --seconds 60
    python -m tests.fuzz.run --list
    python -m tests.fuzz.run wire --add FILE      # copy an input into the target's corpus

Each target runs in its own process (atheris instruments the code under test as the target
module imports it), seeded with its committed corpus; new inputs it finds go to a scratch
directory, never into the repository.  A crash leaves the input under ``--artifacts`` and the
run exits 1 naming it: reproduce it with ``python -m tests.fuzz.run NAME --replay FILE`` and
add it to the corpus with the fix.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.fuzz import harness


def _worker(name: str, seconds: int, artifacts: Path) -> None:
    import atheris

    with atheris.instrument_imports():
        fn = importlib.import_module(f"tests.fuzz.{harness.PREFIX}{name}").one_input
    scratch = Path(tempfile.mkdtemp(prefix=f"ikr-fuzz-{name}-"))
    seeds = harness.corpus_dir(name)
    argv = [
        sys.argv[0],
        f"-max_total_time={seconds}",
        f"-artifact_prefix={artifacts}/{name}-",
        "-max_len=65536",
        "-timeout=10",
        "-rss_limit_mb=2048",
        str(scratch),
    ]
    if seeds.is_dir():
        argv.append(str(seeds))
    try:
        atheris.Setup(argv, fn)
        atheris.Fuzz()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.split("\n")[0])
    p.add_argument("targets", nargs="*", help="target names (default: all)")
    p.add_argument("--seconds", type=int, default=5, help="per target (default 5)")
    p.add_argument("--artifacts", type=Path, default=Path("/var/tmp/ikeresume-fuzz"))
    p.add_argument("--list", action="store_true", help="print the target names and exit")
    p.add_argument("--add", type=Path, help="copy FILE into the (one) target's corpus")
    p.add_argument("--replay", type=Path, help="run FILE through the (one) target")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        _worker(a.worker, a.seconds, a.artifacts)
        return 0
    names = a.targets or harness.target_names()
    unknown = sorted(set(names) - set(harness.target_names()))
    if unknown:
        p.error(f"unknown target(s): {', '.join(unknown)}; --list shows them")
    if a.list:
        print("\n".join(names))
        return 0
    if a.add or a.replay:
        if len(names) != 1:
            p.error("--add and --replay take exactly one target")
        src = a.add or a.replay
        data = src.read_bytes()
        if a.replay:
            harness.one_input(names[0])(data)
            print(f"{names[0]}: {src} ends in the documented outcome")
            return 0
        dest = harness.corpus_dir(names[0])
        dest.mkdir(parents=True, exist_ok=True)
        out = dest / f"found-{hashlib.sha256(data).hexdigest()[:16]}"
        out.write_bytes(data)
        print(out)
        return 0
    a.artifacts.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        cmd = [
            sys.executable,
            "-m",
            "tests.fuzz.run",
            "--worker",
            name,
            "--seconds",
            str(a.seconds),
            "--artifacts",
            str(a.artifacts),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        stats = [ln for ln in res.stderr.splitlines() if ln.startswith("Done ")]
        print(
            f"fuzz {name}: {'ok' if res.returncode == 0 else 'FAILED'} "
            f"{stats[-1] if stats else ''}".rstrip()
        )
        if res.returncode != 0:
            failed.append(name)
            sys.stderr.write(res.stderr[-4000:])
    if failed:
        print(f"fuzz: findings in {', '.join(failed)} (inputs under {a.artifacts})")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
