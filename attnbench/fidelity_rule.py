"""The fidelity rule itself, free of the harness: does a kernel equal the float64 reference?

Why a module of its own: ``attnbench doctor`` must run on a bare GPU machine with only torch, numpy
and rich, so the rule cannot live behind pydantic (the ``fidelity`` metric's options). The protocol
is described in ``attnbench/metrics/fidelity.py``; ``opts`` is any object with ``rtol_factor``,
``rounding_factor`` and ``grad_cap_factor`` (the metric's Options, or :class:`Factors`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mechanisms.reference import reference_forward


# Forward relative-L2 caps, a little above what naive maths measures (16x16 tokens, 4 heads: about
# 3e-7 in fp32, 4e-3 to 6e-3 in bf16, 5e-4 to 7e-4 in fp16) and in line with xformers' per-dtype tables.
REL_L2_CAP = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}
GRAD_CAP_FACTOR = 3.0
FLOAT64_ATOL = 1e-10


@dataclass(frozen=True)
class Factors:
    """The rule's factors (the ``fidelity`` metric's defaults)."""

    rtol_factor: float = 2.0
    rounding_factor: float = 2.0
    grad_cap_factor: float = GRAD_CAP_FACTOR


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


def judge(out: Tensor, base: Tensor, ref: Tensor, dtype: torch.dtype, cap: float, opts: Any) -> dict[str, Any]:
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


def compare(module: torch.nn.Module, x: Tensor, train: bool, opts: Any | None = None, seed: int = 0) -> dict[str, Any]:
    """Fidelity columns (``fid_*``) of ``module`` at input ``x``, both already in the dtype under test."""
    opts = opts or Factors()
    dtype = x.dtype
    cap = REL_L2_CAP.get(dtype, REL_L2_CAP[torch.float32])
    module = module.eval()
    ref_module = copy.deepcopy(module).to(torch.float64)
    x = x.detach()
    inputs = {name: (x.double() if name == "ref" else x.clone()).requires_grad_(train) for name in ("kernel", "base", "ref")}
    with torch.set_grad_enabled(train):  # forward checks run as inference (CPU flex has no autograd)
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


