"""Start-up cost guards for the ``ikeresume`` command.

``ikeresume resume`` runs in shell scripts before they fall back to a full IKE, so what it
imports is part of every reconnection's latency.  These tests run a fresh interpreter
(this process has imported everything already) and fail when a heavy module creeps back
into the ``resume`` path, or when the lazy dispatcher loses a subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys

import pytest

from resume import cli

#: Never needed to resume from a SQLite cache: psycopg is for PostgreSQL URLs, alembic
#: only when the schema is behind, the ORM / analysis / plotting stack never.
HEAVY = (
    "psycopg",
    "alembic",
    "numpy",
    "matplotlib",
    "rich",
    "sqlalchemy.orm",
    "analysis",
    "store.models",
)


def _modules_after(code: str, env: dict[str, str] | None = None) -> set[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=60,
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def _heavy(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_resume_command_modules_import_nothing_heavy() -> None:
    mods = _modules_after(
        "import resume.cli, resume.commands, resume.net.cli, resume.net.client, "
        "resume.net.config, resume.net.hooks, store.keys, store.repository"
    )
    assert "store.repository" in mods  # the probe really imported the resume path
    assert _heavy(mods) == []


def test_resume_run_against_nothing_imports_nothing_heavy(tmp_path: object) -> None:
    """A real ``ikeresume resume`` (SQLite cache, no credential: exit 3) end to end."""
    from pathlib import Path

    d = Path(str(tmp_path))
    key = d / "master.key"
    subprocess.run(
        [sys.executable, "-m", "resume.cli", "cache", "keygen", "-o", str(key)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    env = dict(os.environ, IKERESUME_MASTER_KEY_FILE=str(key))
    env.pop("IKERESUME_MASTER_KEY", None)
    argv = [
        "resume",
        "--server",
        "127.0.0.1:9",
        "--peer",
        "fqdn:gw.example",
        "--db",
        f"sqlite:///{d}/init.db",
        "--timeout",
        "0.2",
        "--json",
    ]
    code = f"from resume.cli import main\nrc = main({argv!r})\nassert rc == 3, rc\n"
    _modules_after(code, env)  # creates the cache (a fresh schema needs alembic once)
    mods = _modules_after(code, env)
    assert "store.repository" in mods  # it really ran the command
    assert _heavy(mods) == []
    assert "trio" not in mods  # the blocking client: trio alone costs 100-180 ms


def test_resume_client_path_does_not_import_trio() -> None:
    """Importing the resume path, and a whole blocking attempt, stay free of trio."""
    mods = _modules_after("import resume.net.client, resume.net.cli, resume.net.udpwire")
    assert "resume.net.client" in mods
    assert sorted(m for m in mods if m == "trio" or m.startswith("trio.")) == []
    attempt = (
        "from resume.initiator import InitiatorConfig\n"
        "from resume.net.client import ClientOptions, keep_in_memory_blocking as keep\n"
        "from resume.net.client import resume_once_blocking\n"
        "from resume.testing import simulated_full_ike\n"
        "cred = simulated_full_ike(id_i=b'\\x02a', id_r=b'\\x02b')\n"
        "cfg = InitiatorConfig(initial_rto=0.05, max_retransmits=1, timeout=0.2)\n"
        "r = resume_once_blocking(cred, ('127.0.0.1', 9), ClientOptions(config=cfg), save=keep)\n"
        "assert r.outcome == 'timeout', r\n"
    )
    mods = _modules_after(attempt)
    assert "resume.initiator" in mods and "trio" not in mods


def test_help_imports_no_handler_dependencies() -> None:
    mods = _modules_after("from resume.cli import build_parser\nbuild_parser()")
    heavy = ("trio", "sqlalchemy", "cryptography", "analysis.parsers", "store.repository")
    assert [m for m in mods if m.split(".")[0] in heavy or m.startswith(heavy)] == []


def _registered(module: str) -> list[str]:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    importlib.import_module(module).register(sub)
    return list(sub.choices)


def test_command_owner_table_matches_registrations() -> None:
    owners = {c: m for m in cli.COMMAND_MODULES for c in _registered(m)}
    assert owners == cli.COMMAND_OWNERS


def test_help_lists_every_subcommand() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "resume.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    listed = [
        line.split()[0]
        for line in out.splitlines()
        if line.startswith("    ") and not line.startswith("     ")
    ]
    assert listed == list(cli.COMMAND_OWNERS)


@pytest.mark.parametrize("command", sorted(cli.COMMAND_OWNERS))
def test_lazy_parser_gives_the_same_subcommand(command: str) -> None:
    """Only the owner registered: the subcommand parses and documents itself the same."""

    def sub_help(parser: argparse.ArgumentParser) -> str:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return str(action.choices[command].format_help())

    assert sub_help(cli.build_parser(command)) == sub_help(cli.build_parser())


def test_unknown_command_still_lists_every_choice(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["no-such-command"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    for command in cli.COMMAND_OWNERS:
        assert command in err


def test_analyze_format_choices_match_the_parsers() -> None:
    from analysis import cli as analysis_cli
    from analysis.parsers.detect import FORMATS

    assert tuple(sorted(FORMATS)) == analysis_cli.FORMAT_NAMES
