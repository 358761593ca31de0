"""The CLI end to end: the smoke suite produces a complete results.csv; list works; a missing
device is a one-line error; --help documents every option."""
from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from attnbench import store
from attnbench.case import ID_COLUMNS
from attnbench.cli import main

CASE_COLUMNS = ["macs", "macs_attention", "macs_fvcore", "macs_flop_counter", "macs_mismatch", "params",
                "params_trainable", "peak_memory_mib", "memory_method", "latency_ms", "latency_iqr_ms",
                "latency_mean_ms", "timing_runs", "throughput_img_s", "tokens_per_s", "achieved_gflops", "efficiency"]


@pytest.mark.slow
def test_smoke_suite_end_to_end_through_the_cli(repo_root, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "attnbench", "run", "suites/smoke.yaml", "--out", str(tmp_path),
                           "--no-report"], cwd=repo_root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = list((tmp_path / "smoke").iterdir())
    run = store.load_run(run_dir)
    df = run.results
    assert len(df) == 28  # 7 mechanism entries x 2 sizes x 2 modes
    assert list(df.columns[: 1 + len(ID_COLUMNS) + 4]) == ["case_key", *ID_COLUMNS, "status", "error", "threads", "wall_s"]
    assert set(df["status"]) == {"ok"}, df[df["status"] != "ok"][["label", "error"]]
    assert df["case_key"].is_unique
    for col in CASE_COLUMNS:
        assert df[col].notna().all(), col
    assert not df["macs_mismatch"].any()
    assert (df["macs"] == df["macs_fvcore"]).all() and (df["macs"] == df["macs_flop_counter"]).all()
    assert (df["latency_ms"] > 0).all() and (df["peak_memory_mib"] > 0).all()
    assert set(df["memory_method"]) == {"cpu_profiler_allocator"}
    assert set(df["label"]) == {"global", "swin", "swin-shifted", "cswin", "axial", "pale", "slide"}
    # raw samples: one latency series per case, as many values as timing blocks
    for _, r in df.iterrows():
        assert len(run.samples[(r["case_key"], "latency_ms")]) == r["timing_runs"]
    env = run.env
    for key in ("schema_version", "git_commit", "torch", "device", "threads", "tf32_matmul", "cudnn_benchmark",
                "float32_matmul_precision", "matmul_peak_gflops", "created_at", "cpu"):
        assert key in env, key
    assert env["device"] == "cpu" and env["matmul_peak_gflops"]["float32"] > 0
    assert run.suite["name"] == "smoke" and run.suite["limits"]["timeout_s"] == 120
    assert "Status: ok 28" in proc.stdout


def test_list_shows_mechanisms_options_and_metrics(capsys):
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = {m["name"] for m in data["mechanisms"]}
    assert {"global", "swin", "cswin", "axial", "pale", "slide"} <= names
    swin = next(m for m in data["mechanisms"] if m["name"] == "swin")
    assert "window_size" in swin["options"] and "masked" in swin["backends"]
    metrics = {m["name"]: m for m in data["metrics"]}
    assert metrics["time"]["defaults"] == {"min_run_time": 1.0, "rounds": 1, "threads": 1, "warmup": 1,
                                          "clock": "wall"}
    assert metrics["memory"]["exclusive"] is True and metrics["flops"]["exclusive"] is False
    assert main(["list"]) == 0
    assert "window_size" in capsys.readouterr().out


def test_device_cuda_without_cuda_is_a_one_line_error(repo_root, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present")
    assert main(["run", str(repo_root / "suites/smoke.yaml"), "--device", "cuda", "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert "--device cuda: cuda is not available on this machine" in err


@pytest.mark.parametrize("option", ["--out", "--device", "--resume", "--dry-run", "--no-report"])
def test_run_help_documents_every_option(option, capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    assert option in capsys.readouterr().out


def test_dry_run_lists_cases_and_writes_nothing(repo_root, tmp_path, capsys):
    assert main(["run", str(repo_root / "suites/smoke.yaml"), "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "28 cases" in out and "Estimated wall time" in out
    assert not any(tmp_path.iterdir())


def test_dry_run_of_an_accuracy_suite_counts_the_training_steps_it_cannot_estimate(repo_root, tmp_path, capsys):
    """The lower bound covers forward/backward steps only; training must be named, not silently left out."""
    assert main(["run", str(repo_root / "suites/accuracy.yaml"), "--dry-run", "--out", str(tmp_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    # 7 Pathfinder cases x 1500 steps + 14 PairMatch/digits cases x 250 steps, one seed each
    assert "accuracy training, 14000 optimiser steps in all (250-1500 per case" in out
    assert not any(tmp_path.iterdir())
