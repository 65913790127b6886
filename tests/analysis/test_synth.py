"""The synthetic generator reproduces Table II of the 2007 study within stated tolerances."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.synth import PROFILES, generate


@pytest.mark.parametrize("name", ["wireless", "remote"])
def test_table_ii_statistics(name: str) -> None:
    p = PROFILES[name]
    t = generate(name, seed=7, scale=0.1)
    assert len(t) == round(p.connections * 0.1)
    assert len(set(t.user.tolist())) == round(p.users * 0.1)
    assert t.duration.mean() / 1e6 == pytest.approx(p.mean_duration_s, rel=0.02)
    assert t.bytes_in.mean() == pytest.approx(p.mean_in, rel=0.001)
    assert t.bytes_out.mean() == pytest.approx(p.mean_out, rel=0.001)
    span = t.end.max() - t.start.min()
    assert 29 * 86400 * 10**6 < span <= (30 * 86400 + 1) * 10**6
    assert (t.start % 1000 == 0).all()  # whole milliseconds, as write_csv writes them


def test_sessions_of_a_user_do_not_overlap_and_weekdays_are_busier() -> None:
    t = generate("remote", seed=3, scale=0.05)
    o = t.user_order()
    u, s, e = t.user[o], t.start[o], t.end[o]
    same = u[1:] == u[:-1]
    assert (s[1:][same] >= e[:-1][same]).all()
    day = ((t.start - t.start.min()) // (86400 * 10**6)) % 7  # the trace starts on a Monday
    per = np.bincount(day, minlength=7)
    assert per[:5].min() > per[5:].max()


def test_written_csv_reads_back_exactly(tmp_path: object) -> None:
    from pathlib import Path

    from analysis.logs import read_trace
    from analysis.synth import write_csv

    t = generate("wireless", seed=4, scale=0.01)
    p = Path(str(tmp_path)) / "t.csv"
    write_csv(t, str(p))
    back = read_trace([p])
    assert (back.start == t.start).all() and (back.end == t.end).all()
    assert (back.nbytes == t.nbytes).all()


def test_seeded_and_reproducible() -> None:
    a, b = generate("wireless", seed=1, scale=0.02), generate("wireless", seed=1, scale=0.02)
    assert (a.start == b.start).all() and (a.bytes_in == b.bytes_in).all()
    c = generate("wireless", seed=2, scale=0.02)
    assert not (a.start == c.start).all()
