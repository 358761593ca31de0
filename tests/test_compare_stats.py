"""The regression gate's statistics on synthetic samples: false alarms, power, and the exact rule."""
from __future__ import annotations

import numpy as np
import pytest

from attnbench.stats import compare_samples, median_ci, shift_interval

CV = 0.05  # 5 % noise, the within-run spread of block times on a quiet core
TRIALS = 100


def _trials(n: int, shift: float, cv: float = CV, outliers: float = 0.0) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in range(TRIALS):
        rng = np.random.default_rng(10_000 + trial)

        def draw(scale: float) -> np.ndarray:
            x = scale * rng.lognormal(0.0, cv, n)
            hit = rng.random(n) < outliers  # occasional slow blocks (a neighbour woke up)
            x[hit] *= rng.uniform(1.2, 2.0, hit.sum())
            return x

        verdict = compare_samples(draw(1.0), draw(shift)).verdict
        counts[verdict] = counts.get(verdict, 0) + 1
    return counts


@pytest.mark.parametrize("n", [20, 40])
def test_identical_distributions_rarely_flag(n):
    counts = _trials(n, 1.0)
    assert counts.get("regression", 0) <= 1, counts  # >= 99 of 100 trials without a false alarm


@pytest.mark.parametrize("n", [20, 40])
def test_ten_percent_slowdown_is_detected(n):
    counts = _trials(n, 1.10)
    assert counts.get("regression", 0) >= 95, counts


def test_ten_percent_slowdown_detected_despite_outlier_blocks():
    counts = _trials(30, 1.10, cv=0.04, outliers=0.1)
    assert counts.get("regression", 0) >= 95, counts
    assert _trials(30, 1.0, cv=0.04, outliers=0.1).get("regression", 0) <= 1


def test_speedup_is_an_improvement_not_a_regression():
    counts = _trials(20, 1 / 1.10)
    assert counts.get("improvement", 0) >= 95 and counts.get("regression", 0) == 0


def test_small_change_below_threshold_is_unchanged():
    # A clear but small (2 %) slowdown with little noise is real, yet under the 5 % effect size.
    rng = np.random.default_rng(1)
    est = compare_samples(rng.lognormal(0, 0.005, 40), 1.02 * rng.lognormal(0, 0.005, 40))
    assert est.verdict == "unchanged" and est.ci_low > 1.0 and est.ratio == pytest.approx(1.02, abs=0.005)


def test_large_but_noisy_change_is_inconclusive():
    base = [1.0, 1.5, 0.7, 1.2]
    new = [1.1, 1.9, 0.8, 1.3]
    est = compare_samples(base, new)
    assert est.ratio > 1.05 and est.ci_low < 1.0 and est.verdict == "inconclusive"


def test_hodges_lehmann_and_moses_interval_exact():
    # Every pairwise log-ratio of [2,2,2] against [1,1,1] is log 2.
    assert shift_interval([1, 1, 1], [2, 2, 2]) == pytest.approx((2.0, 2.0, 2.0))
    # Pairwise ratios of b over a: {1.5, 3, 0.75, 1.5, ...}; the median of the 4 log-ratios.
    ratio, lo, hi = shift_interval([1.0, 2.0], [1.5, 3.0], confidence=0.5)
    assert ratio == pytest.approx(1.5) and lo <= ratio <= hi


def test_too_few_samples_is_inconclusive_not_a_regression():
    est = compare_samples([1.0, 1.0], [2.0, 2.0])
    assert est.verdict == "inconclusive" and est.ratio == pytest.approx(2.0) and "min_run_time" in est.reason
    assert compare_samples([], [1.0]).verdict == "inconclusive"


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="threshold"):
        compare_samples([1, 2, 3], [1, 2, 3], threshold=-0.1)
    with pytest.raises(ValueError, match="confidence"):
        compare_samples([1, 2, 3], [1, 2, 3], confidence=1.5)


def test_median_ci_is_seeded_and_brackets_the_median():
    x = np.random.default_rng(3).lognormal(0, 0.1, 30)
    a, b = median_ci(x, seed=7), median_ci(x, seed=7)
    assert a == b and a[1] <= a[0] <= a[2] and a[0] == pytest.approx(float(np.median(x)))
    assert median_ci([2.0]) == (2.0, 2.0, 2.0)
