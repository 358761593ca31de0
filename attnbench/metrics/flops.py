"""FLOPs: the mechanism's analytic MACs, cross-checked by fvcore and FlopCounterMode.

Why three numbers: the analytic formula (``mechanism.flops(H, W)``, MACs like the papers) is the
truth; counters catch a formula that drifted from the code, but each has blind spots (fvcore skips
SDPA unless taught, FlopCounterMode misses the CPU flash kernel, both count a masked kernel as
dense). So the row keeps all three, and ``macs_mismatch`` is set when a counted value differs from
the analytic one by more than ``tolerance`` -- reported, never hidden or "fixed".

Counting runs on the ``meta`` device by default: shapes only, no memory and no compute, so a 224²
global attention (tens of GB of logits) is counted in a second. If a mechanism cannot run on meta
(data-dependent code), counting falls back to the case's device. For ``mode: train`` the MAC
columns are still the forward's (the convention of the tables); a step costs about 3x.
"""
from __future__ import annotations

import json
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..case import Case
from ..cost import case_cost
from ..results_schema import MACS, MACS_ATTENTION, MACS_MISMATCH, Column
from . import Metric, MetricContext, ReportTable, SummaryColumn, register
from .flop_counting import flop_counter_macs, fvcore_macs
from ..report.cells import plain_cell, raw_cell


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fvcore: bool = Field(True, description="cross-check with fvcore (SDPA handle registered)")
    flop_counter: bool = Field(True, description="cross-check with torch.utils.flop_counter (CPU flash op mapped)")
    tolerance: float = Field(0.02, ge=0, description="relative difference above which macs_mismatch is set")
    count_on: Literal["meta", "device"] = Field("meta", description="count on shape-only meta tensors, or run for real")


def analytic_macs(ctx: MetricContext) -> dict[str, int]:
    """Analytic MACs of one forward for the case's batch: ``total`` and the ``attention`` (non-linear) part."""
    cost = case_cost(ctx.case)
    return {"total": cost.macs, "attention": cost.macs_attention}


def static_columns(case: Case) -> dict[str, int]:
    cost = case_cost(case)
    return {MACS: cost.macs, MACS_ATTENTION: cost.macs_attention}


def _inputs(ctx: MetricContext, where: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """Module and input for counting. Counts do not depend on the dtype, so a real-device count uses
    float32 (bfloat16 kernels are far slower on CPUs without native bf16)."""
    device = "meta" if where == "meta" else ctx.device
    dtype = torch.float32 if where != "meta" and ctx.dtype in (torch.bfloat16, torch.float16) else ctx.dtype
    return ctx.case.build_module(device=device, dtype=dtype).eval(), ctx.case.make_input(device=device, dtype=dtype)


def _count(ctx: MetricContext, counter, notes: list[str]) -> Any:
    """Run one counter on meta tensors when asked, falling back to the real device when a mechanism
    has an op without a meta path there (fvcore's jit trace of a conv on meta fails, for example)."""
    if ctx.options.count_on == "meta":
        try:
            return counter(*_inputs(ctx, "meta"))
        except Exception as exc:  # any meta-path failure: the real device gives the same count
            notes.append(f"{counter.__name__} counted on {ctx.device} (meta: {type(exc).__name__})")
    return counter(*_inputs(ctx, "device"))


def _compiled_backend(case: Any) -> str | None:
    """The case's backend when its mechanism compiles it (``compiled_backends``: flex), else None."""
    import mechanisms

    backend, name = getattr(case, "backend", None), getattr(case, "mechanism", None)
    if not backend or not name or name not in mechanisms.available():
        return None
    return backend if backend in getattr(mechanisms.get(name), "compiled_backends", ()) else None


def mismatch(analytic: int, counted: list[int | None], tolerance: float) -> bool | None:
    """True when any counted value is off the analytic one by more than ``tolerance`` (relative)."""
    values = [c for c in counted if c is not None]
    if not values:
        return None
    return any(abs(c - analytic) > tolerance * max(abs(analytic), 1) for c in values)


def measure(ctx: MetricContext) -> dict[str, Any]:
    opts: Options = ctx.options
    analytic = analytic_macs(ctx)
    row: dict[str, Any] = {MACS: analytic["total"], MACS_ATTENTION: analytic["attention"]}
    notes: list[str] = []
    fv = fc = unsupported = None
    compiled = _compiled_backend(ctx.case)
    if compiled:  # fvcore's jit trace and FlopCounterMode's dispatch do not see inside a compiled kernel
        notes.append(f"counters skipped: the {compiled} backend runs a torch.compile'd kernel that neither "
                     "fvcore nor FlopCounterMode can trace; analytic MACs only")
    if opts.fvcore and not compiled:
        fv, _, unsupported = _count(ctx, fvcore_macs, notes)
    if opts.flop_counter and not compiled:
        fc, _ = _count(ctx, flop_counter_macs, notes)
    row["macs_fvcore"] = fv
    row["macs_flop_counter"] = fc
    row[MACS_MISMATCH] = mismatch(analytic["total"], [fv, fc], opts.tolerance)
    row["flops_unsupported_ops"] = json.dumps(dict(sorted(unsupported.items()))) if unsupported is not None else None
    if notes:
        row["flops_note"] = "; ".join(notes)
    return row


def _gmacs_cell(row: Any) -> str:
    from ..results_schema import is_missing, stored_bool

    v = row.get(MACS)
    if is_missing(v):
        return ""
    return f"{float(v) / 1e9:.3g}" + (" [red]≠[/red]" if stored_bool(row.get(MACS_MISMATCH)) else "")


def _mismatch_lines(results: Any) -> list[str]:
    from ..results_schema import is_missing, stored_bool

    if MACS_MISMATCH not in results:
        return []
    bad = results[[stored_bool(v) is True for v in results[MACS_MISMATCH]]]
    if not len(bad):
        return []

    def num(v: Any) -> str:
        return "" if is_missing(v) else format(float(v), ".4g")

    lines = [f"[red]MACs mismatch > tolerance (analytic vs fvcore / FlopCounterMode) in {len(bad)} case(s):[/red]"]
    for _, r in bad.iterrows():
        lines.append(f"  {r['label']} {int(r['height'])}x{int(r['width'])}: analytic {r[MACS]:.4g}, "
                     f"fvcore {num(r.get('macs_fvcore'))}, flop_counter {num(r.get('macs_flop_counter'))}")
    return lines


def _report_section(run: Any, out_dir: Any) -> str | None:
    from ..report import tables

    mism = tables.mac_disagreements(run.results)
    if mism.empty:
        return None
    return "\n".join(["## FLOP counter disagreements (counted MACs differ from the analytic formula by > 2 %)", "",
                      mism.to_markdown(index=False), ""])


METRIC = register(Metric(
    name="flops",
    measure=measure,
    doc="analytic MACs of one forward (the truth), cross-checked by fvcore and FlopCounterMode",
    columns=(
        Column(MACS, "int", "MACs", "analytic multiply-accumulates of one forward at the case's batch"),
        Column(MACS_ATTENTION, "int", "MACs", "the attention part (all but the qkv/proj linears)"),
        Column("macs_fvcore", "int", "MACs", "fvcore's count (SDPA handle registered)"),
        Column("macs_flop_counter", "int", "MACs", "torch.utils.flop_counter's count"),
        Column(MACS_MISMATCH, "bool", doc="a counted value differs from the analytic one by more than the tolerance"),
        Column("flops_unsupported_ops", "json", doc="ops fvcore skipped, with counts"),
        Column("flops_note", "str", doc="where counting fell back to the real device"),
    ),
    options=Options,
    options_key="flops",
    runs_module=False,
    static=static_columns,
    summary=(SummaryColumn("GMACs", MACS, render=_gmacs_cell),),
    summary_notes=_mismatch_lines,
    report_tables=(ReportTable(MACS, "MACs (G)", plain_cell(MACS, 1e-9), raw_cell(MACS, 1e-9), "gmacs", rank=3),),
    report_section=_report_section,
))
