"""Run pytest on a deliberately busy machine, so that a timing assumption fails here first.

    python -m tests.stress                              # the socket-level tests, once
    python -m tests.stress --runs 20 -- tests/resume/net -x -q
    python -m tests.stress --per-core 3 -- -m "not uml"

Why: CI runs on whatever machine the submitting developer had, and a test whose verdict
depends on the scheduler (a retransmission timer racing a slow store thread, a sleep used as
synchronisation) passes on an idle machine and fails on a busy one.  This wrapper starts
``--per-core`` busy loops for every CPU (ordinary priority: they compete with the tests as a
neighbour's build would), runs pytest ``--runs`` times under that load, stops the loops and
reports how many runs passed.  Exit status 0 only if every run passed.

Tests whose behaviour is inherently about elapsed time are marked ``timing`` and say why in
their docstring: ``python -m pytest -m timing`` lists and runs them alone.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

#: What ``.ci/run`` stresses when no pytest arguments are given: every test that runs real
#: sockets, threads or subprocesses against a deadline.
DEFAULT_TARGETS = ("tests/resume/net", "tests/ikeshim/test_initiator_flow.py")

#: A busy loop that also ends when the wrapper is gone (its parent changes): a wrapper killed
#: without running its ``finally`` (SIGKILL, a killed terminal) must not leave loops behind.
_SPIN = """\
import os, signal, sys
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
parent = os.getppid()
while os.getppid() == parent:
    for _ in range(1_000_000):
        pass
"""


@contextlib.contextmanager
def busy_loops(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` processes spinning on the CPU for the duration of the block."""
    procs = [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(count)]
    try:
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    pytest_args: list[str] = []
    if "--" in args:
        cut = args.index("--")
        args, pytest_args = args[:cut], args[cut + 1 :]
    p = argparse.ArgumentParser(prog="python -m tests.stress", description=__doc__.split("\n")[0])
    p.add_argument("--per-core", type=int, default=2, help="busy loops per CPU (default 2)")
    p.add_argument("--runs", type=int, default=1, help="pytest runs under load (default 1)")
    p.add_argument("--keep-going", action="store_true", help="do not stop at the first failed run")
    a = p.parse_args(args)
    pytest_args = pytest_args or ["-q", *DEFAULT_TARGETS]
    loops = a.per_core * (os.cpu_count() or 1)
    passed = 0
    # SIGTERM (kill, pkill) unwinds through busy_loops' finally like Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with busy_loops(loops):
        for run in range(1, a.runs + 1):
            start = time.monotonic()
            rc = subprocess.call([sys.executable, "-m", "pytest", *pytest_args])
            took = time.monotonic() - start
            print(
                f"stress: run {run}/{a.runs} with {loops} busy loops: "
                f"{'passed' if rc == 0 else f'FAILED (exit {rc})'} in {took:.0f} s",
                flush=True,
            )
            passed += rc == 0
            if rc != 0 and not a.keep_going:
                break
    print(f"stress: {passed} of {a.runs} runs passed under {loops} busy loops")
    return 0 if passed == a.runs else 1


if __name__ == "__main__":
    raise SystemExit(main())
