"""Rounds: measure a case several times, interleaved with the other cases, and keep one row.

Why: on a shared machine the noise that matters is drift over seconds to minutes, which moves every
block of one measurement together. Blocks of one measurement cannot see it; repeated measurements
spread over the run can. With ``timing.rounds: R`` every case is timed in R rounds (round r of all
cases before round r+1 of any), so the spread of a case's R round medians is the between-round
noise that ``compare`` can judge by. The timing budget ``timing.min_run_time`` is the case's total
and is split evenly over its rounds, so R costs only the per-round warm-up, not R times the run.

The row keeps the median of the round medians as ``latency_ms``, the round count
(``timing_rounds``) and ``latency_round_cv`` = robust sd of the log round medians (≈ their
coefficient of variation). Samples: ``latency_ms`` holds every block of every round, and
``latency_round_ms`` the R round medians. ``attnbench ab`` may time a case again in
confirmation rounds (``attnbench.paired.confirmed_verdict``); their medians are kept apart, as
``latency_confirm_round_ms``, because its verdict judges them apart. The row's latency and round
spread are over every round.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .paired import robust_sd

ROUND_SAMPLES = "latency_round_ms"
CONFIRM_SAMPLES = "latency_confirm_round_ms"
# Columns proportional to 1 / latency: rescaled from the first round to the combined latency.
INVERSE_LATENCY = ("throughput_img_s", "tokens_per_s", "achieved_gflops", "efficiency")


def round_budget(min_run_time: float, rounds: int) -> float:
    """Seconds of measured blocks per round: the case's budget split over its rounds."""
    return min_run_time / max(int(rounds), 1)


def combine(first: dict[str, Any], rounds: Sequence[Sequence[float]], confirming: Sequence[bool] = ()
            ) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Row columns and samples of a case from the first round's columns and every round's blocks (ms);
    ``confirming`` flags the rounds that were confirmation rounds (none by default)."""
    flags = list(confirming) + [False] * (len(rounds) - len(confirming))
    kept = [(list(map(float, r)), f) for r, f in zip(rounds, flags) if len(r)]
    rounds = [r for r, _ in kept]
    cols = dict(first)
    if not rounds:
        return cols, {}
    medians = [float(np.median(r)) for r in rounds]
    pooled = np.concatenate([np.asarray(r) for r in rounds])
    latency = float(np.median(medians))
    q1, q3 = np.percentile(pooled, [25, 75])
    scale = float(first["latency_ms"]) / latency if first.get("latency_ms") else 1.0
    for k in INVERSE_LATENCY:
        if cols.get(k) is not None:
            cols[k] = float(cols[k]) * scale
    cols.update({
        "latency_ms": latency,
        "latency_iqr_ms": float(q3 - q1),
        "latency_mean_ms": float(pooled.mean()),
        "timing_runs": int(pooled.size),
        "timing_rounds": len(rounds),
        "latency_round_cv": robust_sd(np.log(medians)) if len(medians) >= 2 else None,
    })
    samples = {"latency_ms": pooled.tolist(), ROUND_SAMPLES: [m for m, (_, f) in zip(medians, kept) if not f]}
    if any(f for _, f in kept):
        samples[CONFIRM_SAMPLES] = [m for m, (_, f) in zip(medians, kept) if f]
    return cols, samples


class RoundCollector:
    """Per case: the first round's columns and the blocks of every round so far."""

    def __init__(self) -> None:
        self.first: dict[str, dict[str, Any]] = {}
        self.extra: dict[str, dict[str, list[float]]] = {}  # the first round's other sample series
        self.blocks: dict[str, list[list[float]]] = {}
        self.confirming: dict[str, list[bool]] = {}

    def add(self, key: str, columns: dict[str, Any], samples: dict[str, list[float]], confirming: bool = False
            ) -> tuple[dict, dict]:
        """Record one round (a confirmation round if ``confirming``); returns the combined (columns,
        samples) so far."""
        if key not in self.first:
            self.first[key] = dict(columns)
            self.extra[key] = {k: v for k, v in samples.items() if k != "latency_ms"}
        self.blocks.setdefault(key, []).append(list(samples.get("latency_ms", [])))
        self.confirming.setdefault(key, []).append(bool(confirming))
        return self.snapshot(key)

    def snapshot(self, key: str) -> tuple[dict, dict]:
        """The combined (columns, samples) of the rounds recorded so far (empty before the first)."""
        if key not in self.first:
            return {}, {}
        cols, combined = combine(self.first[key], self.blocks[key], self.confirming[key])
        return cols, {**self.extra[key], **combined}

    def count(self, key: str) -> int:
        return len(self.blocks.get(key, []))
