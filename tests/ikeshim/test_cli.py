"""``ikeresume harvest`` / ``ikeresume xfrm`` on the host: argument handling and exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from store.keys import MasterKey
from tests.conftest import require

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()) -> Any:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "resume.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )


def test_harvest_without_a_database_is_a_config_error() -> None:
    out = _run("harvest", "--once", env={"IKERESUME_DB": ""})
    assert out.returncode == 4, out
    assert "no database" in out.stderr


def test_harvest_with_unreachable_vici_fails_clearly(tmp_path: Path) -> None:
    out = _run(
        "harvest",
        "--once",
        "--vici",
        f"unix://{tmp_path}/nothing.vici",
        "--db",
        str(tmp_path / "c.db"),
        env={"IKERESUME_MASTER_KEY": MasterKey.generate().to_line()},
    )
    assert out.returncode == 1, out
    assert "VICI" in out.stderr and "nothing.vici" in out.stderr


def test_xfrm_listing_in_a_private_namespace() -> None:
    require(os.geteuid() == 0 and shutil.which("unshare") is not None, "root and unshare")
    out = _run("xfrm", "--json", prefix=("unshare", "-n"))
    assert out.returncode == 0, out
    assert json.loads(out.stdout) == {"sas": [], "policies": 0}
