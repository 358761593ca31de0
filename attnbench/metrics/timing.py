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

import math
import time
import timeit
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..report.cells import plain_cell, raw_cell, with_spread_cell
from ..results_schema import LATENCY_IQR_MS, LATENCY_MS, TIMING_CLOCK, Column
from . import Metric, MetricContext, ReportTable, SummaryColumn, register
from .workload import make_workload, step_macs_factor


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
REWARM_FRACTION = 0.25  # of the budget, run untimed before a prepared measurement (``prepare_step``)


def prepare_step(step: Callable[[], None], sync: Callable[[], None], *, threads: int, min_run_time: float,
                 warmup: int, timer: Callable[[], float] = timeit.default_timer,
                 rewarm: bool = False) -> Callable[[], Any]:
    """Warm up and size the blocks now; the returned call times the blocks later.

    Why two halves: ``attnbench ab`` prepares both sides' workers at once (nothing is timed then) and
    times them one after the other, so one side's untimed warm-up (in a fresh process the first call
    of a case costs up to 5x a steady one) no longer waits for the other's. The halves are exactly
    ``blocked_autorange``: its block-size search (``_estimate_block_size``, which torch also calls
    a warm-up) runs here, and the returned call runs ``blocked_autorange`` with that size pinned, so
    the measuring loop is torch's own.

    ``rewarm``: a prepared process waits, idle, while the other side is timed, and its caches go cold.
    When a block is short next to the budget, the returned call first runs untimed blocks for a
    quarter of the budget (REWARM_FRACTION); a block that long or longer is its own warm-up.
    """
    from torch.utils.benchmark import Timer

    for _ in range(warmup):
        step()
    sync()
    t = Timer(stmt="step(); sync()", globals={"step": step, "sync": sync}, num_threads=threads, timer=timer)
    trials: list[float] = []
    timeit_once = t._timeit
    t._timeit = lambda number: trials.append(timeit_once(number)) or trials[-1]  # the search's block times
    number = t._estimate_block_size(min_run_time)
    del t._timeit
    t._estimate_block_size = lambda _min_run_time: number  # the search is done: keep its answer
    block_s = trials[-1] if trials else math.inf

    def measure_blocks() -> Any:
        if rewarm and block_s < REWARM_FRACTION * min_run_time:
            spent = 0.0
            while spent < REWARM_FRACTION * min_run_time:
                spent += timeit_once(number)
        return t.blocked_autorange(min_run_time=min_run_time)

    return measure_blocks


def time_step(step: Callable[[], None], sync: Callable[[], None], *, threads: int, min_run_time: float,
              warmup: int, timer: Callable[[], float] = timeit.default_timer) -> Any:
    """Warm up, then ``blocked_autorange``; returns the torch ``Measurement`` (per-call times, seconds).

    ``timer`` is the clock, injectable so tests check the statistics without a wall clock.
    """
    return prepare_step(step, sync, threads=threads, min_run_time=min_run_time, warmup=warmup, timer=timer)()


def summarize(ctx: MetricContext, measurement: Any, forward_macs: int | None) -> dict[str, Any]:
    """Row columns from a Measurement; raw per-call times (ms) go to the context's samples."""
    case = ctx.case
    times = [float(t) for t in measurement.times]
    ctx.add_samples("latency_ms", [t * 1e3 for t in times])
    median = float(measurement.median)
    row: dict[str, Any] = {
        LATENCY_MS: median * 1e3,
        LATENCY_IQR_MS: float(measurement.iqr) * 1e3,
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


def prepare(ctx: MetricContext, timer: Callable[[], float] | None = None,
            rewarm: bool = True) -> Callable[[], dict[str, Any]]:
    """Build, warm up and size the blocks now; the returned call measures and returns the columns
    (after re-warming caches that went cold while it waited, see ``prepare_step``)."""
    from .flops import analytic_macs

    opts: Options = ctx.options
    if opts.clock == "cpu" and ctx.device.type != "cpu":
        raise ValueError(
            f"timing.clock 'cpu' measures host CPU time and cannot time {ctx.device.type} kernels; use clock: wall"
        )
    work = make_workload(ctx)
    measure_blocks = prepare_step(work.step, work.sync, threads=opts.threads, min_run_time=opts.min_run_time,
                                  warmup=opts.warmup, timer=timer or CLOCKS[opts.clock], rewarm=rewarm)
    macs = analytic_macs(ctx)["total"]

    def timed() -> dict[str, Any]:
        return {**summarize(ctx, measure_blocks(), macs), TIMING_CLOCK: opts.clock}

    return timed


def measure(ctx: MetricContext, timer: Callable[[], float] | None = None) -> dict[str, Any]:
    return prepare(ctx, timer, rewarm=False)()  # measured right after the search: nothing went cold


def _plots(frame: Any, env: dict[str, Any], group: Any, stem: Any, baseline: str) -> list[Any]:
    from ..report import plots

    out = plots.scaling_plot(frame, LATENCY_MS, "latency (ms, median; bars: ±½ IQR)", f"Latency vs tokens — {group.title}",
                             stem / f"latency__{group.slug}", baseline, err_column=LATENCY_IQR_MS)
    peaks = env.get("matmul_peak_gflops") or {}
    try:
        peak = float(peaks.get(str(group.get("dtype")))) if isinstance(peaks, dict) else None
    except (TypeError, ValueError):
        peak = None
    from ..report.tables import has_metric

    if has_metric(frame, "achieved_gflops"):
        out += plots.gflops_plot(frame, peak, f"Achieved GFLOP/s — {group.title}", stem / f"gflops__{group.slug}")
    return out


METRIC = register(Metric(
    name="time",
    measure=measure,
    prepare=prepare,
    doc="latency and throughput of one step with torch.utils.benchmark (median, IQR, raw samples kept)",
    columns=(
        Column(LATENCY_MS, "float", "ms", "median time of one step"),
        Column(LATENCY_IQR_MS, "float", "ms", "interquartile range of the per-call times"),
        Column("latency_mean_ms", "float", "ms"),
        Column("timing_runs", "int", doc="measured blocks"),
        Column("throughput_img_s", "float", "images/s"),
        Column("tokens_per_s", "float", "tokens/s"),
        Column("achieved_gflops", "float", "GFLOP/s", "2 x forward MACs (x3 in train) / latency"),
        Column("efficiency", "float", "fraction", "achieved / the matmul peak measured for this run and dtype"),
        Column(TIMING_CLOCK, "str", doc="wall | cpu"),
        Column("timing_rounds", "int", doc="rounds the case was timed in (timing.rounds; attnbench ab's rounds)"),
        Column("latency_round_cv", "float", "fraction", "robust sd of the log round medians (between-round spread)"),
    ),
    options=Options,
    options_key="timing",
    run_level=True,
    exclusive=True,
    steps=lambda opts: opts.warmup + 2,  # warm-up, block-size estimate, one block
    seconds=lambda opts: float(opts.min_run_time),
    threads=lambda opts: int(opts.threads),
    summary=(SummaryColumn("ms", LATENCY_MS, ".3g"), SummaryColumn("±IQR", LATENCY_IQR_MS, ".2g"),
             SummaryColumn("img/s", "throughput_img_s", ".3g"), SummaryColumn("GFLOP/s", "achieved_gflops", ".3g"),
             SummaryColumn("eff", "efficiency", ".0%")),
    report_tables=(
        ReportTable(LATENCY_MS, "Latency (ms, median ± IQR)", with_spread_cell(LATENCY_MS, LATENCY_IQR_MS),
                    raw_cell(LATENCY_MS), "latency_ms", rank=0),
        ReportTable("throughput_img_s", "Throughput (images/s)", plain_cell("throughput_img_s"),
                    raw_cell("throughput_img_s"), "throughput_img_s", rank=1),
    ),
    report_plots=_plots,
    report_scaling=((LATENCY_MS, "latency"),),
))
