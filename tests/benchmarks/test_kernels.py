"""Kernel benchmarks (pytest-benchmark): forward and train step of every mechanism at one fixed size.

The step is the harness's own (``attnbench.metrics.workload``), so these numbers describe the same
work as ``attnbench run``; the device is synchronised inside the timed call (pytest-benchmark's
clock does not). MACs, params and peak memory go to ``extra_info`` before timing (they cannot be
added afterwards, pytest-benchmark#256).

CI runs ``pytest tests/benchmarks --benchmark-disable``: each body runs once, checking that every
mechanism builds, steps and reports sane metrics, without timing anything.
Timing: ``pytest tests/benchmarks --benchmark-autosave`` then ``--benchmark-compare --benchmark-compare-fail=median:10%``.
"""
from __future__ import annotations

import math

import pytest
import torch

import mechanisms
from attnbench.case import Case
from attnbench.metrics import MetricContext, memory, params
from attnbench.metrics.flops import analytic_macs
from attnbench.metrics.workload import make_workload, step_macs_factor

from bench_env import bench_device, machine_info

SIDE, DIM, HEADS = 28, 64, 2  # 784 tokens: a multiple of every default window, stripe and pale size
MECHANISMS = mechanisms.available()


def _context(name: str, mode: str) -> MetricContext:
    device = bench_device()
    case = Case(mechanism=name, label=name, options=(), height=SIDE, width=SIDE, batch_size=1, dim=DIM,
                num_heads=HEADS, dtype="float32", device=device, mode=mode)
    return MetricContext(case=case, options=memory.Options(rss=False), device=torch.device(device),
                         dtype=torch.float32, threads=torch.get_num_threads())


@pytest.mark.parametrize("mode", ["forward", "train"])
@pytest.mark.parametrize("name", MECHANISMS)
def test_kernel(benchmark, name, mode):
    ctx = _context(name, mode)
    macs = analytic_macs(ctx)["total"]
    counts = params.measure(ctx)
    peak = memory.measure(ctx)
    assert macs > 0 and counts["params"] > 0
    assert math.isfinite(peak["peak_memory_mib"]) and peak["peak_memory_mib"] > 0
    benchmark.group = mode
    benchmark.extra_info.update({
        "macs": macs, "step_macs": macs * step_macs_factor(mode), "params": counts["params"],
        "peak_memory_mib": peak["peak_memory_mib"], "memory_method": peak["memory_method"],
        "tokens": SIDE * SIDE, "dim": DIM, "num_heads": HEADS, "device": ctx.case.device,
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
