"""The one command: ``ikeresume analyze LOGS... --out DIR`` and ``ikeresume synth``.

Output contract (issue 17 item 7): ``--json`` is one JSON document on stdout and nothing
else, problems go to stderr; piped output is not cut at 80 columns; ``--help`` shows the
defaults; the limits in force are stated (JSON, terminal, plot titles) and ``none``
switches each off, ``--max-secret-age none`` giving exactly the uncapped figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from analysis.recommend import Limits, candidate, default_lifetimes
from analysis.sweep import sweep
from resume.cli import main
from tests.analysis.test_samples import SAMPLES
from tests.conftest import require


def run_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, Any, str]:
    capsys.readouterr()
    rc = main(["analyze", *args, "--json"])
    cap = capsys.readouterr()
    return rc, json.loads(cap.out), cap.err


@pytest.fixture(scope="module")
def wireless(tmp_path_factory: pytest.TempPathFactory) -> Path:
    csv = tmp_path_factory.mktemp("synth") / "w.csv"
    assert main(["synth", "--profile", "wireless", "--scale", "0.02", "--seed", "5",
                 "--out", str(csv)]) == 0
    return csv


def test_synth_then_analyze_json(wireless: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    rc, doc, _ = run_json([str(wireless), "--out", str(out), "--max-secret-age", "1d",
                           "--max-chain-bytes", "500MB"], capsys)
    assert rc == 0
    assert doc["summary"]["sessions"] == round(149_564 * 0.02)
    rec = doc["recommended"]
    assert rec["toml"].startswith("[policy]\n") and 'max_chain_age = "1d"' in rec["toml"]
    assert rec["policy"]["data"] != "none"
    assert rec["max_age_at_use_s"] < 86400 and rec["max_bytes_at_use"] < 500e6
    # the recommendation saves at least as much as any Pareto row; the knee is within 95%
    assert rec["saving"] >= max(r["saving"] for r in doc["pareto"])
    assert doc["knee"]["saving"] >= 0.95 * rec["saving"]
    assert doc["knee"]["max_age_at_use_s"] <= rec["max_age_at_use_s"]
    lo, hi = rec["saving_ci"]
    assert lo <= rec["saving"] <= hi
    for kind in ("clocked", "established", "data"):
        c = doc["curves"][kind]
        assert all(a >= b for a, b in zip(c["full"], c["full"][1:], strict=False))
        assert len(c["saving_ci"]["low"]) == len(c["lifetimes"])
    for name in ("savings.png", "connections_per_day.png", "distributions.png", "occupancy.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert json.loads((out / "analysis.json").read_text())["summary"] == doc["summary"]


def test_every_limit_in_force_is_stated(wireless: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 17 item 1: the default 7-day cap was applied and the JSON said null."""
    rc, doc, _ = run_json([str(wireless), "--out", str(tmp_path), "--no-plots"], capsys)
    lim = doc["limits"]
    assert rc == 0 and set(lim) == {"max_secret_age", "max_chain_bytes", "idle", "capacity",
                                    "max_resumptions"}
    assert lim["max_secret_age"] == {"value": 604800.0, "unit": "s", "source": "default"}
    assert lim["idle"] == {"value": None, "unit": "s", "source": "default"}
    assert doc["limits_text"] == "limits: secret age <= 1w"
    assert all('max_chain_age = "1w"' in s["toml"] for s in doc["selected"])
    assert doc["settings"]["bootstrap"]["resamples"] == 200
    assert "exclusive" in doc["settings"]["lifetime_bound"]


def test_none_switches_the_cap_off_and_gives_the_uncapped_figures(
    wireless: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, doc, _ = run_json([str(wireless), "--out", str(tmp_path), "--no-plots",
                           "--max-secret-age", "none", "--idle", "none", "--capacity", "none"],
                          capsys)
    assert rc == 0 and doc["limits"]["max_secret_age"]["value"] is None
    assert doc["limits"]["max_secret_age"]["source"] == "option"
    assert doc["limits_text"] == "limits: secret age: no limit"
    from analysis.logs import read_trace

    trace = read_trace([wireless])
    for kind in ("clocked", "established", "data"):
        pols = [candidate(kind, float(v), Limits(max_secret_age=None))
                for v in default_lifetimes(kind)]
        assert all(p.max_chain_age is None for p in pols)
        assert doc["curves"][kind]["full"] == sweep(trace, pols).n_full.tolist()
    assert 'max_chain_age = "none"' in doc["recommended"]["toml"]


def test_json_is_pure_and_problems_go_to_stderr(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "x.csv"
    f.write_text("user,start,end\nann,1,2\nbob,oops,3\n")
    rc, doc, err = run_json([str(f), "--out", str(tmp_path / "o"), "--no-plots"], capsys)
    assert rc == 0 and doc["inputs"]["problems"] == 1
    assert f"{f}:3: bad row" in err and f"{f}:3: bad row" in doc["inputs"]["problem_examples"][0]
    # a failure is still one JSON document on stdout
    rc, doc, err = run_json([str(f), "--out", str(tmp_path / "o"), "--strict"], capsys)
    assert rc == 1 and doc["exit_status"] == 1 and f"{f}:3" in doc["error"] and f"{f}:3" in err


def test_strict_stops_on_first_bad_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "x.csv"
    bad.write_text("user,start,end\nann,1,2\nbob,oops,3\n")
    assert main(["analyze", str(bad), "--out", str(tmp_path / "o"), "--strict"]) == 1
    assert "x.csv:3" in capsys.readouterr().err
    assert main(["analyze", str(bad), "--out", str(tmp_path / "o"), "--no-plots"]) == 0


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text("user,start,end\nann,1,2\n")
    for opt in (["--tz", "Mars/Olympus"], ["--max-chain-bytes", "lots"], ["--idle", "soon"],
                ["--capacity", "-3"], ["--knee", "1.5"], ["--tz", "+2400"]):
        assert main(["analyze", str(f), "--out", str(tmp_path), *opt]) == 2, opt


def test_help_shows_the_defaults() -> None:
    out = subprocess.run([sys.executable, "-m", "resume.cli", "analyze", "--help"],
                         capture_output=True, text=True, check=True, timeout=60,
                         env={"COLUMNS": "200", "PATH": ""}).stdout
    for default in ("(default: 7d)", "(default: 4h)", "(default: 0.95)", "(default: 200)",
                    "(default: UTC)", "(default: analysis-out)", "(default: none)"):
        assert default in out, default


def test_piped_report_is_not_cut_at_80_columns(tmp_path: Path) -> None:
    deep = tmp_path / ("a-rather-long-directory-name-for-a-log-archive" * 2)
    deep.mkdir()
    f = deep / "sessions-of-the-whole-month-exported-by-the-gateway.csv"
    f.write_text("user,start,end\n" + "".join(f"u{i % 7},{i * 100},{i * 100 + 50}\n"
                                              for i in range(300)))
    res = subprocess.run([sys.executable, "-m", "resume.cli", "analyze", str(f), "--out",
                          str(tmp_path / "o"), "--no-plots", "--bootstrap", "0"],
                         capture_output=True, text=True, timeout=300, check=True)
    assert str(f) in res.stdout  # the whole path on one line
    summary = [ln for ln in res.stdout.splitlines() if ln.startswith("sessions: ")]
    assert len(summary) == 1 and summary[0].rstrip().endswith("merged starts: 0")
    assert "warning:" in res.stdout and "fewer than 1,000" in res.stdout


def test_analyze_all_samples_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require(SAMPLES.is_dir(), f"vendor log samples in {SAMPLES}")
    logs = sorted(str(p) for p in SAMPLES.rglob("*") if p.is_file() and p.suffix != ".md")
    rc = main(["analyze", *logs, "--out", str(tmp_path), "--year", "2026", "--no-plots"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "Maximum (recommended)" in text and "[policy]" in text
    assert "Inputs: what became of every line" in text and "UNEXPLAINED" not in text
    doc = json.loads((tmp_path / "analysis.json").read_text())
    assert doc["inputs"]["sessions_by_format"]["pulse"] == 9
    assert doc["summary"]["sessions"] == sum(doc["inputs"]["sessions_by_format"].values())
    assert all(a["unexplained"] == 0 for a in doc["inputs"]["files"].values())
    # a handful of sessions: the figures come with their warning
    assert any("fewer than 1,000" in w for w in doc["warnings"])
