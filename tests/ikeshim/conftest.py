"""UML fixtures: boot a guest once per test module and expose per-check verdicts."""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.testbed.uml import UmlError, cleanup, run_in_uml, uml_available

REPO = Path(__file__).resolve().parents[2]


def run_guest_checks(module: str, *, timeout: float = 150.0, extra: str = "") -> dict[str, Any]:
    """Boot UML, run every ``check_*`` of ``module`` in it, return {name: outcome}."""
    ok, why = uml_available()
    if not ok:
        return {"__unavailable__": why}
    only = os.environ.get("IKR_GUEST_ONLY", "")
    script = (
        f"{extra}\n"
        f"{shlex.quote(sys.executable)} -m tests.ikeshim.guest_runner {module} "
        f"$IKR_OUT/results.json {shlex.quote(only)}\n"
    )
    try:
        res = run_in_uml(script, timeout=timeout, cwd=REPO, keep=True)
    except UmlError as exc:
        return {"__error__": str(exc)}
    try:
        data: dict[str, Any] = json.loads(res.out("results.json").read_text())
    except (OSError, ValueError) as exc:
        return {"__error__": f"no results from the guest: {exc}\n{res.console[-3000:]}"}
    data["__seconds__"] = res.elapsed_s
    cleanup(res)
    return data


def make_verdict(results: dict[str, Any]) -> Callable[[str], Any]:
    def verdict(name: str) -> Any:
        if "__unavailable__" in results:
            require(False, results["__unavailable__"])
        if "__error__" in results:
            pytest.fail(results["__error__"], pytrace=False)
        if name not in results:
            pytest.fail(f"guest check {name} did not run (guest crashed?)", pytrace=False)
        r = results[name]
        if not r["ok"]:
            pytest.fail(f"guest check {name} failed in UML:\n{r['detail']}", pytrace=False)
        return r["detail"]

    return verdict
