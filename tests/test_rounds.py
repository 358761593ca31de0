"""``timing.rounds``: aggregation of round medians, the runner's interleaved rounds, and compare's basis."""
from __future__ import annotations

import math

import numpy as np
import pytest
from rich.console import Console
from scipy import stats as sps

from attnbench import store
from attnbench.commands.compare import compare
from attnbench.commands.run import run
from attnbench.compare import compare_runs
from attnbench.paired import robust_sd
from attnbench.rounds import CONFIRM_SAMPLES, ROUND_SAMPLES, RoundCollector, combine, round_budget
from synthetic_runs import case, ok_row, write_run


def test_round_budget_splits_the_case_budget():
    assert round_budget(1.0, 4) == 0.25
    assert round_budget(0.3, 1) == 0.3


def test_combine_keeps_median_of_round_medians_and_their_spread():
    first = {"latency_ms": 2.0, "throughput_img_s": 500.0, "tokens_per_s": 98000.0, "achieved_gflops": None,
             "macs": 123}
    cols, samples = combine(first, [[1.0, 2.0, 3.0], [2.0, 3.0, 4.0], [10.0, 11.0, 12.0]])
    assert cols["latency_ms"] == 3.0  # median of 2, 3, 11
    assert cols["timing_rounds"] == 3 and cols["timing_runs"] == 9
    assert cols["latency_mean_ms"] == pytest.approx(48.0 / 9)
    assert cols["latency_iqr_ms"] == pytest.approx(np.percentile([1, 2, 3, 2, 3, 4, 10, 11, 12], 75) - 2.0)
    assert cols["latency_round_cv"] == pytest.approx(1.4826 * np.median(np.abs(np.log([2, 3, 11]) - np.log(3))))
    assert cols["throughput_img_s"] == pytest.approx(500.0 * 2 / 3)  # rescaled to the combined latency
    assert cols["achieved_gflops"] is None and cols["macs"] == 123
    assert samples == {"latency_ms": [1.0, 2.0, 3.0, 2.0, 3.0, 4.0, 10.0, 11.0, 12.0], ROUND_SAMPLES: [2.0, 3.0, 11.0]}


def test_collector_accumulates_rounds_and_keeps_first_round_extras():
    coll = RoundCollector()
    cols, samples = coll.add("k", {"latency_ms": 1.0, "peak_memory_mib": 5.0}, {"latency_ms": [1.0], "mem": [5.0]})
    assert cols["timing_rounds"] == 1 and cols["latency_round_cv"] is None and samples["mem"] == [5.0]
    cols, samples = coll.add("k", {"latency_ms": 3.0}, {"latency_ms": [3.0]})
    assert cols["latency_ms"] == 2.0 and cols["peak_memory_mib"] == 5.0
    assert samples[ROUND_SAMPLES] == [1.0, 3.0] and samples["mem"] == [5.0]
    assert coll.count("k") == 2 and coll.snapshot("missing") == ({}, {})



def test_confirmation_rounds_are_kept_apart_but_count_in_the_row():
    coll = RoundCollector()
    for ms, confirming in ((1.0, False), (2.0, False), (4.0, True), (8.0, True), (16.0, True)):
        cols, samples = coll.add("k", {"latency_ms": ms}, {"latency_ms": [ms, ms]}, confirming=confirming)
    assert samples[ROUND_SAMPLES] == [1.0, 2.0] and samples[CONFIRM_SAMPLES] == [4.0, 8.0, 16.0]
    assert cols["timing_rounds"] == 5 and cols["latency_ms"] == 4.0 and cols["timing_runs"] == 10
    assert cols["latency_round_cv"] == pytest.approx(robust_sd(np.log([1.0, 2.0, 4.0, 8.0, 16.0])))
    _, plain = combine({"latency_ms": 1.0}, [[1.0], [2.0]])
    assert CONFIRM_SAMPLES not in plain  # no confirmation, no series


SUITE = """\
name: rounds
device: cpu
mode: forward
dim: 32
num_heads: 2
resolutions: [14]
metrics: [params, time]
timing: {min_run_time: 0.09, threads: 1, warmup: 1, rounds: 3}
limits: {max_memory_gb: 2, timeout_s: 120}
cases_per_worker: 100
mechanisms: [global, {name: swin, window_size: 7}]
"""


@pytest.mark.slow
def test_runner_measures_every_case_in_interleaved_rounds(tmp_path):
    suite = tmp_path / "rounds.yaml"
    suite.write_text(SUITE)
    assert run(suite, out=tmp_path, report=False, console=Console(quiet=True)) == 0
    (run_dir,) = (tmp_path / "rounds").iterdir()
    loaded = store.load_run(run_dir)
    for _, row in loaded.results.iterrows():
        rounds = loaded.samples[(row["case_key"], ROUND_SAMPLES)]
        blocks = loaded.samples[(row["case_key"], "latency_ms")]
        assert row["timing_rounds"] == 3 and len(rounds) == 3
        assert row["latency_ms"] == pytest.approx(float(np.median(rounds)))
        assert row["timing_runs"] == len(blocks)
        assert row["latency_round_cv"] == pytest.approx(robust_sd(np.log(rounds)))
    assert loaded.suite["timing"]["rounds"] == 3


def _rounds_run(path, factor: float, with_rounds: bool):
    c = case("global", 14)
    rng = np.random.default_rng(1 if factor == 1.0 else 2)
    rounds = list(1.0 * factor * np.exp(rng.normal(0, 0.01, 5)))
    blocks = [v * f for v in rounds for f in (0.99, 1.0, 1.01)]
    write_run(path, [ok_row(c, float(np.median(rounds)), blocks)], samples={c.key(): blocks})
    if with_rounds:
        store.append_samples(path, c.key(), "global", {ROUND_SAMPLES: rounds})
    return rounds


def test_compare_judges_by_between_round_variance_when_both_have_rounds(tmp_path, capsys):
    a = _rounds_run(tmp_path / "s" / "a", 1.0, True)
    b = _rounds_run(tmp_path / "s" / "b", 1.2, True)
    comp = compare_runs(store.load_run(tmp_path / "s" / "a"), store.load_run(tmp_path / "s" / "b"))
    (lat,) = [f for f in comp.findings if f.metric == "latency_ms"]
    ref = sps.ttest_ind(np.log(b), np.log(a), equal_var=False)
    assert lat.verdict == "regression"
    assert lat.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert lat.ratio == pytest.approx(math.exp(np.mean(np.log(b)) - np.mean(np.log(a))))
    assert lat.note == f"rounds=5/5, Welch p={ref.pvalue:.2g}"
    assert compare(tmp_path / "s" / "a", tmp_path / "s" / "b") == 1
    assert ("Latency judged by between-round variance (both runs have timing.rounds >= 3); drift between the two "
            "runs themselves is still not seen: `attnbench ab` pairs them.") in capsys.readouterr().out


def test_compare_says_plainly_when_it_works_from_within_run_samples(tmp_path, capsys):
    _rounds_run(tmp_path / "s" / "a", 1.0, True)
    _rounds_run(tmp_path / "s" / "b", 1.0, False)
    comp = compare_runs(store.load_run(tmp_path / "s" / "a"), store.load_run(tmp_path / "s" / "b"))
    assert comp.basis == ("Latency of 1 of 1 case(s) judged from within-run samples only: drift between runs is not "
                          "seen, so expect false alarms on a shared machine. Set timing.rounds: 5 in the suite (both "
                          "runs), or use `attnbench ab` (docs/regression.md).")
    (lat,) = [f for f in comp.findings if f.metric == "latency_ms"]
    assert "within-run samples" in lat.note or lat.verdict == "inconclusive"
    compare(tmp_path / "s" / "a", tmp_path / "s" / "b", fmt="md")
    assert "> Latency of 1 of 1 case(s) judged from within-run samples only" in capsys.readouterr().out
