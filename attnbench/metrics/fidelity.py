"""Does the fast kernel compute the mechanism's own definition, within the rounding its dtype allows?

Protocol (the flash-attention form, dtype-adaptive instead of fixed tolerances):

- The case's module and input are built in the case dtype, so weights and input are rounded once.
  The **reference** is ``mechanisms.reference.reference_forward`` on a float64 copy of *that* module
  fed the same rounded input upcast to float64 — rounding of the inputs is never blamed on the kernel.
- The **baseline** ("the same maths run naively in that dtype") is that same reference computation —
  dense logits, explicit exp / sum normalisation, positional hooks — run on the case-dtype module and
  input, without upcasting (``reference_forward(module, x, dtype=None)``). It is *not* the ``masked``
  backend: on CPU, SDPA accumulates in higher precision, so it would set a stricter bar than naive
  maths for no reason (in bf16 its error measured 2-4x below the naive baseline's).
- **Pass** when ``max_abs(kernel - ref) <= 2 * max_abs(baseline - ref) + 2 * rounding(ref)``, where
  ``rounding(ref)`` is the error of storing the reference in the case dtype plus the error of one
  add-and-subtract at its scale, ``|(r + 0.3) - 0.3 - r|`` in that dtype (flash-attention's
  ``fwd_atol``), **and** the relative L2 error is under the per-dtype cap below.
- In ``mode: train`` the input gradient for a fixed random output gradient (rounded the same way)
  is judged by the same rule, with caps 3x looser (gradients accumulate more rounding).
- In float64 the naive baseline *is* the reference (error 0), so the rule would demand bit-equality;
  there the tolerance is ``FLOAT64_ATOL`` (1e-10) times the output scale instead.
- Cosine similarity is reported, never a gate: a real masking bug (zero-padded keys) still scores
  ~0.985 while its relative L2 error is ~0.2.
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

# The rule itself lives free of pydantic (attnbench doctor needs it on a bare machine).
from ..fidelity_rule import FLOAT64_ATOL, GRAD_CAP_FACTOR, REL_L2_CAP, compare, errors, judge, rounding  # noqa: F401
from ..results_schema import Column, stored_bool
from . import Metric, MetricContext, SummaryColumn, register


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rtol_factor: float = Field(2.0, gt=0, description="kernel error may be this many times the naive baseline's")
    rounding_factor: float = Field(2.0, ge=0, description="plus this many times the reference's rounding")
    grad_cap_factor: float = Field(GRAD_CAP_FACTOR, gt=0, description="relative L2 caps for gradients are this much looser")


def measure(ctx: MetricContext) -> dict[str, Any]:
    torch.set_num_threads(ctx.threads)
    from ..model_case import ModelCase, fidelity as model_fidelity

    if isinstance(ctx.case, ModelCase):  # a whole model: its logits against a float64 copy (reported, not judged)
        return model_fidelity(ctx.case, ctx.device)
    module = ctx.build_module()
    x = ctx.make_input()
    return compare(module, x, ctx.case.mode == "train", ctx.options, seed=ctx.case.seed)


def _columns() -> tuple[Column, ...]:
    kinds = {"max_abs": "float", "mean_abs": "float", "rel_l2": "float", "cosine": "float", "base_max_abs": "float",
             "base_rel_l2": "float", "tol_max_abs": "float", "rel_l2_cap": "float", "pass": "bool", "reason": "str"}
    return tuple(Column(f"fid_{part}{name}", kind) for part in ("", "grad_") for name, kind in kinds.items())


def _pass_cell(row: Any) -> str:
    return {True: "pass", False: "[red]FAIL[/red]", None: ""}[stored_bool(row.get("fid_pass"))]


METRIC = register(Metric(
    name="fidelity",
    measure=measure,
    doc="output (and, in train, gradient) error against the float64 reference, judged by the flash-attention rule",
    columns=_columns(),
    options=Options,
    options_key="fidelity",
    summary=(SummaryColumn("fidelity", "fid_pass", render=_pass_cell),),
))
