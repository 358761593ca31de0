"""Cost metrics: analytic MACs equal counted MACs for every mechanism, the CPU memory peak sees a
known allocation, and timing statistics come out right with an injected clock."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

HELPERS = Path(__file__).parent / "helpers"
if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))

import runner_mechanisms  # noqa: E402  (test_alloc)

import mechanisms  # noqa: E402
from attnbench.case import Case  # noqa: E402
from attnbench.metrics import MetricContext, flops, memory, params, timing  # noqa: E402

BUILTIN = [m for m in mechanisms.available() if not m.startswith("test_")]
assert len(BUILTIN) >= 6, BUILTIN


def _ctx(case: Case, options, **kw) -> MetricContext:
    return MetricContext(case=case, options=options, device=torch.device("cpu"), dtype=case.torch_dtype, **kw)


def _case(name: str, h: int = 13, w: int = 17, mode: str = "forward", **opts) -> Case:
    return Case(mechanism=name, label=name, options=tuple(sorted(opts.items())), height=h, width=w, batch_size=2,
                dim=32, num_heads=2, dtype="float32", device="cpu", mode=mode)


@pytest.mark.parametrize("name", BUILTIN)
def test_analytic_macs_equal_counted_macs(name):
    """On an odd, non-square map with batch 2: fvcore and FlopCounterMode both agree exactly."""
    row = flops.measure(_ctx(_case(name), flops.Options()))
    module = mechanisms.build(name, 32, 2).deploy()  # a forward case measures the deploy form
    assert row["macs"] == 2 * module.flops(13, 17)["total"]
    assert row["macs_fvcore"] == row["macs"], row
    assert row["macs_flop_counter"] == row["macs"], row
    assert row["macs_mismatch"] is False


def test_a_wrong_formula_is_flagged_as_mismatch_not_hidden():
    """The analytic value stays in the row; the counted ones and the flag show the disagreement."""
    row = flops.measure(_ctx(_case("test_wrong_flops", h=14, w=14), flops.Options()))
    N, C = 14 * 14, 32
    assert row["macs"] == 2 * 4 * N * C * C
    assert row["macs_fvcore"] == row["macs_flop_counter"] == 2 * (4 * N * C * C + 2 * N * N * C)
    assert row["macs_mismatch"] is True


def test_mismatch_rule_uses_the_tolerance():
    assert flops.mismatch(1000, [1019, None], 0.02) is False
    assert flops.mismatch(1000, [1021], 0.02) is True
    assert flops.mismatch(1000, [None, None], 0.02) is None


def test_params_count_trainable_and_frozen():
    row = params.measure(_ctx(_case("global"), None))
    assert row["params"] == row["params_trainable"] == 4 * 32 * 32 + 4 * 32  # qkv + proj, with biases


def test_profiler_peak_sees_a_known_allocation():
    size = 48 * 2**20

    def fn():
        a = torch.ones(size // 4)
        b = a + 1  # two live buffers at the peak
        del a
        return b.sum()

    fn()
    peak = memory.profiler_peak_bytes(fn)
    assert abs(peak - 2 * size) / (2 * size) < 0.05


@pytest.mark.parametrize("mode", ["forward", "train"])
def test_cpu_memory_peak_of_a_known_tensor_is_within_5_percent(mode):
    case = Case("test_alloc", "test_alloc", (), 4, 4, 1, 8, 2, "float32", "cpu", mode)
    row = memory.measure(_ctx(case, memory.Options()))
    assert row["memory_method"] == "cpu_profiler_allocator"
    known = runner_mechanisms.KNOWN_BYTES / 2**20
    assert abs(row["peak_memory_mib"] - known) / known < 0.05, row


class FakeClock:
    """A clock that only moves when the timed step runs: each call costs exactly ``cost`` seconds."""

    def __init__(self, cost: float) -> None:
        self.now = 0.0
        self.cost = cost
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def step(self) -> None:
        self.calls += 1
        self.now += self.cost


def test_timing_statistics_with_an_injected_clock():
    clock = FakeClock(0.004)
    m = timing.time_step(clock.step, lambda: None, threads=1, min_run_time=0.2, warmup=3, timer=clock)
    assert m.median == pytest.approx(0.004, rel=1e-9)
    assert m.iqr == pytest.approx(0.0, abs=1e-12)
    assert sum(t * m.number_per_run for t in m.times) >= 0.2 - 1e-9


def test_timing_metric_columns_and_samples():
    case = _case("axial", h=8, w=8)
    ctx = _ctx(case, timing.Options(min_run_time=0.5, warmup=1), env={"matmul_peak_gflops": {"float32": 10.0}})

    ticks = iter(range(10**9))
    # A clock that moves 1 s per read: every timed block (one call) "takes" exactly 1 s.
    row = timing.measure(ctx, timer=lambda: float(next(ticks)))
    assert row["latency_ms"] == pytest.approx(1000.0) and row["latency_iqr_ms"] == 0 and row["timing_runs"] == 1
    assert row["throughput_img_s"] == pytest.approx(2 / (row["latency_ms"] / 1e3))
    assert row["tokens_per_s"] == pytest.approx(row["throughput_img_s"] * 64)
    macs = flops.analytic_macs(ctx)["total"]
    assert row["achieved_gflops"] == pytest.approx(2 * macs / (row["latency_ms"] / 1e3) / 1e9)
    assert row["efficiency"] == pytest.approx(row["achieved_gflops"] / 10.0)
    assert len(ctx.samples["latency_ms"]) == row["timing_runs"]
    assert ctx.samples["latency_ms"] == [pytest.approx(1000.0)]


def test_real_clock_gives_positive_median():
    ctx = _ctx(_case("global", h=6, w=6, mode="train"), timing.Options(min_run_time=0.02, warmup=1))
    row = timing.measure(ctx)
    assert row["latency_ms"] > 0 and row["efficiency"] is None  # no peak given, no efficiency


def test_cpu_clock_times_cpu_time_and_is_recorded():
    ctx = _ctx(_case("axial", h=6, w=6), timing.Options(min_run_time=0.02, warmup=1, clock="cpu"))
    row = timing.measure(ctx)
    assert row["timing_clock"] == "cpu" and row["latency_ms"] > 0
    assert timing.CLOCKS["cpu"] is __import__("time").thread_time


def test_cpu_clock_rules():
    with pytest.raises(ValueError, match="threads: 1"):
        timing.Options(clock="cpu", threads=2)
    with pytest.raises(ValueError):
        timing.Options(clock="gpu")
    ctx = MetricContext(case=_case("axial", h=6, w=6), options=timing.Options(clock="cpu"),
                        device=torch.device("meta"), dtype=torch.float32)
    with pytest.raises(ValueError, match="use clock: wall"):
        timing.measure(ctx)


def test_prepared_timing_searches_now_and_times_later():
    """``prepare_step`` is ``blocked_autorange`` cut in two: warm-up and the block-size search run at
    prepare time, and the returned call only times blocks of the size found, for the whole budget."""
    clock = FakeClock(0.004)
    measure_blocks = timing.prepare_step(clock.step, lambda: None, threads=1, min_run_time=0.2, warmup=3, timer=clock)
    prepared_calls = clock.calls
    assert prepared_calls == 3 + 1  # 3 warm-up calls, then one call the search found long enough
    m = measure_blocks()
    assert clock.calls - prepared_calls == 50  # 0.2 s of 4 ms calls, one call a block: no second search
    assert m.number_per_run == 1 and len(m.times) == 50
    assert m.median == pytest.approx(0.004, rel=1e-9)
    whole = FakeClock(0.004)
    same = timing.time_step(whole.step, lambda: None, threads=1, min_run_time=0.2, warmup=3, timer=whole)
    assert whole.calls == clock.calls and same.times == m.times  # the two halves are time_step exactly


@pytest.mark.parametrize("cost,rewarm_calls", [(0.004, 13), (0.1, 0)])
def test_prepared_timing_rewarms_only_short_blocks(cost, rewarm_calls):
    """A prepared process waited while the other side was timed: when its blocks are short next to the
    budget it first runs a quarter of the budget untimed; a block that long is its own warm-up."""
    clock = FakeClock(cost)
    measure_blocks = timing.prepare_step(clock.step, lambda: None, threads=1, min_run_time=0.2, warmup=0,
                                         timer=clock, rewarm=True)
    prepared = clock.calls
    m = measure_blocks()
    timed = round(0.2 / cost) if cost < 0.2 else 1
    assert clock.calls - prepared == rewarm_calls + timed
    assert len(m.times) == timed and m.median == pytest.approx(cost, rel=1e-9)
