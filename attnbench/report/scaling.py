"""Resolution scaling: power-law exponents and crossover points, as pure functions on arrays.

Why: every tool prints points; the question users ask is "how does cost grow with resolution, and
from which resolution is X cheaper than Y". Both answers are defined here once, precisely, so the
tables and the plots agree and tests can check them on synthetic data.

* Exponent: least-squares fit of ``log cost = log c + α·log tokens`` over the measured points, so
  cost ≈ c·tokens^α (α = 2 for quadratic global attention, ≈ 1 for fixed windows).
* Crossover of ``a`` against ``b``: on the token counts where both were measured, take
  r(N) = log(cost_a / cost_b). A crossover is a sign change of r between consecutive points N_i, N_{i+1};
  its location N* is where the straight line through (log N_i, r_i) and (log N_{i+1}, r_{i+1})
  reaches 0, i.e. log-log interpolation of both curves. "a becomes cheaper" means r goes from ≥ 0 to < 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np


@dataclass(frozen=True)
class PowerLaw:
    alpha: float
    coef: float  # c in cost = c * tokens**alpha
    points: int

    def __call__(self, tokens: float | np.ndarray) -> float | np.ndarray:
        return self.coef * np.power(tokens, self.alpha)


@dataclass(frozen=True)
class Crossover:
    tokens: float
    direction: Literal["a_cheaper", "a_costlier"]  # what happens to a as tokens grow past this point
    extrapolated: bool = False

    @property
    def side(self) -> float:
        """Side of the square map with this many tokens (e.g. 112 for 12544 tokens)."""
        return math.sqrt(self.tokens)


def _clean(tokens: Sequence[float], cost: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(tokens, dtype=float)
    c = np.asarray(cost, dtype=float)
    keep = np.isfinite(t) & np.isfinite(c) & (t > 0) & (c > 0)
    order = np.argsort(t[keep])
    return t[keep][order], c[keep][order]


def fit_power_law(tokens: Sequence[float], cost: Sequence[float]) -> PowerLaw | None:
    """Fit cost ≈ c·tokens^α; None with fewer than two distinct token counts."""
    t, c = _clean(tokens, cost)
    if np.unique(t).size < 2:
        return None
    alpha, logc = np.polyfit(np.log(t), np.log(c), 1)
    return PowerLaw(float(alpha), float(np.exp(logc)), int(t.size))


def crossovers(tokens: Sequence[float], cost_a: Sequence[float], cost_b: Sequence[float]) -> list[Crossover]:
    """Every measured crossover of curve a against curve b (same token grid, NaN = not measured)."""
    t = np.asarray(tokens, dtype=float)
    a = np.asarray(cost_a, dtype=float)
    b = np.asarray(cost_b, dtype=float)
    keep = np.isfinite(t) & np.isfinite(a) & np.isfinite(b) & (t > 0) & (a > 0) & (b > 0)
    order = np.argsort(t[keep])
    t, r = t[keep][order], np.log(a[keep][order] / b[keep][order])
    out: list[Crossover] = []
    for i in range(t.size - 1):
        cheaper_before, cheaper_after = r[i] < 0, r[i + 1] < 0
        if cheaper_before == cheaper_after:
            continue
        frac = r[i] / (r[i] - r[i + 1]) if r[i] != r[i + 1] else 0.0
        logn = math.log(t[i]) + frac * (math.log(t[i + 1]) - math.log(t[i]))
        out.append(Crossover(math.exp(logn), "a_cheaper" if cheaper_after else "a_costlier"))
    return out


def extrapolated_crossover(fit_a: PowerLaw, fit_b: PowerLaw) -> Crossover | None:
    """Where two fitted power laws meet (c_a N^α_a = c_b N^α_b); None when they are parallel."""
    if abs(fit_a.alpha - fit_b.alpha) < 1e-6:
        return None
    logn = math.log(fit_b.coef / fit_a.coef) / (fit_a.alpha - fit_b.alpha)
    direction = "a_cheaper" if fit_a.alpha < fit_b.alpha else "a_costlier"
    return Crossover(math.exp(logn), direction, extrapolated=True)


def describe_crossover(tokens: Sequence[float], cost_a: Sequence[float], cost_b: Sequence[float],
                       name_b: str) -> tuple[str, Crossover | None]:
    """One cell of text answering "from which size is a cheaper than b", and the point to mark.

    The point is the last measured crossover after which a stays cheaper; without one, the fitted
    power laws are extrapolated (marked "≈ … (extrapolated)") when they meet outside the measured range.
    """
    t = np.asarray(tokens, dtype=float)
    a = np.asarray(cost_a, dtype=float)
    b = np.asarray(cost_b, dtype=float)
    both = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
    if both.sum() == 0:
        return f"no common sizes with {name_b}", None
    ratio = a[both] / b[both]
    found = crossovers(t, a, b)
    if found and found[-1].direction == "a_cheaper":
        c = found[-1]
        return f"cheaper from {c.tokens:,.0f} tokens (≈{c.side:.0f}²)", c
    if np.all(ratio < 1):
        lead = f"cheaper at all measured sizes (≥{t[both].min():,.0f} tokens)"
    elif np.all(ratio >= 1):
        lead = f"costlier at all measured sizes (≤{t[both].max():,.0f} tokens)"
    else:
        lead = f"costlier from {found[-1].tokens:,.0f} tokens (≈{found[-1].side:.0f}²)"
        return lead, found[-1]
    fa, fb = fit_power_law(t[both], a[both]), fit_power_law(t[both], b[both])
    if fa is not None and fb is not None:
        x = extrapolated_crossover(fa, fb)
        lo, hi = t[both].min(), t[both].max()
        if x is not None and x.direction == "a_cheaper" and (x.tokens > hi or x.tokens < lo):
            return f"{lead}; crosses ≈{x.tokens:,.0f} tokens (≈{x.side:.0f}², extrapolated)", None
    return lead, None
