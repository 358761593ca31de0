"""Statistics of paired, interleaved measurements: pure functions on ratios, no I/O, no clock.

Why a separate module: ``attnbench ab`` measures base and head of every case in the same round,
seconds apart, so drift (other tenants, CPU frequency, the VM's host) hits both alike and cancels
in the round's ratio. What is left to judge is a small sample of R paired ratios, one per round,
whose noise is the *between-round* noise that within-run samples never see. The rule must be
testable on synthetic ratios, exactly, without running anything.

The rule (``paired_verdict``), for ratios r_1..r_R (head median / base median of each round):

* Work on d_i = log r_i, so a slowdown is a shift and the result is a ratio.
* ``ratio`` = exp(Hodges-Lehmann estimate) = exp(median of the Walsh averages (d_i + d_j)/2, i <= j):
  the estimator that goes with the Wilcoxon signed-rank test. One wild round moves it little.
* Its ``confidence`` interval is the distribution-free one that inverts the signed-rank test: the
  (t+1)-th smallest and (t+1)-th largest Walsh average, t the largest value with
  P(T+ <= t) <= (1 - confidence)/2 under the exact null distribution of the signed-rank statistic.
  It needs no normality and no seed. It exists only from R = 6 rounds at 95 % (2^-R must be below
  2.5 %); with fewer rounds it is unbounded and the verdict cannot be a regression.
* Verdict words and the threshold rule are those of ``attnbench.stats.compare_samples``:
  **regression** when ratio > 1 + threshold and the interval lies above 1; **improvement** the
  mirror image; **inconclusive** when the estimate passes the threshold but the interval holds 1;
  **unchanged** otherwise.

**Confirmation rounds** (``confirmed_verdict``). A case that is not *unchanged* after its rounds is
measured again in fresh rounds at the end of the session:

- *inconclusive* (the estimate passes the threshold, the interval holds 1): its verdict is the
  confirmation rounds' alone. Why: on a shared machine a noise burst can hit one side of a round and
  make its ratio read 0.78 under a real +5 %; two such rounds out of 16 push 31 of the 136 Walsh
  averages below 0, past the 29 the interval tolerates, so a real slowdown reads inconclusive (5 of
  60 injected +5 % slowdowns in three calibrations). Why the fresh rounds alone and not all rounds
  pooled: the screening rounds were selected for looking like a change, so pooling them with more
  rounds reuses that luck. Judged alone, the confirmation rounds are an independent test.
- *regression* or *improvement*: the flag stands unless the confirmation rounds contradict it (they
  read *unchanged*, or a change the other way); then the case is *inconclusive*, the two looks
  disagreeing. Why: a session judges every case, and at (1 - confidence)/2 = 0.5 % per case a suite
  of 200 cases expects one false flag per A/A session (two kernels-suite A/As at 99 %: 0 and 2 of 200,
  both +2.4-2.6 % with intervals starting at 1.001-1.003), and a CI check that fails every other
  unchanged pull request is not a gate. A false flag now also needs its confirmation rounds not to
  read unchanged; a real change keeps its flag, since its confirmation reads unchanged only when its
  estimate falls inside the threshold.

The false-alarm rate of the two stages together is at most α + P(inconclusive)·α, α = (1 -
confidence)/2 per side, for a case inconclusive first, and α·P(confirmation does not read unchanged)
for one flagged first.

``detectable_slowdown`` turns the spread of an A/A (the same code on both sides) into the smallest
slowdown the gate flags with 95 % probability on this machine, for choosing ``--threshold``.
``compare_rounds`` is the unpaired counterpart for two stored runs with ``timing.rounds``: Welch's
t-interval on the log round medians, i.e. judged by between-round variance.
"""
from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache
from typing import Sequence

import numpy as np

from .stats import DEFAULT_CONFIDENCE, DEFAULT_THRESHOLD, ShiftEstimate

NORMAL_APPROX_ABOVE = 200  # rounds; the exact null distribution is used up to here


@lru_cache(maxsize=256)
def signed_rank_null(n: int) -> tuple[int, ...]:
    """Counts of each value 0..n(n+1)/2 of T+ over the 2^n sign patterns (exact, integers)."""
    counts = [1] + [0] * (n * (n + 1) // 2)
    for rank in range(1, n + 1):
        for t in range(len(counts) - 1, rank - 1, -1):
            counts[t] += counts[t - rank]
    return tuple(counts)


def signed_rank_cdf(t: float, n: int) -> float:
    """P(T+ <= t) under the null (exact; normal approximation with continuity beyond 200 rounds)."""
    if n > NORMAL_APPROX_ABOVE:
        mean, sd = n * (n + 1) / 4, math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
        return 0.5 * math.erfc(-(math.floor(t) + 0.5 - mean) / sd / math.sqrt(2))
    counts = signed_rank_null(n)
    k = int(math.floor(t))
    if k < 0:
        return 0.0
    return sum(counts[: k + 1]) / 2**n


def interval_rank(n: int, confidence: float) -> int | None:
    """t such that the interval is [W_(t+1), W_(M-t)] (1-based), or None if R is too small."""
    alpha = (1.0 - confidence) / 2.0
    if signed_rank_cdf(0, n) > alpha:
        return None
    lo, hi = 0, n * (n + 1) // 2
    while lo < hi:  # largest t with cdf(t) <= alpha
        mid = (lo + hi + 1) // 2
        if signed_rank_cdf(mid, n) <= alpha:
            lo = mid
        else:
            hi = mid - 1
    return lo


def min_rounds(confidence: float = DEFAULT_CONFIDENCE) -> int:
    """Fewest rounds whose signed-rank interval can exclude 1 at ``confidence`` (6 at 95 %)."""
    n = 1
    while interval_rank(n, confidence) is None:
        n += 1
    return n


def walsh_averages(d: Sequence[float]) -> np.ndarray:
    x = np.asarray(d, dtype=float)
    i, j = np.triu_indices(x.size)
    return np.sort((x[i] + x[j]) / 2.0)


def signed_rank_p(d: Sequence[float]) -> float:
    """Two-sided p of the Wilcoxon signed-rank test (zeros dropped, ties get average ranks)."""
    x = np.asarray(d, dtype=float)
    x = x[x != 0]
    n = x.size
    if n == 0:
        return 1.0
    from scipy.stats import rankdata

    ranks = rankdata(np.abs(x))
    t = float(ranks[x > 0].sum())
    low = signed_rank_cdf(t, n)  # P(T+ <= t)
    high = 1.0 - signed_rank_cdf(math.ceil(t) - 1, n)  # P(T+ >= t)
    return float(min(1.0, 2.0 * min(low, high)))


def hodges_lehmann_interval(d: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float, float]:
    """(estimate, low, high) on the log scale; the interval is (-inf, inf) when R is too small."""
    w = walsh_averages(d)
    est = float(np.median(w))
    t = interval_rank(len(d), confidence)
    if t is None:
        return est, -math.inf, math.inf
    return est, float(w[t]), float(w[w.size - 1 - t])


def _verdict(ratio: float, lo: float, hi: float, threshold: float, confidence: float, what: str) -> tuple[str, str]:
    slower, faster = ratio > 1.0 + threshold, ratio < 1.0 / (1.0 + threshold)
    ci = f"{confidence:.0%} CI [{lo:.3f}, {hi:.3f}]"
    if slower and lo > 1.0:
        return "regression", f"slower by {ratio - 1:.1%}, {ci} ({what})"
    if faster and hi < 1.0:
        return "improvement", f"faster by {1 - ratio:.1%}, {ci} ({what})"
    if slower or faster:
        return "inconclusive", f"change of {ratio - 1:+.1%} but {ci} contains 1 ({what})"
    return "unchanged", f"change of {ratio - 1:+.1%} is within the ±{threshold:.0%} threshold ({what})"


def _check(threshold: float, confidence: float) -> None:
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0 (a fraction, e.g. 0.05 for 5 %), got {threshold}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), e.g. 0.95, got {confidence}")


def paired_verdict(ratios: Sequence[float], *, threshold: float = DEFAULT_THRESHOLD,
                   confidence: float = DEFAULT_CONFIDENCE) -> ShiftEstimate:
    """Verdict from the per-round head/base ratios (see the module docstring for the rule)."""
    _check(threshold, confidence)
    r = np.asarray(ratios, dtype=float)
    r = r[np.isfinite(r) & (r > 0)]
    n = int(r.size)
    nan = float("nan")
    if n == 0:
        return ShiftEstimate(nan, nan, nan, nan, 0, 0, "inconclusive", "no complete round")
    d = np.log(r)
    est, lo, hi = hodges_lehmann_interval(d, confidence)
    ratio, low, high = math.exp(est), math.exp(lo), math.exp(hi)
    p = signed_rank_p(d)
    if interval_rank(n, confidence) is None:
        return ShiftEstimate(ratio, low, high, p, n, n, "inconclusive",
                             f"{n} rounds cannot give a {confidence:.0%} interval; use at least "
                             f"{min_rounds(confidence)} rounds")
    verdict, reason = _verdict(ratio, low, high, threshold, confidence, f"{n} paired rounds, signed-rank p={p:.2g}")
    return ShiftEstimate(ratio, low, high, p, n, n, verdict, reason)


def needs_confirmation(screening: Sequence[float], *, threshold: float = DEFAULT_THRESHOLD,
                       confidence: float = DEFAULT_CONFIDENCE) -> bool:
    """Whether a case's screening rounds leave it anything but unchanged, so that confirmation rounds
    decide it (inconclusive) or check it (regression, improvement)."""
    return paired_verdict(screening, threshold=threshold, confidence=confidence).verdict != "unchanged"


def confirmed_verdict(screening: Sequence[float], confirmation: Sequence[float], *,
                      threshold: float = DEFAULT_THRESHOLD, confidence: float = DEFAULT_CONFIDENCE) -> ShiftEstimate:
    """The verdict of a case from its screening rounds and its confirmation rounds (see the module
    docstring): an inconclusive case is judged from its confirmation rounds alone; a flagged one keeps
    its flag unless they read unchanged or the other way, and is then inconclusive. Without
    confirmation rounds the screening verdict stands."""
    first = paired_verdict(screening, threshold=threshold, confidence=confidence)
    if first.verdict == "unchanged" or not len(confirmation):
        return first
    second = paired_verdict(confirmation, threshold=threshold, confidence=confidence)
    look = (f"{second.verdict} in {second.n_base} confirmation rounds ({second.ratio - 1:+.1%}, {confidence:.0%} CI "
            f"[{second.ci_low:.3f}, {second.ci_high:.3f}])")
    if first.verdict == "inconclusive":
        seen = (f"inconclusive in {first.n_base} rounds ({first.ratio - 1:+.1%}, {confidence:.0%} CI "
                f"[{first.ci_low:.3f}, {first.ci_high:.3f}]); judged from {second.n_base} confirmation rounds")
        return replace(second, reason=f"{second.reason}; {seen}")
    if second.verdict in (first.verdict, "inconclusive"):
        return replace(first, reason=f"{first.reason}; confirmed: {look}")
    return replace(first, verdict="inconclusive", reason=f"{first.reason}; not confirmed: {look}")


def compare_rounds(base: Sequence[float], new: Sequence[float], *, threshold: float = DEFAULT_THRESHOLD,
                   confidence: float = DEFAULT_CONFIDENCE) -> ShiftEstimate:
    """Two stored runs judged by between-round variance: Welch's t on the log round medians.

    ratio = exp(mean log new - mean log base); the interval is ratio · exp(± t_df · se) with the
    Welch-Satterthwaite df. Needs two rounds on each side (callers ask for three).
    """
    _check(threshold, confidence)
    la = np.log(np.asarray([v for v in base if v > 0 and math.isfinite(v)], dtype=float))
    lb = np.log(np.asarray([v for v in new if v > 0 and math.isfinite(v)], dtype=float))
    nan = float("nan")
    if la.size < 2 or lb.size < 2:
        return ShiftEstimate(nan, nan, nan, nan, la.size, lb.size, "inconclusive", "fewer than 2 rounds on a side")
    from scipy import stats as sps

    va, vb = la.var(ddof=1) / la.size, lb.var(ddof=1) / lb.size
    diff = float(lb.mean() - la.mean())
    se = math.sqrt(va + vb)
    ratio = math.exp(diff)
    if se == 0:
        lo = hi = ratio
        p = 1.0 if diff == 0 else 0.0
    else:
        df = (va + vb) ** 2 / (va**2 / (la.size - 1) + vb**2 / (lb.size - 1))
        q = float(sps.t.ppf(1 - (1 - confidence) / 2, df))
        lo, hi = math.exp(diff - q * se), math.exp(diff + q * se)
        p = float(2 * sps.t.sf(abs(diff) / se, df))
    verdict, reason = _verdict(ratio, lo, hi, threshold, confidence,
                               f"between rounds, {la.size}/{lb.size} rounds, Welch p={p:.2g}")
    return ShiftEstimate(ratio, lo, hi, p, int(la.size), int(lb.size), verdict, reason)


def robust_sd(d: Sequence[float]) -> float:
    """1.4826 · median absolute deviation: the normal sd, unmoved by one wild round."""
    x = np.asarray(d, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return float("nan")
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def detectable_slowdown(log_ratios: Sequence[float], *, rounds: int | None = None,
                        threshold: float = DEFAULT_THRESHOLD, confidence: float = DEFAULT_CONFIDENCE,
                        power: float = 0.95) -> float:
    """Smallest slowdown (fraction) the gate flags with probability ``power``, given A/A log ratios.

    Normal model on the log scale with the A/A's robust sd σ and n = ``rounds`` (default: as many as
    given): the estimate's standard error is se = 1.023 σ/√n (the Hodges-Lehmann estimator's
    asymptotic efficiency, √(π/3)), the interval's half-width is t_(n-1) · se, and a slowdown s is
    flagged with ``power`` when log(1+s) - z_power·se clears both log(1 + threshold) and the
    half-width. So s = exp(max(log(1+threshold), t·se) + z_power·se) - 1.
    """
    from scipy import stats as sps

    sigma = robust_sd(log_ratios)
    n = rounds or len([x for x in log_ratios if math.isfinite(x)])
    if not math.isfinite(sigma) or n < 2:
        return float("nan")
    se = math.sqrt(math.pi / 3) * sigma / math.sqrt(n)
    half = float(sps.t.ppf(1 - (1 - confidence) / 2, n - 1)) * se
    return math.expm1(max(math.log1p(threshold), half) + float(sps.norm.ppf(power)) * se)
