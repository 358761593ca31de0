"""The staged job ``attnbench ab`` uses after its first round, through a real worker process.

Both sides' workers prepare (build, warm up, size the blocks) at once and are then timed one at a
time: a worker answers ``prepared``, holds the case ready, and measures only on ``GO``. Tested here
as the session drives it (``SideWorker`` from ab's fork server), with the failure paths: a metric
without a prepared half, a case that fails while preparing, and a prepared case that is dropped.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from attnbench.ab import SideWorker
from attnbench.worker import GO, Job, WorkerInit
from synthetic_runs import case

TIME = {"time": {"min_run_time": 0.02, "warmup": 1, "threads": 1}}


@pytest.fixture
def worker(tmp_path: Path):
    w = SideWorker(WorkerInit(threads=1, log_path=str(tmp_path / "worker.log")), timeout_s=120)
    yield w
    w.close(kill=True)


def staged(c, metrics=("time",), options=TIME) -> Job:
    return Job(case=c.to_dict(), metrics=list(metrics), options=dict(options), staged=True)


def test_staged_job_prepares_then_measures_on_go(worker):
    prepared = worker.reply(worker.send(staged(case("swin", 14, window_size=7))))
    assert prepared.status == "prepared" and prepared.wall_s > 0 and prepared.columns == {}
    done = worker.reply(worker.send(GO))
    assert done.status == "ok", done.error
    assert done.columns["latency_ms"] > 0 and done.columns["timing_clock"] == "wall"
    assert len(done.samples["latency_ms"]) == done.columns["timing_runs"] >= 1  # blocks timed after GO
    # the same process takes the next job
    again = worker.reply(worker.send(staged(case("global", 14))))
    assert again.status == "prepared"
    assert worker.reply(worker.send(GO)).status == "ok"


def test_metric_without_a_prepared_half_is_an_error_row(worker):
    out = worker.reply(worker.send(staged(case("global", 14), metrics=("params",), options={})))
    assert out.status == "error"
    assert out.error == "params: ValueError: metric 'params' has no prepare half, so it cannot run in a staged job"
    assert worker.slot is None  # a failure gets a fresh process


def test_case_failing_while_preparing_reports_its_error(worker):
    out = worker.reply(worker.send(staged(case("swin", 13, window_size=7, pad=False))))
    assert out.status in ("error", "unsupported") and out.error.startswith("time: ")


def test_dropping_a_prepared_case_ends_the_worker_cleanly(worker):
    assert worker.reply(worker.send(staged(case("global", 14)))).status == "prepared"
    proc = worker.slot.proc
    worker.close()  # what ab does when the other side failed: the prepared case is never timed
    assert not proc.is_alive() and proc.exitcode == 0


def test_fork_server_preload_imports_nothing_from_a_side_tree():
    """Whatever the fork server imports is shared by both sides' workers, so it must hold nothing of
    ``mechanisms/`` or a plugin: a side's worker would then run the running checkout's copy (or keep
    references to it) instead of its own tree."""
    import json
    import subprocess
    import sys

    from attnbench.ab import FORKSERVER_PRELOAD

    root = Path(__file__).resolve().parents[1]
    code = ("import importlib, json, sys\n"
            f"for name in {list(FORKSERVER_PRELOAD)!r}: importlib.import_module(name)\n"
            "print(json.dumps({n: getattr(m, '__file__', None) for n, m in list(sys.modules.items())}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    modules = json.loads(out.stdout)
    assert "torch.utils.benchmark" in modules and "attnbench.worker" in modules
    from_repo = {n for n, f in modules.items() if f and Path(f).is_absolute() and Path(f).resolve().is_relative_to(root)
                 and "site-packages" not in Path(f).parts}  # a virtual environment may live in the checkout
    assert from_repo and all(n == "attnbench" or n.startswith("attnbench.") for n in from_repo), sorted(from_repo)


def test_layout_padding_is_seeded_and_differs_between_seeds():
    from attnbench.worker import layout_padding_sizes

    a, b = layout_padding_sizes("0/3/base"), layout_padding_sizes("0/3/head")
    assert a == layout_padding_sizes("0/3/base")  # a session can be re-run with the same layouts drawn
    assert a != b
    for sizes in (a, b):
        assert 1 <= len(sizes["small"]) < 256 and all(1 <= n < 4096 for n in sizes["small"])
        assert 4096 <= sizes["heap"] < 128 * 1024 and 1 <= sizes["tensor"] < 64 * 1024
    heaps = {layout_padding_sizes(f"7/{r}/base")["heap"] for r in range(20)}
    assert len(heaps) == 20  # a fresh offset every round


def test_worker_with_a_shuffled_layout_measures(tmp_path: Path):
    w = SideWorker(WorkerInit(threads=1, log_path=str(tmp_path / "worker.log")), timeout_s=120)
    try:
        w.launch(layout_seed="0/1/head")
        assert w.init.layout_seed == "0/1/head"
        assert w.reply(w.send(staged(case("swin", 14, window_size=7)))).status == "prepared"
        assert w.reply(w.send(GO)).status == "ok"
    finally:
        w.close(kill=True)
