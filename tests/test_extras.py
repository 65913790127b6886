"""Without the optional extras: the responder and the clients work, and whatever needs a
missing extra says which one to install.

Each check runs in a fresh interpreter whose import system refuses numpy, matplotlib and
psycopg (a meta-path finder placed first), as on a machine where ``pip install -e .`` ran
without extras -- this process has them installed and imported already.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BLOCKED = ("numpy", "matplotlib", "psycopg")

_BLOCKER = f"""
import sys

class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _NotInstalled())
"""


def _run(code: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCKER + code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp,
    )


def test_the_blocker_really_blocks(tmp_path: Path) -> None:
    out = _run("import numpy\n", tmp_path)
    assert out.returncode != 0 and "No module named 'numpy'" in out.stderr


def test_demo_runs_without_extras(tmp_path: Path) -> None:
    """The README's first command: the loopback demo needs no extra."""
    code = (
        "from resume.cli import main\n"
        "rc = main(['demo', '--clients', '3', '--rounds', '1', '--json'])\n"
        f"assert not any(m.split('.')[0] in {BLOCKED!r} for m in sys.modules)\n"
        "sys.exit(rc)\n"
    )
    out = _run(code, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert '"ok": true' in out.stdout


def test_analyze_names_the_analysis_extra(tmp_path: Path) -> None:
    log = tmp_path / "x.csv"
    log.write_text("user,start,end\n")
    code = (
        "from resume.cli import main\n"
        f"sys.exit(main(['analyze', {str(log)!r}, '--out', {str(tmp_path / 'out')!r}]))\n"
    )
    out = _run(code, tmp_path)
    assert out.returncode == 4, (out.stdout, out.stderr[-2000:])
    assert "pip install 'ikeresume[analysis]'" in out.stderr
    assert "Traceback" not in out.stderr


def test_synth_names_the_analysis_extra(tmp_path: Path) -> None:
    code = (
        "from resume.cli import main\n"
        f"sys.exit(main(['synth', '--out', {str(tmp_path / 't.csv')!r}]))\n"
    )
    out = _run(code, tmp_path)
    assert out.returncode == 4, (out.stdout, out.stderr[-2000:])
    assert "pip install 'ikeresume[analysis]'" in out.stderr


def test_postgres_store_names_the_postgres_extra(tmp_path: Path) -> None:
    code = (
        "from store.errors import StoreConfigError\n"
        "from store.repository import Store\n"
        "try:\n"
        "    Store.open('postgresql://nobody@/nothing?host=/nonexistent')\n"
        "except StoreConfigError as e:\n"
        "    print('CONFIG', e)\n"
    )
    out = _run(code, tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("CONFIG") and "pip install 'ikeresume[postgres]'" in out.stdout


def test_cache_command_with_a_postgres_url_is_a_config_error(tmp_path: Path) -> None:
    code = (
        "from resume.cli import main\n"
        "sys.exit(main(['cache', 'stats', '--db', "
        "'postgresql://nobody@/nothing?host=/nonexistent']))\n"
    )
    out = _run(code, tmp_path)
    assert out.returncode == 4, (out.stdout, out.stderr[-2000:])
    assert "ikeresume[postgres]" in out.stderr
