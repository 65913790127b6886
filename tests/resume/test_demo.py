"""The README's first command: ``ikeresume demo`` (loopback service) and ``--in-process``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resume.cli import EXIT_OK, EXIT_USAGE, main
from resume.demo import run_demo


def test_in_process_report_is_consistent() -> None:
    rep = run_demo(clients=4, rounds=6, loss=0.3, seed=7)
    o = rep["outcomes"]
    assert rep["ok"]
    assert rep["attempts"] == 4 * 6 + 1
    assert o["key_mismatch"] == 0 and o["fallback_nack"] == 1  # only the stranger
    assert o["message3_lost"] > 0 and o["retried_previous_generation"] > 0
    assert rep["esp_keys_distinct"] == rep["esp_keys_expected"]
    text = json.dumps(rep)
    for s in rep["samples"]:
        assert "key_i2r" not in s or len(s["key_i2r_fp"]) == 16
    assert "encr_key" not in text  # fingerprints only, never keys
    pc = rep["paper_mode_comparison"]
    assert pc["resumptions"] == 6 and pc["distinct_esp_keys"] == 1  # the flaw, shown


def test_cli_in_process_json_and_text(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["demo", "--in-process", "--clients", "2", "--rounds", "3"]
    assert main([*argv, "--json", "--seed", "1"]) == EXIT_OK
    rep = json.loads(capsys.readouterr().out)
    assert rep["scenario"]["clients"] == 2 and rep["ok"]
    assert main(argv) == EXIT_OK
    out = capsys.readouterr().out
    assert "result: OK" in out and "paper mode" in out


def test_cli_default_is_the_loopback_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No flags but sizes: a responder on UDP with SQLite files in --workdir, JSON summary."""
    rc = main(["demo", "--clients", "12", "--rounds", "2", "--workdir", str(tmp_path), "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert rc == EXIT_OK and rep["ok"]
    assert rep["resumed"] == 24 and rep["fallbacks"] == {}
    assert rep["keys_match"] and rep["generations_match"] and rep["distinct_keys"] == 48
    fo = rep["failover"]
    assert fo["recovered"] and fo["after_results"] == 6
    assert rep["server_commits"] == 24 + fo["message3_late"]
    assert rep["listen"].startswith("127.0.0.1:")
    assert (tmp_path / "responder.db").exists() and (tmp_path / "initiators.db").exists()
    assert all(len(s["key_i2r_fp"]) == 16 and s["responder_agrees"] for s in rep["samples"])


def test_cli_demo_text_cleans_up(capsys: pytest.CaptureFixture[str]) -> None:
    """Without --workdir the SQLite files live in a temp dir that is removed afterwards."""
    assert main(["demo", "--clients", "3", "--rounds", "1"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "result: OK" in out and "key fp" in out and "resumptions/s" in out
    assert "restarted mid-round" in out
    assert "removed" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--loss", "1.5", "--in-process"],
        ["--loss", "0.1"],  # loopback demo has no simulated loss
        ["--seed", "3"],
        ["--clients", "0"],
        ["--rounds", "0", "--in-process"],
        ["--in-process", "--workdir", "/tmp"],
        ["--in-process", "--no-restart"],
    ],
)
def test_cli_demo_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", *argv]) == EXIT_USAGE
    assert "ikeresume demo:" in capsys.readouterr().err
