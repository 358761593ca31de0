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

import copy
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from mechanisms.reference import reference_forward

from ..results_schema import Column, stored_bool
from . import Metric, MetricContext, SummaryColumn, register

# Forward relative-L2 caps, a little above what naive maths measures (16x16 tokens, 4 heads: about
# 3e-7 in fp32, 4e-3 to 6e-3 in bf16, 5e-4 to 7e-4 in fp16) and in line with xformers' per-dtype tables.
REL_L2_CAP = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}
GRAD_CAP_FACTOR = 3.0
FLOAT64_ATOL = 1e-10


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rtol_factor: float = Field(2.0, gt=0, description="kernel error may be this many times the naive baseline's")
    rounding_factor: float = Field(2.0, ge=0, description="plus this many times the reference's rounding")
    grad_cap_factor: float = Field(GRAD_CAP_FACTOR, gt=0, description="relative L2 caps for gradients are this much looser")


def errors(out: Tensor, ref: Tensor) -> dict[str, float]:
    """max_abs, mean_abs, rel_l2 and cosine of ``out`` against the float64 ``ref``."""
    out, ref = out.detach().double().flatten(), ref.detach().double().flatten()
    diff = out - ref
    ref_norm = ref.norm().item()
    denom = out.norm().item() * ref_norm
    return {
        "max_abs": diff.abs().max().item(),
        "mean_abs": diff.abs().mean().item(),
        "rel_l2": diff.norm().item() / ref_norm if ref_norm > 0 else float(diff.norm().item() > 0) * float("inf"),
        "cosine": (out @ ref).item() / denom if denom > 0 else float("nan"),
    }


def rounding(ref: Tensor, dtype: torch.dtype) -> float:
    """Error of holding ``ref`` in ``dtype`` plus that of one add/subtract at its scale (flash's fwd_atol)."""
    ref = ref.detach().double()
    low = ref.to(dtype)
    cast = (low.double() - ref).abs().max().item()
    arith = ((low + 0.3) - 0.3 - low).double().abs().max().item()
    return cast + arith


def judge(out: Tensor, base: Tensor, ref: Tensor, dtype: torch.dtype, cap: float, opts: Options) -> dict[str, Any]:
    e, b = errors(out, ref), errors(base, ref)
    tol = opts.rtol_factor * b["max_abs"] + opts.rounding_factor * rounding(ref, dtype)
    if dtype == torch.float64:
        tol = max(tol, FLOAT64_ATOL * max(1.0, ref.detach().abs().max().item()))
    reasons = []
    if not e["max_abs"] <= tol:
        reasons.append(f"max_abs {e['max_abs']:.3g} > {tol:.3g} (= {opts.rtol_factor:g} x naive {b['max_abs']:.3g} + rounding)")
    if not e["rel_l2"] <= cap:
        reasons.append(f"rel_l2 {e['rel_l2']:.3g} > cap {cap:.3g}")
    return {**e, "base_max_abs": b["max_abs"], "base_rel_l2": b["rel_l2"], "tol_max_abs": tol, "rel_l2_cap": cap,
            "pass": not reasons, "reason": "; ".join(reasons) or None}


def compare(module: torch.nn.Module, x: Tensor, train: bool, opts: Options | None = None, seed: int = 0) -> dict[str, Any]:
    """Fidelity columns (``fid_*``) of ``module`` at input ``x``, both already in the dtype under test."""
    opts = opts or Options()
    dtype = x.dtype
    cap = REL_L2_CAP.get(dtype, REL_L2_CAP[torch.float32])
    module = module.eval()
    ref_module = copy.deepcopy(module).to(torch.float64)
    x = x.detach()
    inputs = {name: (x.double() if name == "ref" else x.clone()).requires_grad_(train) for name in ("kernel", "base", "ref")}
    outs = {
        "kernel": module(inputs["kernel"]),
        "base": reference_forward(module, inputs["base"], dtype=None),
        "ref": reference_forward(ref_module, inputs["ref"], dtype=None),
    }
    verdict = judge(outs["kernel"], outs["base"], outs["ref"], dtype, cap, opts)
    row = {f"fid_{k}": v for k, v in verdict.items()}
    if train:
        gen = torch.Generator().manual_seed(seed + 2)
        grad_out = torch.randn(outs["ref"].shape, generator=gen, dtype=torch.float64).to(dtype).to(x.device)
        grads = {}
        for name, out in outs.items():
            g = grad_out.double() if name == "ref" else grad_out
            grads[name], = torch.autograd.grad(out, inputs[name], grad_outputs=g)
        gv = judge(grads["kernel"], grads["base"], grads["ref"], dtype, cap * opts.grad_cap_factor, opts)
        row.update({f"fid_grad_{k}": v for k, v in gv.items()})
        row["fid_pass"] = bool(verdict["pass"] and gv["pass"])
        if not gv["pass"]:
            row["fid_reason"] = "; ".join(r for r in (verdict["reason"], "grad: " + gv["reason"]) if r)
    return row


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
