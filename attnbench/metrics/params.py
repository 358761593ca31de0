"""Parameter counts: all parameters, and the trainable ones (Slide's frozen shift kernels are not)."""
from __future__ import annotations

from typing import Any

from ..case import Case
from ..cost import case_cost
from ..results_schema import PARAMS, Column
from . import Metric, MetricContext, SummaryColumn, register


def static_columns(case: Case) -> dict[str, int]:
    cost = case_cost(case)  # counted on the meta device: shapes only
    return {PARAMS: cost.params, "params_trainable": cost.params_trainable}


def measure(ctx: MetricContext) -> dict[str, Any]:
    return static_columns(ctx.case)


METRIC = register(Metric(
    name="params",
    measure=measure,
    doc="parameter counts of the mechanism, all and trainable",
    columns=(Column(PARAMS, "int", "parameters", "every parameter, frozen ones included"),
             Column("params_trainable", "int", "parameters", "parameters with requires_grad")),
    runs_module=False,
    static=static_columns,
    summary=(SummaryColumn("params", PARAMS, ".0f"),),
))
