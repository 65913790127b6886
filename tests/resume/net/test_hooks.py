"""Hooks receive the SA description on stdin (or as a dict) and failures become InstallError."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from resume.net.hooks import ExecHook, InstallError, NoInstaller, PythonHook, make_installer

from .helpers import sa_pair

RECEIVED: list[dict[str, Any]] = []


def record(desc: dict[str, Any]) -> None:
    RECEIVED.append(desc)


async def record_async(desc: dict[str, Any]) -> None:
    await trio.sleep(0)
    RECEIVED.append(desc)


def explode(desc: dict[str, Any]) -> None:
    raise RuntimeError("boom")


async def test_exec_hook_gets_json_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    script = f"import sys; open({str(out)!r}, 'w').write(sys.stdin.read())"
    await ExecHook([sys.executable, "-c", script], timeout=60).install(sa_pair())
    got = json.loads(out.read_text())
    assert got == sa_pair().describe()
    assert got["i_to_r"]["spi"] == 0x1000


async def test_exec_hook_failure_and_timeout() -> None:
    with pytest.raises(InstallError, match="exited 3: nope"):
        script = "import sys; sys.stderr.write('nope'); sys.exit(3)"
        await ExecHook([sys.executable, "-c", script], timeout=60).install(sa_pair())
    with pytest.raises(InstallError, match="timed out"):
        hook = ExecHook([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.3)
        await hook.install(sa_pair())
    with pytest.raises(InstallError, match="could not run"):
        await ExecHook(["/nonexistent/hook"], timeout=1).install(sa_pair())


async def test_python_hooks() -> None:
    RECEIVED.clear()
    mod = __name__
    await make_installer("hook", f"python:{mod}:record", 5).install(sa_pair())
    await make_installer("hook", f"python:{mod}:record_async", 5).install(sa_pair("initiator"))
    assert [d["role"] for d in RECEIVED] == ["responder", "initiator"]
    with pytest.raises(InstallError, match="RuntimeError: boom"):
        await PythonHook.from_spec(f"{mod}:explode", 5).install(sa_pair())


def test_bad_specs() -> None:
    for spec in ("python:nomodule_xyz:f", "python:json", f"python:{__name__}:nothing"):
        with pytest.raises(ValueError):
            make_installer("hook", spec, 1)
    with pytest.raises(ValueError):
        make_installer("teleport", "", 1)
    assert isinstance(make_installer("none", "", 1), NoInstaller)
