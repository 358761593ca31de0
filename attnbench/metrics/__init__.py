"""Metrics: one module each, one job each.

Protocol every metric module follows (the runner composes them; adding a metric is one file plus a
test and one line in ``METRIC_MODULES``):

    NAME: str                        # the name used in a suite's ``metrics:`` list
    OPTIONS_KEY: str | None          # top-level suite key holding its options (e.g. "timing"), or None
    Options: type[pydantic.BaseModel]  # those options, with defaults; extra keys forbidden
    EXCLUSIVE: bool                  # True when it must run alone on the machine (timing, memory)
    def measure(ctx: MetricContext) -> dict[str, Any]
        # flat result columns, units in the names (``latency_ms``); raw samples go through
        # ``ctx.add_samples`` and end up in samples.jsonl.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch

from ..case import Case

# name -> module path; imported lazily so `import attnbench` stays cheap.
METRIC_MODULES: dict[str, str] = {
    "backend": "attnbench.metrics.backend",
    "flops": "attnbench.metrics.flops",
    "params": "attnbench.metrics.params",
    "memory": "attnbench.metrics.memory",
    "time": "attnbench.metrics.timing",
    "fidelity": "attnbench.metrics.fidelity",
    "receptive_field": "attnbench.metrics.receptive_field",
    "accuracy": "attnbench.metrics.accuracy",
}


def metric_module(name: str) -> ModuleType:
    if name not in METRIC_MODULES:
        raise ValueError(f"unknown metric {name!r}; choose from {sorted(METRIC_MODULES)}")
    return importlib.import_module(METRIC_MODULES[name])


@dataclass
class MetricContext:
    """What a metric gets for one case: the case, its own options, and the resolved device/dtype."""

    case: Case
    options: Any  # the metric's validated Options instance
    device: torch.device
    dtype: torch.dtype
    threads: int = 1
    samples: dict[str, list[float]] = field(default_factory=dict)
    # Run-level facts a metric may need, e.g. ``matmul_peak_gflops`` ({dtype: GFLOP/s}) for efficiency.
    env: dict[str, Any] = field(default_factory=dict)

    def build_module(self) -> torch.nn.Module:
        return self.case.build_module(self.device, self.dtype)

    def make_input(self, requires_grad: bool = False) -> torch.Tensor:
        return self.case.make_input(self.device, self.dtype, requires_grad=requires_grad)

    def add_samples(self, name: str, values: list[float]) -> None:
        self.samples.setdefault(name, []).extend(float(v) for v in values)
