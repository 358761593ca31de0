"""History: a sustained step is flagged, a single outlier is not, a latest-run change is unconfirmed."""
from __future__ import annotations

import numpy as np
import pytest

from attnbench import UserError
from attnbench.cli import main
from attnbench.history import collect, detect_steps, write_history
from synthetic_runs import case, lognormal_samples, ok_row, write_run


def _series(levels, n=20, cv=0.03, seed=0):
    return [lognormal_samples(level, n, cv, seed + i) for i, level in enumerate(levels)]


def test_sustained_step_is_flagged_once():
    steps = detect_steps(_series([1.0, 1.0, 1.0, 1.0, 1.2, 1.2, 1.2, 1.2]))
    assert len(steps) == 1
    st = steps[0]
    assert st.index == 4 and st.confirmed
    assert st.ratio == pytest.approx(1.2, abs=0.03)


def test_single_outlier_is_not_a_step():
    assert detect_steps(_series([1.0, 1.0, 1.0, 1.4, 1.0, 1.0, 1.0])) == []
    assert detect_steps(_series([1.0, 0.7, 1.0, 1.0])) == []


def test_change_on_latest_run_only_is_unconfirmed():
    steps = detect_steps(_series([1.0, 1.0, 1.0, 1.3]))
    assert len(steps) == 1 and not steps[0].confirmed and steps[0].index == 3


def test_small_drift_and_improvement():
    assert detect_steps(_series([1.0, 1.02, 0.99, 1.03, 1.01, 1.02])) == []
    steps = detect_steps(_series([1.0, 1.0, 1.0, 0.8, 0.8, 0.8]))
    assert len(steps) == 1 and steps[0].ratio < 0.85 and steps[0].confirmed


def test_two_steps_in_a_row():
    steps = detect_steps(_series([1.0, 1.0, 1.0, 1.3, 1.3, 1.3, 1.0, 1.0, 1.0]))
    assert [s.index for s in steps] == [3, 6] and all(s.confirmed for s in steps)


def _suite(tmp_path, levels_by_label, commits=None):
    suite = tmp_path / "results" / "mini"
    n = len(next(iter(levels_by_label.values())))
    for r in range(n):
        rows, samples = [], {}
        for j, (label, levels) in enumerate(levels_by_label.items()):
            c = case(label, 8)
            s = lognormal_samples(levels[r], 20, 0.03, 100 * r + j)
            samples[c.key()] = s
            rows.append(ok_row(c, levels[r], s, macs=1000))
        env = {"created_at": f"2026-01-{r + 1:02d}T00:00:00+00:00", "git_commit": (commits or {}).get(r, f"c{r:06d}")}
        write_run(suite / f"2026010{r}-run", rows, samples, env=env)
    return suite


def test_history_command_writes_md_and_plots(tmp_path, capsys):
    suite = _suite(tmp_path, {"global": [1.0, 1.0, 1.0, 1.5, 1.0, 1.0, 1.0],   # one outlier
                              "swin": [2.0, 2.0, 2.0, 2.0, 2.4, 2.4, 2.4]},    # a step at run 4
                   commits={4: "badc0de"})
    assert main(["history", str(suite)]) == 0
    out = capsys.readouterr().out
    assert "step: swin 8x8 float32 forward" in out and "global" not in out.split("wrote")[0]
    md = (suite / "history.md").read_text()
    steps = md.split("## Steps")[1].split("## Cases")[0]
    assert "swin 8x8" in steps and "4 (badc0de)" in steps and "global" not in steps
    assert "| 6 | 2026-01-07T00:00:00 |" in md  # runs lined up by date
    plots = sorted((suite / "history").glob("*.png"))
    assert len(plots) == 2 and all(p.stat().st_size > 1000 for p in plots)
    assert "## Plots of cases with steps" in md and "swin_8x8" in md.split("## Plots of cases with steps")[1]


def test_history_splits_machines(tmp_path):
    suite = _suite(tmp_path, {"global": [1.0, 1.0, 1.0, 1.0]})
    # Two more runs from another torch: a different series, not a step in the first one.
    for r in (4, 5):
        c = case("global", 8)
        s = lognormal_samples(1.5, 20, 0.03, r)
        write_run(suite / f"2026010{r}-run", [ok_row(c, 1.5, s)], {c.key(): s},
                  env={"created_at": f"2026-01-{r + 1:02d}T00:00:00+00:00", "torch": "9.9"})
    hist = collect(suite)
    assert len(hist.series) == 2 and all(v == [] for v in hist.steps.values())


def test_history_errors(tmp_path):
    with pytest.raises(UserError, match="no runs found"):
        write_history(tmp_path)
    assert main(["history", str(tmp_path), "--threshold", "-1"]) == 2
    with pytest.raises(ValueError):
        detect_steps([[1.0]], min_after=0)


def test_stationary_noisy_series_rarely_show_steps():
    """Run medians wandering by 2 % (a quiet shared machine): few false steps, 10 % steps still found."""
    false, found = 0, 0
    for t in range(100):
        rng = np.random.default_rng(t)
        levels = np.exp(rng.normal(0.0, 0.02, 12))
        false += any(s.confirmed for s in detect_steps([lv * rng.lognormal(0, 0.05, 20) for lv in levels]))
        levels[6:] *= 1.10
        found += any(s.confirmed and s.index in (6, 7) and s.ratio > 1
                     for s in detect_steps([lv * rng.lognormal(0, 0.05, 20) for lv in levels]))
    assert false <= 8 and found >= 80, (false, found)
