"""Statistics for comparing timings: pure functions on arrays of raw samples, no I/O, no clock.

Why a separate module: the regression gate decides whether CI fails, so its statistical behaviour
(false-alarm rate on identical distributions, power on a real slowdown) must be testable on synthetic
samples, exactly and quickly, without running a benchmark.

The rule (``compare_samples``), for a baseline sample ``a`` and a new sample ``b`` of per-call times:

* Work on log-times, so a slowdown is a shift ``log b - log a`` and the result is a ratio.
* ``ratio`` = exp(Hodges-Lehmann shift) = exp(median of all pairwise ``log b_j - log a_i``): the
  estimator that goes with the Mann-Whitney rank test. It is as robust to outlier blocks as the
  median (29 % breakdown) but nearly as precise as the mean (95 % efficiency under normal noise),
  which matters with the 10-40 blocks ``blocked_autorange`` produces: with 5 % noise and 10 blocks a
  ratio of medians misses a true 10 % slowdown about 6 % of the time on its point estimate alone.
* Its ``confidence`` interval (default 95 %) comes from inverting the Mann-Whitney test (Moses'
  distribution-free interval: order statistics of the pairwise differences, normal approximation
  for the rank); it is deterministic, so no seed is involved.
* **regression** when ``ratio > 1 + threshold`` *and* the interval lies entirely above 1: the
  slowdown is large enough to matter (minimum effect size, default 5 %) and the samples cannot
  explain it as noise.
* **improvement** is the mirror image: ``ratio < 1 / (1 + threshold)`` and the interval entirely below 1.
* **inconclusive** when the estimate passes the effect size but the interval still contains 1 (too
  noisy to tell), or a side has fewer than ``min_samples`` samples.
* **unchanged** otherwise.

Asking the interval to exclude 1 rather than ``1 + threshold`` is deliberate: asking it to clear
1.05 would miss about a third of true 10 % slowdowns at these sample sizes. The effect size, not the
interval, is what keeps noise quiet. The within-run samples do not see run-to-run drift (CPU
frequency, neighbours), so the threshold must exceed that drift; measure it with A/A runs.
The Mann-Whitney p-value is reported as a second opinion; it does not change the verdict.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Sequence

import numpy as np

Verdict = Literal["regression", "improvement", "unchanged", "inconclusive"]

DEFAULT_THRESHOLD = 0.05
DEFAULT_CONFIDENCE = 0.95
MIN_SAMPLES = 3


@dataclass(frozen=True)
class ShiftEstimate:
    """How ``new`` differs from ``base``: ratio > 1 means new is slower; p is Mann-Whitney two-sided."""

    ratio: float
    ci_low: float
    ci_high: float
    p_value: float
    n_base: int
    n_new: int
    verdict: Verdict
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_medians(values: Sequence[float], n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of ``n_boot`` resamples (with replacement) of ``values``, vectorised."""
    x = np.asarray(values, dtype=float)
    idx = rng.integers(0, x.size, size=(n_boot, x.size))
    return np.median(x[idx], axis=1)


def median_ci(values: Sequence[float], confidence: float = 0.95, n_boot: int = 1000,
              seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high): percentile-bootstrap interval of one sample's median.

    With fewer than two values there is no spread to resample, so the interval collapses onto the median.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (float("nan"),) * 3
    med = float(np.median(x))
    if x.size < 2:
        return med, med, med
    meds = bootstrap_medians(x, n_boot, np.random.default_rng(seed))
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(meds, [tail, 1.0 - tail])
    return med, float(lo), float(hi)


def shift_interval(base: Sequence[float], new: Sequence[float],
                   confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float, float]:
    """(ratio, low, high): Hodges-Lehmann ratio new/base and its Moses (Mann-Whitney) interval.

    The interval's ends are the k-th smallest and k-th largest of the n1·n2 pairwise log-differences,
    with k = floor(n1·n2/2 − z·sqrt(n1·n2·(n1+n2+1)/12)) (normal approximation of the U statistic).
    """
    la = np.log(np.asarray(base, dtype=float))
    lb = np.log(np.asarray(new, dtype=float))
    diffs = np.sort((lb[None, :] - la[:, None]).ravel())
    n1, n2 = la.size, lb.size
    from scipy import stats as _sps  # lazy: keeps `attnbench --help` fast

    z = float(_sps.norm.ppf(1.0 - (1.0 - confidence) / 2.0))
    k = int(np.floor(n1 * n2 / 2.0 - z * np.sqrt(n1 * n2 * (n1 + n2 + 1) / 12.0)))
    k = min(max(k, 0), diffs.size - 1)
    return (float(np.exp(np.median(diffs))), float(np.exp(diffs[k])),
            float(np.exp(diffs[diffs.size - 1 - k])))


def compare_samples(
    base: Sequence[float],
    new: Sequence[float],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    confidence: float = DEFAULT_CONFIDENCE,
    min_samples: int = MIN_SAMPLES,
) -> ShiftEstimate:
    """Verdict on whether ``new`` is slower than ``base`` (see the module docstring for the rule)."""
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0 (a fraction, e.g. 0.05 for 5 %), got {threshold}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), e.g. 0.95, got {confidence}")
    a = np.asarray(base, dtype=float)
    b = np.asarray(new, dtype=float)
    a, b = a[np.isfinite(a) & (a > 0)], b[np.isfinite(b) & (b > 0)]
    nan = float("nan")
    if a.size == 0 or b.size == 0:
        return ShiftEstimate(nan, nan, nan, nan, a.size, b.size, "inconclusive", "no samples")
    if a.size < min_samples or b.size < min_samples:
        ratio = float(np.median(b) / np.median(a))
        return ShiftEstimate(ratio, nan, nan, nan, a.size, b.size, "inconclusive",
                             f"fewer than {min_samples} samples on a side; raise timing.min_run_time")
    ratio, lo, hi = shift_interval(a, b, confidence)
    from scipy import stats as _sps

    p = float(_sps.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    slower, faster = ratio > 1.0 + threshold, ratio < 1.0 / (1.0 + threshold)
    ci = f"{confidence:.0%} CI [{lo:.3f}, {hi:.3f}]"
    if slower and lo > 1.0:
        verdict, reason = "regression", f"slower by {ratio - 1:.1%}, {ci}"
    elif faster and hi < 1.0:
        verdict, reason = "improvement", f"faster by {1 - ratio:.1%}, {ci}"
    elif slower or faster:
        verdict, reason = "inconclusive", f"change of {ratio - 1:+.1%} but {ci} contains 1 (noisy)"
    else:
        verdict, reason = "unchanged", f"change of {ratio - 1:+.1%} is within the ±{threshold:.0%} threshold"
    return ShiftEstimate(ratio, lo, hi, p, a.size, b.size, verdict, reason)
