"""Cost predictions from shapes alone: skip what cannot fit before spending time on it.

Why: on a 24 GiB laptop a 224² ``masked`` attention wants ~100 GB and a 224² global attention step
on one CPU core takes minutes. Running them only to watch them die costs the sweep its time budget,
so the runner skips cases whose predicted memory exceeds ``limits.max_memory_gb`` (status ``oom``) or
whose *lower bound* on time exceeds ``limits.timeout_s`` (status ``timeout``), saying why in the row.

Memory comes from ``cost.case_cost`` (parameters, token activations, and the mechanism's own
``attention_memory_bytes`` for its backend). Time bound: one step costs at least
2·MACs·(3 if train) / matmul_peak; a case runs the steps its metrics declare (``Metric.steps``:
memory warm-up + measured, timing warm-up + block estimate + one block).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .case import Case
from .cost import case_cost

GIB = 2**30


@dataclass(frozen=True)
class Prediction:
    macs: int  # analytic forward MACs for the case's batch
    memory_bytes: int
    step_seconds_min: float | None  # lower bound of one step (None without a matmul peak)


def predict(case: Case, matmul_peak_gflops: float | None = None) -> Prediction:
    cost = case_cost(case)
    step = None
    if matmul_peak_gflops:
        step = 2 * cost.macs * (3 if case.mode == "train" else 1) / (matmul_peak_gflops * 1e9)
    return Prediction(macs=cost.macs, memory_bytes=cost.memory_bytes, step_seconds_min=step)


def steps_needed(metric_options: dict[str, Any]) -> int:
    """Module steps a case runs at least, as its metrics declare them ({metric name: options})."""
    from .metrics import get

    return sum(int(get(name).steps(opts)) for name, opts in metric_options.items())


def runs_module(metrics: list[str]) -> bool:
    from .metrics import get

    return any(get(name).runs_module for name in metrics)


def skip_reason(case: Case, pred: Prediction, metric_options: dict[str, Any], max_memory_gb: float,
                timeout_s: float) -> tuple[str, str] | None:
    """(status, one-line reason) when the case should not run, else None."""
    if runs_module(list(metric_options)) and pred.memory_bytes > max_memory_gb * GIB:
        return "oom", (f"predicted {pred.memory_bytes / GIB:.1f} GiB > limits.max_memory_gb={max_memory_gb:g} "
                       f"(memory model in attnbench/cost.py and the mechanism's attention_memory_bytes); not run")
    steps = steps_needed(metric_options)
    if pred.step_seconds_min is not None and steps:
        bound = steps * pred.step_seconds_min
        if bound > timeout_s:
            return "timeout", (f"needs >= {bound:.0f} s ({steps} steps x {pred.step_seconds_min:.1f} s at the "
                               f"measured matmul peak) > limits.timeout_s={timeout_s:g}; not run")
    return None
