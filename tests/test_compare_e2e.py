"""End to end: real runs of a tiny suite, then ``attnbench compare`` on them.

Timing on 2 cores shared with other jobs is noisy: wall-clock block times are stretched whenever
the timing thread is descheduled, and two runs a minute apart have been seen to differ by 1.6x in
the same case. So this test checks the wiring (runner -> samples.jsonl -> compare -> exit code and
named case) with a 16x slowdown against a 100 % threshold; the statistical power of the rule at
5-10 % is tested on synthetic samples in test_compare_stats.py, and measured on real runs in the
README.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from rich.console import Console

from attnbench.commands.compare import compare
from attnbench.commands.run import run

SUITE = """\
name: e2e
device: cpu
dtype: float32
mode: forward
batch_size: 1
dim: 32
num_heads: 2
resolutions: [[14, 14]]
metrics: [params, time]
timing: {{min_run_time: 0.15, threads: 1, warmup: 2}}
limits: {{max_memory_gb: 2, timeout_s: 120}}
cases_per_worker: 10
mechanisms:
  - {global_entry}
  - {{name: swin, window_size: 7}}
"""


@pytest.fixture
def slow_mechanism():
    mod = importlib.import_module("slow_mechanism")
    mod.ensure_registered()
    yield mod
    mod.remove()


def _run(tmp_path: Path, name: str, global_entry: str) -> Path:
    suite = tmp_path / f"{name}.yaml"
    suite.write_text(SUITE.format(global_entry=global_entry))
    out = tmp_path / name
    assert run(suite, out=out, report=False, console=Console(quiet=True)) == 0
    (run_dir,) = (out / "e2e").iterdir()
    return run_dir


@pytest.mark.slow
def test_same_code_passes_and_slowed_mechanism_fails(tmp_path, slow_mechanism, capsys):
    base = _run(tmp_path, "a", "global")
    same = _run(tmp_path, "b", "global")
    slowed = _run(tmp_path, "c", "{name: slowed_global, extra_forwards: 15, label: global}")
    capsys.readouterr()

    assert compare(base, same, threshold=1.0) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: 0 regression(s)") and "global 14x14 float32 forward" in out

    assert compare(base, slowed, threshold=1.0) == 1
    out = capsys.readouterr().out
    regressions = [line for line in out.splitlines() if line.startswith("regression")]
    assert len(regressions) == 1
    assert "global 14x14 float32 forward" in regressions[0] and "latency_ms" in regressions[0]
    assert "matched by label: global" in regressions[0] and "slowed_global" in regressions[0]
    assert not any("swin" in line for line in regressions)
