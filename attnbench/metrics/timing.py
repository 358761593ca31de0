"""Latency and throughput of one step, with ``torch.utils.benchmark.Timer.blocked_autorange``.

Why this way: ``blocked_autorange`` sizes blocks so the timer's own overhead is negligible and
returns every block, so median and IQR (robust to the bursts of a shared machine) come with the raw
samples. On top of it: explicit warm-up calls (lazy init, allocator growth, oneDNN primitive
caches), a device sync *inside* the timed statement on CUDA and MPS (the default timer does not
sync MPS), and an explicit thread count that is recorded in the row (on a busy 2-core box two
threads can be 5x slower than one).

Columns: ``latency_ms`` (median per call), ``latency_iqr_ms``, ``latency_mean_ms``, ``timing_runs``
(blocks), ``throughput_img_s``, ``tokens_per_s``, ``achieved_gflops`` = 2 x forward MACs x (3 when
training) / latency, and ``efficiency`` = achieved / the matmul peak measured for this run and dtype.
Raw per-call times of every block go to samples.jsonl as ``latency_ms``.

``clock: cpu`` (CPU only, one thread) times with the calling thread's CPU time instead of the wall
clock. On a shared machine the wall clock also counts the time the OS gave the core to someone else;
CPU time does not, so drift from an oversubscribed core shrinks (measured here: CV 26% -> 11% over 8
repeats with more runnable processes than cores; no gain on a dedicated core). It still sees cache
and memory-bandwidth contention and VM drift, and it is not a latency a user would
wait: use it for regression tracking on shared CPU runners, ``wall`` (the default) for tables.
The clock is recorded in every row (``timing_clock``) and ``compare`` refuses to mix clocks.
"""
from __future__ import annotations

import time
import timeit
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from . import MetricContext
from .workload import make_workload, step_macs_factor

NAME = "time"
OPTIONS_KEY = "timing"
EXCLUSIVE = True


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_run_time: float = Field(1.0, gt=0, description="seconds of measured blocks (blocked_autorange); with rounds, "
                                "the case's total, split evenly over its rounds")
    rounds: int = Field(1, ge=1, description="time every case in this many rounds interleaved across cases; the row "
                        "keeps the median of round medians and their spread (attnbench/rounds.py)")
    threads: int = Field(1, ge=1, description="intra-op threads while timing (recorded in every row)")
    warmup: int = Field(1, ge=0, description="untimed calls before measuring")
    clock: Literal["wall", "cpu"] = Field(
        "wall", description="wall: elapsed time; cpu: the timing thread's CPU time (CPU device, threads: 1 only)"
    )

    @model_validator(mode="after")
    def _cpu_clock_needs_one_thread(self) -> "Options":
        if self.clock == "cpu" and self.threads != 1:
            raise ValueError("clock 'cpu' counts one thread's CPU time, so it needs threads: 1 (or use clock: wall)")
        return self


CLOCKS: dict[str, Callable[[], float]] = {"wall": timeit.default_timer, "cpu": time.thread_time}


def time_step(step: Callable[[], None], sync: Callable[[], None], *, threads: int, min_run_time: float,
              warmup: int, timer: Callable[[], float] = timeit.default_timer) -> Any:
    """Warm up, then ``blocked_autorange``; returns the torch ``Measurement`` (per-call times, seconds).

    ``timer`` is the clock, injectable so tests check the statistics without a wall clock.
    """
    from torch.utils.benchmark import Timer

    for _ in range(warmup):
        step()
    sync()
    t = Timer(stmt="step(); sync()", globals={"step": step, "sync": sync}, num_threads=threads, timer=timer)
    return t.blocked_autorange(min_run_time=min_run_time)


def summarize(ctx: MetricContext, measurement: Any, forward_macs: int | None) -> dict[str, Any]:
    """Row columns from a Measurement; raw per-call times (ms) go to the context's samples."""
    case = ctx.case
    times = [float(t) for t in measurement.times]
    ctx.add_samples("latency_ms", [t * 1e3 for t in times])
    median = float(measurement.median)
    row: dict[str, Any] = {
        "latency_ms": median * 1e3,
        "latency_iqr_ms": float(measurement.iqr) * 1e3,
        "latency_mean_ms": float(measurement.mean) * 1e3,
        "timing_runs": len(times),
        "throughput_img_s": case.batch_size / median,
        "tokens_per_s": case.batch_size * case.tokens / median,
        "achieved_gflops": None,
        "efficiency": None,
    }
    if forward_macs:
        achieved = 2 * forward_macs * step_macs_factor(case.mode) / median / 1e9
        row["achieved_gflops"] = achieved
        peak = (ctx.env.get("matmul_peak_gflops") or {}).get(case.dtype)
        row["efficiency"] = achieved / peak if peak else None
    return row


def measure(ctx: MetricContext, timer: Callable[[], float] | None = None) -> dict[str, Any]:
    from .flops import analytic_macs

    opts: Options = ctx.options
    if opts.clock == "cpu" and ctx.device.type != "cpu":
        raise ValueError(
            f"timing.clock 'cpu' measures host CPU time and cannot time {ctx.device.type} kernels; use clock: wall"
        )
    work = make_workload(ctx)
    m = time_step(work.step, work.sync, threads=opts.threads, min_run_time=opts.min_run_time,
                  warmup=opts.warmup, timer=timer or CLOCKS[opts.clock])
    return {**summarize(ctx, m, analytic_macs(ctx)["total"]), "timing_clock": opts.clock}
