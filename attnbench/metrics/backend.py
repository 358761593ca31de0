"""Backend gate: prove the case's backend equals the float64 reference before anything is timed.

Why a metric of its own: a fast kernel that computes something else is worse than a slow one, so a
backends suite lists ``backend`` first; the runner stops a case at its first failing metric, and a
backend that disagrees becomes an ``error`` row saying by how much (the fidelity rule, see
``attnbench/fidelity_rule.py``). Forward rows check the output, train rows the input gradient too.

The dense float64 reference is O(N²) per head, so above ``max_check_tokens`` the check runs at the
case's size scaled down to that many tokens (same mechanism, options, backend, dtype and mode; the
row says which size in ``check_size``). The compiled kernel is then called once at the case's own
size, so ``compile_s`` is the first-call (compile) time of the kernel that is timed.

Columns: ``check_size``, ``backend_rel_l2``, ``backend_grad_rel_l2``, ``torch_version``,
``compile_mode`` (``eager`` or flex's torch.compile call), and for flex ``flex_block_sparsity`` (the
fraction of query-block x key-block tiles skipped) and ``compile_s``.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..fidelity_rule import Factors, compare
from ..results_schema import Column
from . import Metric, MetricContext, register


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    check: bool = Field(True, description="judge the backend against the float64 reference first (error row if it disagrees)")
    max_check_tokens: int = Field(4096, ge=1, description="above this many tokens the check runs at a scaled-down size")


class BackendDisagrees(RuntimeError):
    """The backend's output (or gradient) is not the mechanism's definition."""


def check_size(H: int, W: int, max_tokens: int) -> tuple[int, int]:
    """(H, W) itself, or scaled down (aspect kept) to at most ``max_tokens`` tokens."""
    if H * W <= max_tokens:
        return H, W
    s = math.sqrt(max_tokens / (H * W))
    return max(1, int(H * s)), max(1, int(W * s))


def measure(ctx: MetricContext) -> dict[str, Any]:
    import mechanisms
    from mechanisms.flex import COMPILE_MODE, flex_stats

    opts: Options = ctx.options
    case = ctx.case
    train = case.mode == "train"
    compiled = case.backend in getattr(mechanisms.get(case.mechanism), "compiled_backends", ())
    cols: dict[str, Any] = {"torch_version": torch.__version__, "compile_mode": COMPILE_MODE if compiled else "eager"}
    if opts.check:
        h, w = check_size(case.height, case.width, opts.max_check_tokens)
        module = ctx.build_module()
        gen = torch.Generator().manual_seed(case.seed + 1)
        x = torch.randn(case.batch_size, h, w, case.dim, generator=gen).to(ctx.device, ctx.dtype)
        row = compare(module, x, train, Factors(), seed=case.seed)
        cols.update(check_size=f"{h}x{w}", backend_rel_l2=row["fid_rel_l2"], backend_grad_rel_l2=row.get("fid_grad_rel_l2"))
        if not row["fid_pass"]:
            raise BackendDisagrees(f"{case.backend} disagrees with the float64 reference at {h}x{w}: "
                                   f"{row.get('fid_reason') or 'see fidelity columns'}")
    if compiled:
        module = ctx.build_module().eval()
        with torch.no_grad():
            module(ctx.make_input())  # the case's own size: compile (timed once per process) and layout
        stats = flex_stats(module)
        cols.update(flex_block_sparsity=stats.get("flex_block_sparsity"), compile_s=stats.get("compile_s"),
                    flex_block_size=stats.get("flex_block_size"))
    return cols


def _section(run: Any, out_dir: Any) -> str | None:
    from ..report.backends_section import render

    return render(run.results)


METRIC = register(Metric(
    name="backend",
    measure=measure,
    doc="the case's backend judged against the float64 reference before timing (error row when it disagrees); "
        "torch version, compile mode, flex block sparsity and compile time",
    columns=(
        Column("check_size", "str", doc="HxW the reference check ran at (the case's, or scaled down)"),
        Column("backend_rel_l2", "float", doc="relative L2 error of the output against the float64 reference"),
        Column("backend_grad_rel_l2", "float", doc="the same for the input gradient (train)"),
        Column("torch_version", "str"),
        Column("compile_mode", "str", doc="eager, or how a compiled backend was compiled"),
        Column("flex_block_sparsity", "float", doc="fraction of (query block, key block) tiles flex skips"),
        Column("flex_block_size", "int", "tokens"),
        Column("compile_s", "float", "s", "first call of the compiled kernel at the case's size, compile included"),
    ),
    options=Options,
    options_key="backend",
    steps=lambda opts: 2 if opts.check else 1,
    report_section=_section,
))
