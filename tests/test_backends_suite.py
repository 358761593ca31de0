"""suites/backends.yaml, the backend gate metric and the report's backends section."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

import mechanisms
from attnbench.case import Case
from attnbench.metrics.backend import check_size
from attnbench.report.backends_section import render
from attnbench.runner import unsupported_reason
from attnbench.suite import load_suite
from attnbench.worker import Job, run_job
from mechanisms.axial import AxialAttention


def test_backends_suite_lists_every_mechanism_with_every_backend(repo_root):
    suite = load_suite(repo_root / "suites" / "backends.yaml")
    cases = suite.expand(["cpu"])
    have = {(c.mechanism, c.backend) for c in cases}
    builtin = [n for n in mechanisms.available() if mechanisms.get(n).__module__.startswith("mechanisms.")]
    want = {(name, b) for name in builtin for b in mechanisms.get(name).backends}  # not other tests' test-only ones
    assert want <= have
    assert {(c.height, c.dtype, c.mode) for c in cases} == {(s, d, m) for s in (56, 112, 224)
                                                           for d in ("float32", "bfloat16") for m in ("forward", "train")}
    assert suite.metrics[0] == "backend"  # checked before anything is timed


def _case(backend: str, mode: str = "forward", mechanism: str = "axial", **opts) -> Case:
    options = tuple(sorted({"backend": backend, **opts}.items()))
    return Case(mechanism, mechanism, options, 13, 17, 2, 16, 4, "float32", "cpu", mode)


def test_runner_asks_the_mechanism_why_a_backend_cannot_run():
    assert "does not support backward on CPU" in unsupported_reason(_case("flex", "train"))
    assert unsupported_reason(_case("flex")) is None
    assert "deformed" in unsupported_reason(_case("flex", mechanism="slide"))
    assert "CUDA only" in unsupported_reason(_case("xformers", mechanism="global"))


class _Scaled(AxialAttention):
    """Test-only, deliberately wrong: the native output scaled by 1.01."""

    def _forward_native(self, x):
        return super()._forward_native(x) * 1.01


def test_a_disagreeing_backend_becomes_an_error_row_saying_by_how_much():
    mechanisms.register("backend_gate_wrong")(_Scaled)
    try:
        case = _case("native", mechanism="backend_gate_wrong")
        out = run_job(Job(case=case.to_dict(), metrics=["backend", "time"], options={}), threads=1)
    finally:
        mechanisms.unregister("backend_gate_wrong")
    assert out["status"] == "error"
    assert out["error"].startswith("backend: BackendDisagrees: native disagrees with the float64 reference at 13x17:")
    assert "rel_l2" in out["error"] and "latency_ms" not in out["columns"]  # never timed


def test_a_correct_backend_passes_the_gate_with_its_columns():
    out = run_job(Job(case=_case("masked").to_dict(), metrics=["backend"], options={}), threads=1)
    assert out["status"] == "ok", out["error"]
    cols = out["columns"]
    assert cols["check_size"] == "13x17" and cols["backend_rel_l2"] <= 1e-5
    assert cols["torch_version"] == torch.__version__ and cols["compile_mode"] == "eager"


@pytest.mark.slow
def test_flex_rows_carry_block_sparsity_and_compile_time():
    out = run_job(Job(case=_case("flex").to_dict(), metrics=["backend"], options={}), threads=1)
    assert out["status"] == "ok", out["error"]
    cols = out["columns"]
    assert cols["compile_mode"].startswith("torch.compile(flex_attention")
    assert cols["compile_s"] > 0 and 0.9 < cols["flex_block_sparsity"] < 1


@pytest.mark.slow
def test_flex_rows_run_every_metric_of_the_suite_with_analytic_macs_only():
    """The backends suite's metrics on a flex case: fvcore's trace and FlopCounterMode cannot see
    inside a compiled kernel, so the flops metric keeps the analytic MACs, says why, and does not
    turn the row into an error (it once did, for every flex row of the suite)."""
    opts = {"time": {"min_run_time": 0.01, "warmup": 0}, "memory": {"warmup": 0}}
    out = run_job(Job(case=_case("flex").to_dict(), metrics=["backend", "flops", "params", "memory", "time"],
                      options=opts), threads=1)
    assert out["status"] == "ok", out["error"]
    cols = out["columns"]
    assert cols["macs"] == _case("flex").build_module().flops(13, 17)["total"] * 2
    assert cols["macs_fvcore"] is None and cols["macs_flop_counter"] is None and cols["macs_mismatch"] is None
    assert "torch.compile" in cols["flops_note"] and cols["latency_ms"] > 0


def test_check_size_keeps_small_maps_and_scales_large_ones():
    assert check_size(56, 56, 4096) == (56, 56)
    assert check_size(224, 224, 4096) == (64, 64)
    h, w = check_size(112, 224, 4096)
    assert h * w <= 4096 and w == 2 * h


def _row(mech, backend, size, status="ok", ms=None, mib=None, **extra):
    return {"mechanism": mech, "backend": backend, "options": json.dumps({"backend": backend}), "height": size,
            "width": size, "device": "cpu", "dtype": "float32", "mode": "forward", "status": status,
            "latency_ms": ms, "peak_memory_mib": mib, "compile_mode": "eager" if status == "ok" else None, **extra}


def test_backends_section_gives_speedup_over_masked_memory_and_compile_time():
    res = pd.DataFrame([
        _row("swin", "masked", 56, ms=40.0, mib=300.0),
        _row("swin", "native", 56, ms=4.0, mib=20.0),
        _row("swin", "flex", 56, ms=5.0, mib=25.0, compile_s=7.25, flex_block_sparsity=0.984375, compile_mode="compiled"),
        _row("swin", "masked", 224, status="oom"),
        _row("swin", "flex", 224, ms=80.0, mib=400.0, compile_s=9.0, flex_block_sparsity=0.999, compile_mode="compiled"),
    ])
    md = render(res)
    lines = [line for line in md.splitlines() if line.startswith("| swin")]
    # columns in the suite's order: masked, native (+ speed-up), flex (+ speed-up), then flex's compile facts
    assert lines[0] == "| swin | 56×56 | 40.0 | 300 | 4.00 | 20.0 | 10.00 | 5.00 | 25.0 | 8.00 | 7.2 | 0.9844 |"
    assert lines[1] == "| swin | 224×224 | oom | oom |  |  |  | 80.0 | 400 |  | 9.0 | 0.9990 |"
    assert render(res[res["backend"] == "flex"]) is None  # one backend: nothing to compare
    assert render(res.drop(columns="compile_mode")) is None  # the backend metric did not run
