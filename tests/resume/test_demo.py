"""The README's first command: ``ikeresume demo``."""

from __future__ import annotations

import json

import pytest

from resume.cli import main
from resume.demo import run_demo


def test_demo_report_is_consistent() -> None:
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


def test_cli_demo_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--clients", "2", "--rounds", "3", "--json", "--seed", "1"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["scenario"]["clients"] == 2 and rep["ok"]


def test_cli_demo_text_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--clients", "2", "--rounds", "2"]) == 0
    out = capsys.readouterr().out
    assert "result: OK" in out and "fingerprint" in out
    assert main(["demo", "--loss", "1.5"]) == 2
