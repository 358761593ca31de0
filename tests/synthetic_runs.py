"""Synthetic run directories in the stored format, for tests of report, compare and history.

Written through ``attnbench.store`` so they are exactly what a real run leaves on disk, with case
keys from ``attnbench.case.Case``; the numbers come from closed-form cost models, so tests know the
right answers (exponents, crossovers, verdicts) without timing anything.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from attnbench import store
from attnbench.case import Case

BASE_ENV = {
    "attnbench_version": "0.1.0", "git_commit": "abc1234", "git_dirty": False,
    "created_at": "2026-01-01T00:00:00+00:00", "python": "3.11.0", "platform": "Linux-test", "hostname": "test",
    "cpu": "Test CPU", "cpu_count": 2, "torch": torch.__version__, "cuda": None, "cudnn": None, "driver": None,
    "device": "cpu", "device_name": "Test CPU", "threads": 1, "omp_wait_policy": None, "tf32_matmul": False,
    "tf32_cudnn": False, "cudnn_benchmark": False, "cudnn_deterministic": False,
    "float32_matmul_precision": "highest", "matmul_peak_gflops": {"float32": 50.0},
}


def case(label: str, side: int, *, mechanism: str | None = None, dtype: str = "float32", mode: str = "forward",
         **options: Any) -> Case:
    return Case(mechanism=mechanism or label, label=label, options=tuple(sorted(options.items())), height=side,
                width=side, batch_size=1, dim=64, num_heads=2, dtype=dtype, device="cpu", mode=mode)


def ok_row(c: Case, latency_ms: float, samples: list[float] | None = None, **metrics: Any) -> dict[str, Any]:
    lat = np.asarray(samples if samples is not None else [latency_ms], dtype=float)
    q1, q3 = np.percentile(lat, [25, 75])
    row = {"case_key": c.key(), **c.id_row(), "status": "ok", "error": None, "threads": 1, "wall_s": 1.0,
           "latency_ms": float(np.median(lat)), "latency_iqr_ms": float(q3 - q1), "latency_mean_ms": float(lat.mean()),
           "timing_runs": int(lat.size), "throughput_img_s": 1000.0 / float(np.median(lat)),
           "tokens_per_s": 1000.0 * c.tokens / float(np.median(lat))}
    row.update(metrics)
    if "macs" in row and row["macs"] is not None:
        row["achieved_gflops"] = 2.0 * row["macs"] / (row["latency_ms"] * 1e-3) / 1e9
    return row


def failed_row(c: Case, status: str, error: str = "") -> dict[str, Any]:
    return {"case_key": c.key(), **c.id_row(), "status": status, "error": error or status, "threads": 1, "wall_s": 0.5}


def write_run(run_dir: Path, rows: list[dict[str, Any]], samples: dict[str, list[float]] | None = None,
              env: dict[str, Any] | None = None, suite: dict[str, Any] | None = None) -> Path:
    """A run directory holding ``rows``; ``samples`` maps case_key -> latency samples (ms)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    store.write_results(run_dir, rows)
    labels = {r["case_key"]: r["label"] for r in rows}
    for key, values in (samples or {}).items():
        store.append_samples(run_dir, key, labels[key], {"latency_ms": values})
    store.write_env(run_dir, {**BASE_ENV, **(env or {})})
    store.write_suite(run_dir, suite or {"name": run_dir.parent.name, "description": "synthetic run for tests"})
    return run_dir


def lognormal_samples(median_ms: float, n: int, cv: float, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    return list(median_ms * rng.lognormal(0.0, cv, n))


def scaling_run(run_dir: Path, models: dict[str, Callable[[int], float]], sides: list[int],
                failures: dict[tuple[str, int], str] | None = None, seed: int = 0, n: int = 20,
                cv: float = 0.02) -> Path:
    """A run where latency(label, tokens) = models[label](tokens), memory ∝ latency, MACs ∝ latency."""
    rows, samples = [], {}
    failures = failures or {}
    for i, (label, model) in enumerate(models.items()):
        for side in sides:
            c = case(label, side)
            if (label, side) in failures:
                rows.append(failed_row(c, failures[(label, side)]))
                continue
            lat = model(side * side)
            s = lognormal_samples(lat, n, cv, seed + 97 * i + side)
            samples[c.key()] = s
            rows.append(ok_row(c, lat, s, macs=int(lat * 1e6), params=16640, params_trainable=16640,
                               peak_memory_mib=lat * 0.5, memory_method="cpu_profiler_allocator"))
    return write_run(run_dir, rows, samples)
