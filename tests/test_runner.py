"""Runner: every way a case can end becomes the right row while the others finish; runs resume.

The misbehaving mechanisms live in tests/helpers/runner_mechanisms.py so that spawned workers can
import (and so register) them too.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

HELPERS = Path(__file__).parent / "helpers"
if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))

import runner_mechanisms  # noqa: E402,F401  (registers test_* mechanisms here; workers import it too)

from attnbench import store  # noqa: E402
from attnbench.executor import LocalExecutor  # noqa: E402
from attnbench.runner import plan, run_suite  # noqa: E402
from attnbench.suite import validate_suite  # noqa: E402


def _quiet() -> Console:
    return Console(file=open(os.devnull, "w"), width=120)


@pytest.mark.slow
def test_raise_oom_and_hang_become_rows_while_other_cases_finish(tmp_path):
    suite = validate_suite({
        "name": "misbehave", "device": "cpu", "resolutions": [8], "dim": 16, "num_heads": 2,
        "metrics": ["params", "memory"], "limits": {"max_memory_gb": 0.25, "timeout_s": 8},
        "cases_per_worker": 10,
        "mechanisms": ["global", "test_raises", "test_hog", "test_sleeper", "axial"],
    })
    run_dir = run_suite(suite, out=tmp_path, console=_quiet())
    rows = store.read_results(run_dir).set_index("mechanism")
    assert rows.loc["global", "status"] == "ok" and rows.loc["axial", "status"] == "ok"
    assert rows.loc["global", "peak_memory_mib"] > 0
    assert rows.loc["test_raises", "status"] == "error"
    assert "deliberate failure in test_raises" in rows.loc["test_raises", "error"]
    assert rows.loc["test_hog", "status"] == "oom"
    assert "can't allocate memory" in rows.loc["test_hog", "error"]
    assert rows.loc["test_sleeper", "status"] == "timeout"
    assert "timeout_s=8" in rows.loc["test_sleeper", "error"]
    # params are known without running, so a failed case still has them
    assert rows.loc["test_sleeper", "params"] == rows.loc["global", "params"]


def test_predicted_memory_above_the_limit_is_skipped_as_oom_without_running():
    suite = validate_suite({
        "name": "big", "device": "cpu", "resolutions": [8, 96], "dim": 16, "num_heads": 2,
        "metrics": ["params", "memory"], "limits": {"max_memory_gb": 0.5},
        "mechanisms": [{"name": "global", "backend": "masked"}],
    })
    cases = suite.expand()
    p = plan(suite, cases, peaks={})
    small, big = cases
    assert small.key() not in p.skips
    status, reason = p.skips[big.key()]
    assert status == "oom" and "limits.max_memory_gb=0.5" in reason and "not run" in reason
    # 96² masked: the (h, N, N) mask alone is 2 * 9216² bytes, far above 0.5 GiB.
    assert p.predictions[big.key()].memory_bytes > 2 * 9216**2


def test_absent_device_gives_unsupported_rows_and_parallel_workers_finish(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present: the absent-device path cannot be exercised here")
    suite = validate_suite({"name": "dev", "device": ["cpu", "cuda"], "resolutions": [8, 9, 10], "dim": 16,
                            "num_heads": 2, "metrics": ["params", "flops"], "workers": 2, "cases_per_worker": 10,
                            "mechanisms": ["global", "axial"]})
    run_dir = run_suite(suite, out=tmp_path, console=_quiet())
    rows = store.read_results(run_dir)
    assert len(rows) == 12
    cpu, cuda = rows[rows["device"] == "cpu"], rows[rows["device"] == "cuda"]
    assert set(cpu["status"]) == {"ok"} and (cpu["macs_fvcore"] == cpu["macs"]).all()
    assert set(cuda["status"]) == {"unsupported"}
    assert cuda["error"].str.contains("cuda is not available").all()
    # rows are stored in suite order, whatever order the parallel workers finished in
    assert list(rows["case_key"]) == [c.key() for c in suite.expand(["cpu", "cuda"])]


class RecordingExecutor(LocalExecutor):
    """A local executor that remembers which cases it was asked to run."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ran = []

    def run(self, jobs, on_start, on_done):
        def record():
            for tag, job in jobs:
                self.ran.append(tag.key())
                yield tag, job

        super().run(record(), on_start, on_done)


SLOW_SUITE = {
    "name": "killme", "device": "cpu", "resolutions": [8, 9, 10, 11, 12, 13], "dim": 16, "num_heads": 2,
    "metrics": ["params", "memory"], "memory": {"warmup": 0}, "cases_per_worker": 100,
    "limits": {"timeout_s": 60}, "mechanisms": ["test_slow"],
}


@pytest.mark.slow
def test_killed_run_resumes_without_repeating_finished_cases(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(HELPERS)!r})
        import runner_mechanisms
        from rich.console import Console
        from attnbench.runner import run_suite
        from attnbench.suite import validate_suite
        run_suite(validate_suite({SLOW_SUITE!r}), out={str(tmp_path)!r}, console=Console(file=open(os.devnull, "w")))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    csv = None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = list(tmp_path.glob("killme/*/results.csv"))
        if found and len(store.read_results(found[0].parent)) >= 2:
            csv = found[0]
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and its worker, as a crash or `kill -9` would
    proc.wait(timeout=30)
    assert csv is not None, "the run never wrote two rows"
    run_dir = csv.parent
    before = store.read_results(run_dir)
    done = set(before["case_key"])
    assert 2 <= len(done) < 6

    suite = validate_suite(SLOW_SUITE)
    from attnbench.worker import WorkerInit

    executor = RecordingExecutor(WorkerInit(threads=1, imports=("runner_mechanisms",)), timeout_s=60,
                                 jobs_per_worker=100)
    assert run_suite(suite, resume=run_dir, console=_quiet(), executor=executor) == run_dir
    after = store.read_results(run_dir)
    assert len(after) == 6 and set(after["status"]) == {"ok"}
    assert not done & set(executor.ran), "a finished case was run again"
    assert len(executor.ran) == 6 - len(done)
    # finished rows are kept exactly as they were
    kept = after.set_index("case_key").loc[sorted(done), ["wall_s", "peak_memory_mib"]]
    pd.testing.assert_frame_equal(kept, before.set_index("case_key").loc[sorted(done), ["wall_s", "peak_memory_mib"]])


def test_include_block_cases_run_with_the_block_metric_options(tmp_path):
    """A case from an ``include:`` block gets that block's options in its worker, not the top level's."""
    suite = validate_suite({
        "name": "grids", "device": "cpu", "resolutions": [6], "dim": 16, "num_heads": 2,
        "metrics": ["receptive_field"], "receptive_field": {"depth": 2, "erf_seeds": 1, "erf_batch": 1},
        "cases_per_worker": 10, "mechanisms": ["axial"],
        "include": [{"resolutions": [5], "receptive_field": {"depth": 1},
                     "mechanisms": [{"name": "swin", "window_size": 5, "label": "swin"}]}],
    })
    rows = store.read_results(run_suite(suite, out=tmp_path, console=_quiet()))
    got = {(r.label, r.height): (r.status, r.rf_depth, r.rf_layers_to_full) for r in rows.itertuples()}
    # axial reaches every token in 2 layers; one 5x5 window on a 5x5 map reaches all in 1
    assert got == {("axial", 6): ("ok", 2, 2), ("swin", 5): ("ok", 1, 1)}
