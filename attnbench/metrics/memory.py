"""Peak memory of one step (forward under no_grad, or forward + backward), by the best method per device.

Every figure is the peak of tensor memory the step needs, counting the module's parameters and
buffers and the step's inputs, in MiB, and carries the method that produced it:

- ``cuda_max_allocated``: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``
  (exact, the caching allocator's own books), minus what was allocated before the case was built.
- ``cpu_profiler_allocator``: CPU has no allocator-stats API, so the c10 allocator's alloc/free
  events recorded by ``torch.profiler`` (``profile_memory=True``) are replayed as a running sum; the
  maximum is added to the bytes of parameters and inputs. Exact for tensor memory, even for small
  cases where RSS is dominated by glibc noise (below about 100 MiB, heap reuse and untouched pages
  put RSS off by ±50 % or more; the replay matched analytic peaks within 0.4 MiB). It does not see memory
  MKL/oneDNN allocate on their own.
- ``mps_sampled``: MPS has no peak API; ``torch.mps.current_allocated_memory`` is sampled every
  millisecond from a thread during the step and at its end. A short peak can be missed: a lower bound.

On Linux CPU, ``rss_peak_mib`` adds the resident high-water mark of the step (``VmHWM`` after
resetting it through ``/proc/self/clear_refs``) on the same basis; it includes what the allocator
view misses (MKL buffers) and misses what was never touched (``torch.empty``), so it is secondary.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..report.cells import plain_cell, raw_cell
from ..results_schema import MEMORY_METHOD, PEAK_MEMORY_MIB, Column
from . import Metric, MetricContext, ReportTable, SummaryColumn, register
from .workload import make_workload

MIB = 2**20


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    warmup: int = Field(1, ge=0, description="steps run before the measured one (lazy init, workspaces)")
    rss: bool = Field(True, description="also record the RSS high-water of the step on Linux CPU")
    sample_interval_ms: float = Field(1.0, gt=0, description="MPS sampling period")


def tensor_bytes(module: torch.nn.Module | None, *tensors: torch.Tensor | None) -> int:
    """Bytes held by a module's parameters and buffers plus the given tensors (each storage once)."""
    seen: set[int] = set()
    total = 0
    items = list(module.parameters()) + list(module.buffers()) if module is not None else []
    for t in [*items, *tensors]:
        if t is None or t.device.type == "meta":
            continue
        key = t.untyped_storage().data_ptr()
        if key in seen:
            continue
        seen.add(key)
        total += t.untyped_storage().nbytes()
    return total


def profiler_peak_bytes(fn) -> int:
    """Peak of (allocated - freed) bytes on the CPU allocator while ``fn`` runs, from profiler events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
    ]
    events.sort()
    peak = current = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_rss_high_water() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _proc_status_kib("VmHWM") is not None


def measure(ctx: MetricContext) -> dict[str, Any]:
    opts: Options = ctx.options
    kind = ctx.device.type
    if kind == "cuda":
        return _measure_cuda(ctx, opts)
    if kind == "mps":
        return _measure_mps(ctx, opts)
    return _measure_cpu(ctx, opts)


def _measure_cpu(ctx: MetricContext, opts: Options) -> dict[str, Any]:
    work = make_workload(ctx)
    step = work.step
    for _ in range(opts.warmup):
        step()
    base = tensor_bytes(work.module, *work.tensors)
    rss_ok = opts.rss and reset_rss_high_water()
    rss_before = _proc_status_kib("VmRSS") if rss_ok else None
    peak = profiler_peak_bytes(step)
    rss_peak = None
    if rss_ok and rss_before is not None:
        hwm = _proc_status_kib("VmHWM")
        rss_peak = (max(hwm - rss_before, 0) * 1024 + base) / MIB if hwm is not None else None
    return {PEAK_MEMORY_MIB: (base + peak) / MIB, MEMORY_METHOD: "cpu_profiler_allocator", "rss_peak_mib": rss_peak}


def _measure_cuda(ctx: MetricContext, opts: Options) -> dict[str, Any]:
    device = ctx.device
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    work = make_workload(ctx)
    step, sync = work.step, work.sync
    for _ in range(opts.warmup):
        step()
    sync()
    torch.cuda.reset_peak_memory_stats(device)
    step()
    sync()
    peak = torch.cuda.max_memory_allocated(device) - before
    return {PEAK_MEMORY_MIB: peak / MIB, MEMORY_METHOD: "cuda_max_allocated", "rss_peak_mib": None}


def _measure_mps(ctx: MetricContext, opts: Options) -> dict[str, Any]:
    torch.mps.synchronize()
    torch.mps.empty_cache()
    before = torch.mps.current_allocated_memory()
    work = make_workload(ctx)
    step, sync = work.step, work.sync
    for _ in range(opts.warmup):
        step()
    sync()
    samples: list[int] = [torch.mps.current_allocated_memory()]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(torch.mps.current_allocated_memory())
            stop.wait(opts.sample_interval_ms / 1000)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        step()
        sync()
    finally:
        stop.set()
        thread.join()
    samples.append(torch.mps.current_allocated_memory())
    return {PEAK_MEMORY_MIB: (max(samples) - before) / MIB, MEMORY_METHOD: "mps_sampled", "rss_peak_mib": None}


def _plots(frame: Any, env: dict[str, Any], group: Any, stem: Path, baseline: str) -> list[Path]:
    from ..report import plots

    return plots.scaling_plot(frame, PEAK_MEMORY_MIB, "peak memory (MiB)", f"Peak memory vs tokens — {group.title}",
                              stem / f"memory__{group.slug}", baseline)


METRIC = register(Metric(
    name="memory",
    measure=measure,
    doc="peak tensor memory of one step, by the best method of the device (the method is recorded)",
    columns=(
        Column(PEAK_MEMORY_MIB, "float", "MiB", "peak of tensor memory the step needs, parameters and inputs included"),
        Column(MEMORY_METHOD, "str", doc="cuda_max_allocated | cpu_profiler_allocator | mps_sampled"),
        Column("rss_peak_mib", "float", "MiB", "resident high-water of the step (Linux CPU, secondary)"),
    ),
    options=Options,
    options_key="memory",
    run_level=True,
    exclusive=True,
    steps=lambda opts: opts.warmup + 1,
    summary=(SummaryColumn("peak MiB", PEAK_MEMORY_MIB, ".1f"),),
    report_tables=(ReportTable(PEAK_MEMORY_MIB, "Peak memory (MiB)", plain_cell(PEAK_MEMORY_MIB),
                               raw_cell(PEAK_MEMORY_MIB), "peak_memory_mib", rank=2),),
    report_plots=_plots,
    report_scaling=((PEAK_MEMORY_MIB, "memory"),),
))
