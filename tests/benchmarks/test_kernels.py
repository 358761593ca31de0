"""Kernel benchmarks (pytest-benchmark): forward and train step of every mechanism at the shapes of
``suites/kernels.yaml`` (the four Swin-T stage configurations), read from that file so the two never drift.

The step is the harness's own (``attnbench.metrics.workload``), so these numbers describe the same
work as ``attnbench run``, in the same form (deploy for forward, training for train); the device is
synchronised inside the timed call (pytest-benchmark's clock does not). MACs, params and peak memory
go to ``extra_info`` before timing (they cannot be added afterwards, pytest-benchmark#256).

By default the batch-1 float32 cases run (every stage, mechanism and mode); ``ATTNBENCH_BENCH_FULL=1``
adds batch 8 and bfloat16, the suite's whole grid.
CI runs ``pytest tests/benchmarks --benchmark-disable``: each body runs once, checking that every
mechanism builds, steps and reports sane metrics, without timing anything.
Timing: ``pytest tests/benchmarks --benchmark-autosave`` then ``--benchmark-compare --benchmark-compare-fail=median:10%``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from attnbench.case import Case
from attnbench.metrics import MetricContext, memory, params
from attnbench.metrics.flops import analytic_macs
from attnbench.metrics.workload import make_workload, step_macs_factor
from attnbench.suite import load_suite

from bench_env import bench_device, machine_info

SUITE = Path(__file__).resolve().parents[2] / "suites" / "kernels.yaml"
FULL = os.environ.get("ATTNBENCH_BENCH_FULL") == "1"


def kernel_cases() -> list[Case]:
    """The cases of suites/kernels.yaml on the bench device (batch 1, float32 unless FULL)."""
    cases = load_suite(SUITE).expand([bench_device()])
    return [c for c in cases if FULL or (c.batch_size == 1 and c.dtype == "float32")]


CASES = kernel_cases()


def _context(case: Case) -> MetricContext:
    return MetricContext(case=case, options=memory.Options(rss=False), device=torch.device(case.device),
                         dtype=case.torch_dtype, threads=torch.get_num_threads())


@pytest.mark.parametrize("case", CASES, ids=[f"{c.label}-{c.height}x{c.width}-c{c.dim}-b{c.batch_size}-{c.dtype}-{c.mode}"
                                              for c in CASES])
def test_kernel(benchmark, case):
    ctx = _context(case)
    mode = case.mode
    macs = analytic_macs(ctx)["total"]
    counts = params.measure(ctx)
    peak = memory.measure(ctx)
    assert macs > 0 and counts["params"] > 0
    assert math.isfinite(peak["peak_memory_mib"]) and peak["peak_memory_mib"] > 0
    benchmark.group = f"{case.height}x{case.width} c{case.dim} b{case.batch_size} {case.dtype} {mode}"
    benchmark.extra_info.update({
        "macs": macs, "step_macs": macs * step_macs_factor(mode), "params": counts["params"],
        "peak_memory_mib": peak["peak_memory_mib"], "memory_method": peak["memory_method"],
        "tokens": case.tokens, "dim": case.dim, "num_heads": case.num_heads, "batch_size": case.batch_size,
        "dtype": case.dtype, "form": case.resolved_form, "device": case.device,
    })
    work = make_workload(ctx)

    def step() -> None:
        work.step()
        work.sync()  # inside the timed call: asynchronous devices are timed to completion

    benchmark(step)
    if mode == "train":
        grads = [p.grad for p in work.module.parameters() if p.requires_grad]
        assert any(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_machine_info_names_torch_device_and_threads(request):
    info: dict = {"cpu": "kept"}
    request.config.hook.pytest_benchmark_update_machine_info(config=request.config, machine_info=info)
    assert info["cpu"] == "kept" and info == {**info, **machine_info()}
    assert info["torch"] == torch.__version__
    assert info["threads"] == torch.get_num_threads()
    assert info["device"] == bench_device() and info["device_name"]


def test_kernel_suite_covers_every_mechanism_at_every_stage():
    import mechanisms

    builtin = {m for m in mechanisms.available() if not m.startswith("test_")}
    assert {c.mechanism for c in CASES} == builtin
    stages = {(c.height, c.dim, c.num_heads) for c in CASES}
    assert stages == {(56, 96, 3), (28, 192, 6), (14, 384, 12), (7, 768, 24)}
    stage1 = {c.mechanism for c in CASES if c.height == 56}
    assert stage1 == builtin - {"cswin", "axial", "pale"}  # 3 heads cannot split into two halves
