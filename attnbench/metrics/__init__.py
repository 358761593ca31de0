"""Metrics as registered objects: what each one measures, needs, costs, writes and shows.

Why objects and not module conventions: the planner (which cases execute the module, how many
steps they run, how many threads), the suite loader (which option block belongs to whom), the run
summary and the report all need to know about every metric. Each metric module declares one
:class:`Metric` and registers it, and those places read the declarations: none of them tests a
metric's name, so a new metric is one file plus its test, and ``tests/test_contracts.py``
checks every registered metric against this contract.

    from attnbench.metrics import Metric, register
    register(Metric(name="mine", measure=measure, doc="...", columns=(Column("mine_x", "float"),)))

Built-in metrics are imported lazily (``get`` imports the module on first use), so ``import
attnbench`` stays cheap. A third-party or test-only metric registers itself when its module is
imported; the runner passes that module to every worker process, as it does for mechanisms.
Packages make their metrics visible to the ``attnbench`` command through the ``attnbench.metrics``
entry-point group (a module that registers, or a ``Metric`` object), loaded the first time the
registry is asked for names.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch

from ..case import Case
from ..results_schema import Column

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from pydantic import BaseModel

# Built-in metrics, in the order their columns appear in summaries and reports.
BUILTIN: dict[str, str] = {
    "backend": "attnbench.metrics.backend",
    "flops": "attnbench.metrics.flops",
    "params": "attnbench.metrics.params",
    "memory": "attnbench.metrics.memory",
    "time": "attnbench.metrics.timing",
    "fidelity": "attnbench.metrics.fidelity",
    "receptive_field": "attnbench.metrics.receptive_field",
    "accuracy": "attnbench.metrics.accuracy",
}


@dataclass(frozen=True)
class SummaryColumn:
    """A column of the end-of-run terminal table: header, results column, and a format spec or a
    renderer of the whole row (for cells such as "pass"/"FAIL" or a flagged MAC count)."""

    header: str
    column: str
    fmt: str | None = None
    render: Callable[[Any], str] | None = None


@dataclass(frozen=True)
class ReportTable:
    """A per-group pivot in the report (mechanisms x resolutions) of one column."""

    column: str
    title: str
    cell: Callable[[Any], str]  # formatted cell of a row (markdown, LaTeX)
    value: Callable[[Any], Any]  # raw cell of a row (CSV)
    file: str  # stem of tables/<file>__<group>.csv
    rank: int = 100  # position among all metrics' tables in a group (lower first)


def _zero(_: Any) -> int:
    return 0


def _none(_: Any) -> None:
    return None


@dataclass(frozen=True)
class Metric:
    """Everything the harness knows about a metric. Only ``name``, ``measure``, ``doc`` and
    ``columns`` are required; the rest default to "does not apply".

    - ``options`` / ``options_key``: the pydantic model of its suite block and that block's key.
    - ``run_level``: the block is set once for the run (``include:`` blocks may not override it).
    - ``exclusive``: needs the machine alone (``workers`` must be 1).
    - ``prepare``: ``measure`` in two halves, for callers that prepare several processes at once and
      measure them one at a time (``attnbench ab``): ``prepare(ctx)`` does the untimed work (build,
      warm-up) and returns a call that measures and returns the columns. ``measure(ctx)`` must equal
      ``prepare(ctx)()``.
    - ``runs_module``: executes the mechanism, so a case predicted not to fit in memory is skipped.
    - ``static``: columns known from shapes alone (also written for cases that did not run).
    - ``steps`` / ``seconds``: module steps and fixed seconds a case spends in it (planner, dry run).
    - ``threads``: intra-op threads the run must use, when the metric fixes them.
    - ``summary`` / ``summary_notes``: terminal-table columns and lines printed under the table.
    - ``plan_note``: a dry-run line about cost the planner cannot estimate (given each case's options).
    - ``report_tables`` / ``report_plots`` / ``report_scaling`` / ``report_section``: what the report shows.
    """

    name: str
    measure: Callable[["MetricContext"], dict[str, Any]]
    doc: str
    columns: tuple[Column, ...]
    options: type["BaseModel"] | None = None
    options_key: str | None = None
    run_level: bool = False
    exclusive: bool = False
    prepare: Callable[["MetricContext"], Callable[[], dict[str, Any]]] | None = None
    runs_module: bool = True
    static: Callable[[Case], dict[str, Any]] | None = None
    steps: Callable[[Any], int] = _zero
    seconds: Callable[[Any], float] = _zero
    threads: Callable[[Any], int | None] = _none
    summary: tuple[SummaryColumn, ...] = ()
    summary_notes: Callable[["pd.DataFrame"], list[str]] | None = None
    plan_note: Callable[[list[Any]], str | None] | None = None
    report_tables: tuple[ReportTable, ...] = ()
    report_plots: Callable[..., list[Path]] | None = None
    report_scaling: tuple[tuple[str, str], ...] = ()  # (column, name) fitted as cost ∝ tokens^α
    report_section: Callable[[Any, Path], str | None] | None = None

    @property
    def module(self) -> str:
        """The module that declares the metric: what a worker process imports to have it."""
        return self.measure.__module__

    def make_options(self, raw: dict[str, Any] | None = None) -> Any:
        """Validated options from a suite block (defaults when absent); None for metrics without."""
        return self.options.model_validate(raw or {}) if self.options is not None else None


_REGISTRY: dict[str, Metric] = {}
ENTRY_POINT_GROUP = "attnbench.metrics"
_entry_points_loaded = False
_entry_point_errors: dict[str, str] = {}


def _load_entry_points() -> None:
    """Import plugin metrics once; a broken plugin is reported when asked for, never fatal."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from mechanisms.registry import load_plugins

    load_plugins(ENTRY_POINT_GROUP, lambda name, obj: register(obj) if isinstance(obj, Metric) else None,
                 _entry_point_errors)


def register(metric: Metric) -> Metric:
    """Make ``metric`` usable in suites. A second metric under one name is an error; registering the
    same declaration again (a module imported twice) is not."""
    if not isinstance(metric, Metric):
        raise TypeError(f"register() takes a Metric declaration, got {type(metric).__name__}")
    old = _REGISTRY.get(metric.name)
    if old is not None and old.measure is not metric.measure:
        raise ValueError(f"metric name {metric.name!r} is already registered by {old.module}; choose another name")
    if metric.options_key:
        for other in _REGISTRY.values():
            if other.name != metric.name and other.options_key == metric.options_key:
                raise ValueError(f"metric {metric.name!r}: suite key {metric.options_key!r} is already the options "
                                 f"block of metric {other.name!r}")
    _REGISTRY[metric.name] = metric
    return metric


def unregister(name: str) -> None:
    """Remove a metric (tests use this to clean up test-only metrics)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    """Every metric a suite may list: the built-ins, then registered extras (plugins) in registration order."""
    _load_entry_points()
    return [*BUILTIN, *(n for n in _REGISTRY if n not in BUILTIN)]


def get(name: str) -> Metric:
    """The declaration of metric ``name`` (importing a built-in on first use); ValueError if unknown."""
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(BUILTIN[name])
    if name not in _REGISTRY:
        known = names()
        if name in _REGISTRY:  # registered by a plugin just loaded
            return _REGISTRY[name]
        broken = f" (its plugin failed to load: {_entry_point_errors[name]})" if name in _entry_point_errors else ""
        raise ValueError(f"unknown metric {name!r}{broken}; choose from {known}")
    return _REGISTRY[name]


def all_metrics() -> list[Metric]:
    """Every metric whose module imports in this install (a built-in whose optional dependency is
    missing is left out here and reported when a suite asks for it)."""
    out = []
    for name in names():
        try:
            out.append(get(name))
        except ImportError:
            continue
    return out


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
