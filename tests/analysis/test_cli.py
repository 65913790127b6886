"""The one command: ``ikeresume analyze LOGS... --out DIR`` and ``ikeresume synth``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resume.cli import main
from tests.analysis.test_samples import SAMPLES
from tests.conftest import require


def test_synth_then_analyze_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "w.csv"
    assert main(["synth", "--profile", "wireless", "--scale", "0.02", "--seed", "5",
                 "--out", str(csv)]) == 0
    out = tmp_path / "out"
    capsys.readouterr()
    rc = main(["analyze", str(csv), "--out", str(out), "--json", "--max-secret-age", "1d",
               "--max-chain-bytes", "500MB"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["sessions"] == round(149_564 * 0.02)
    rec = doc["recommended"]
    assert rec["toml"].startswith("[policy]\n") and 'max_chain_age = "1d"' in rec["toml"]
    assert rec["policy"]["data"] != "none"
    assert rec["max_age_at_use_s"] < 86400 and rec["max_bytes_at_use"] < 500e6
    # the recommendation saves at least as much as any Pareto row
    assert rec["saving"] >= max(r["saving"] for r in doc["pareto"])
    for kind in ("clocked", "established", "data"):
        c = doc["curves"][kind]
        assert all(a >= b for a, b in zip(c["full"], c["full"][1:], strict=False))
    for name in ("savings.png", "connections_per_day.png", "distributions.png", "occupancy.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert json.loads((out / "analysis.json").read_text())["summary"] == doc["summary"]


def test_analyze_all_samples_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require(SAMPLES.is_dir(), f"vendor log samples in {SAMPLES}")
    logs = sorted(str(p) for p in SAMPLES.rglob("*") if p.is_file() and p.suffix != ".md")
    rc = main(["analyze", *logs, "--out", str(tmp_path), "--year", "2026", "--no-plots"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Recommended policy" in text and "[policy]" in text
    doc = json.loads((tmp_path / "analysis.json").read_text())
    assert doc["inputs"]["sessions_by_format"]["pulse"] == 9
    assert doc["summary"]["sessions"] == sum(doc["inputs"]["sessions_by_format"].values())


def test_strict_stops_on_first_bad_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text("user,start,end\nann,1,2\nbob,oops,3\n")
    assert main(["analyze", str(bad), "--out", str(tmp_path / "o"), "--strict"]) == 1
    assert "x.csv:3" in capsys.readouterr().err
    assert main(["analyze", str(bad), "--out", str(tmp_path / "o"), "--no-plots"]) == 0


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text("user,start,end\nann,1,2\n")
    assert main(["analyze", str(f), "--out", str(tmp_path), "--tz", "Mars/Olympus"]) == 2
    assert main(["analyze", str(f), "--out", str(tmp_path), "--max-chain-bytes", "lots"]) == 2
