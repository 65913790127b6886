"""The README's study-comparison table is what ``python -m analysis.study`` prints."""

from __future__ import annotations

from pathlib import Path

from analysis import study

README = Path(__file__).parents[2] / "analysis" / "README.md"


def test_readme_study_table_is_regenerated_by_the_script() -> None:
    text = README.read_text()
    assert study.table() in text, "rerun: python -m analysis.study, paste into the README"
