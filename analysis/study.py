"""The study-comparison table of ``analysis/README.md``, regenerated from scratch.

    python -m analysis.study            # prints the markdown table (about 10 s)

Both synthetic populations at full scale (seed 1) are replayed at the points of the 2007
study's Figure 6, once under the analyzer's default limit (secret age at most 7 days)
and once with no limit (``--max-secret-age none``): the table states both, so a reader
sees what the default cap changes.  ``tests/analysis/test_study.py`` checks the README
holds exactly this output.
"""

from __future__ import annotations

from analysis.analyze import STUDY_POINTS
from analysis.recommend import DEFAULT_MAX_SECRET_AGE, Limits, candidate
from analysis.sweep import sweep
from analysis.synth import generate
from analysis.trace import Trace

PROFILES = ("wireless", "remote")
SEED = 1
HEADER = ("| | study | synth wireless (7-day cap / no cap) | synth remote (7-day cap / no cap) |\n"
          "|---|---|---|---|")


def shares(trace: Trace, profile: str) -> dict[str, tuple[float, float]]:
    """Full IKE exchanges left (share of connections) per study point: (capped, uncapped)."""
    out: dict[str, tuple[float, float]] = {}
    for kind, value, _statement, _share in STUDY_POINTS:
        if kind == "data" and (value == 20e6) != (profile == "wireless"):
            continue  # the study's data point: 20 MB for wireless, 50 MB for remote
        pols = [candidate(kind, value, Limits(max_secret_age=age))
                for age in (DEFAULT_MAX_SECRET_AGE, None)]
        res = sweep(trace, pols, reasons=False, figures=False)
        row = "data" if kind == "data" else kind
        out[row] = (float(res.n_full[0]) / len(trace), float(res.n_full[1]) / len(trace))
    return out


def table() -> str:
    cells = {p: shares(generate(p, seed=SEED), p) for p in PROFILES}
    lines = [HEADER]
    labels = {"clocked": ("clocked 1 d", "below 50%"),
              "established": ("established 2 h", "below 20%"),
              "data": ("data 20 MB (wireless) / 50 MB (remote)", "about 25%")}
    for row, (label, study) in labels.items():
        vals = [f"{100 * cells[p][row][0]:.1f}% / {100 * cells[p][row][1]:.1f}%"
                for p in PROFILES]
        lines.append(f"| {label} | {study} | {vals[0]} | {vals[1]} |")
    return "\n".join(lines)


def main() -> None:
    print(table())


if __name__ == "__main__":
    main()
