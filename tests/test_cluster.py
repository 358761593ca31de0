"""The submitit executor without a cluster: submitit's ``local`` (processes) and ``debug`` (in-process)
executors run the same job code a Slurm array would.

Suites are tiny (8x8 tokens, cost metrics, a short timing budget) so a shard costs its start-up.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from rich.console import Console

HELPERS = Path(__file__).parent / "helpers"
if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))

from attnbench import UserError, store  # noqa: E402
from attnbench.cli import main  # noqa: E402
from attnbench.cluster import ClusterOptions, lost_row, require_submitit, resolve_options  # noqa: E402
from attnbench.cluster.plan import make_plan  # noqa: E402
from attnbench.runner import Calibration, run_suite  # noqa: E402
from attnbench.suite import load_suite, validate_suite  # noqa: E402


TINY = {
    "name": "tiny", "device": "cpu", "resolutions": [8, 12], "dim": 16, "num_heads": 2, "mode": ["forward", "train"],
    "metrics": ["flops", "params", "memory", "time"], "timing": {"min_run_time": 0.01, "threads": 1, "warmup": 1},
    "memory": {"warmup": 0}, "limits": {"timeout_s": 60}, "cases_per_worker": 100,
    "mechanisms": ["global", "axial", {"name": "swin", "window_size": 4}],
}
SLOW = {
    "name": "slowshards", "device": "cpu", "resolutions": [8, 9, 10, 11], "dim": 16, "num_heads": 2,
    "metrics": ["params", "memory"], "memory": {"warmup": 0}, "cases_per_worker": 100, "limits": {"timeout_s": 60},
    "mechanisms": ["test_slow", "axial", "global"],
}


def _quiet() -> Console:
    return Console(file=open(os.devnull, "w"), width=120)


def _executor(cluster: str, shards: int):
    from attnbench.cluster.submitit_executor import SubmititExecutor

    return SubmititExecutor(ClusterOptions(cluster=cluster, shards=shards, poll_s=0.2))


# ------------------------------------------------------------------------------------- the plan
def test_plan_keeps_each_configuration_in_one_lane_in_size_order_and_never_mixes_devices():
    suite = load_suite(Path(__file__).parents[1] / "suites" / "highres.yaml")
    cases = suite.expand(["cpu", "cuda"])
    shards = make_plan(cases, 5, gpus_per_job=2)
    placed = [c.key() for s in shards for ln in s.lanes for c in ln.cases]
    assert sorted(placed) == sorted(c.key() for c in cases)  # every case exactly once
    lane_of = {c.key(): (s.index, ln.rank) for s in shards for ln in s.lanes for c in ln.cases}
    for s in shards:
        assert {c.device for c in s.cases} == {s.device}
        assert s.gpus == (len(s.lanes) if s.device == "cuda" else 0)
        assert len(s.lanes) <= (2 if s.device == "cuda" else 1)
        for ln in s.lanes:
            sides = {}
            for c in ln.cases:  # sizes ascending within a configuration: calibration skips still work
                sides.setdefault(Calibration.config(c), []).append(c.tokens)
            assert all(v == sorted(v) for v in sides.values())
    chains = {}
    for c in cases:
        chains.setdefault(Calibration.config(c), set()).add(lane_of[c.key()])
    assert all(len(v) == 1 for v in chains.values())
    assert {s.device for s in shards} == {"cpu", "cuda"} and len(shards) == 5


def test_cli_flags_win_over_the_suite_block_and_need_the_submitit_executor():
    suite = validate_suite({**TINY, "executor": {"kind": "submitit", "cluster": "local", "shards": 4,
                                                 "job_timeout_min": 30}})
    kind, opts = resolve_options(suite.model.executor, {"shards": 2, "partition": None})
    assert (kind, opts.cluster, opts.shards, opts.job_timeout_min) == ("submitit", "local", 2, 30)
    with pytest.raises(UserError, match=r"--shards, --partition: used only with --executor submitit"):
        resolve_options(None, {"shards": 2, "partition": "gpu"})


def test_without_submitit_the_error_names_the_extra(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    with pytest.raises(UserError, match=r"pip install 'attnbench\[slurm\]'"):
        require_submitit()
    suite_file = tmp_path / "tiny.yaml"
    suite_file.write_text(json.dumps(TINY))
    assert main(["run", str(suite_file), "--executor", "submitit", "--cluster", "local", "--out", str(tmp_path)]) == 2
    assert "needs the submitit package, which is not installed; pip install 'attnbench[slurm]'" in capsys.readouterr().err
    assert not (tmp_path / "tiny").exists()


def test_slurm_dry_run_prints_the_plan_without_a_scheduler_and_submits_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no sbatch anywhere
    highres = Path(__file__).parents[1] / "suites" / "highres.yaml"
    assert main(["run", str(highres), "--executor", "submitit", "--cluster", "slurm", "--shards", "8", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "84 in 8 shard(s) on cluster 'slurm'" in out
    assert "dry run: no job is submitted" in out
    assert all(f"s00{i}-t0" in out for i in range(8))
    assert list(tmp_path.iterdir()) == []


# -------------------------------------------------------------------------------- real shards
def _rows(run_dir: Path):
    return store.read_results(run_dir).set_index("case_key")


@pytest.mark.slow
def test_three_local_shards_give_the_rows_of_a_local_run(tmp_path):
    suite = validate_suite(TINY)
    local = _rows(run_suite(suite, out=tmp_path / "local", console=_quiet()))
    run_dir = run_suite(suite, out=tmp_path / "sharded", console=_quiet(), executor=_executor("local", 3))
    sharded = _rows(run_dir)
    assert sorted(sharded.index) == sorted(local.index) and len(local) == 12
    assert (sharded.loc[local.index, "status"] == local["status"]).all() and set(local["status"]) == {"ok"}
    assert (sharded.loc[local.index, "macs"] == local["macs"]).all()
    assert (sharded.loc[local.index, "params"] == local["params"]).all()
    assert sharded["latency_ms"].notna().all()
    # merged samples: one latency series per case, as in a local run
    samples = store.read_samples(run_dir)
    assert {k for k, name in samples if name == "latency_ms"} == set(local.index)
    lines = (run_dir / store.SAMPLES_JSONL).read_text().splitlines()
    assert len(lines) == len({(json.loads(x)["case_key"], json.loads(x)["name"]) for x in lines})
    # per-lane env records: host, device, CUDA_VISIBLE_DEVICES, job id; one fingerprint for the run
    env = store.read_env(run_dir)
    assert len(env["shards"]) == 3 and sum(r["cases"] for r in env["shards"]) == 12
    assert all(r["host"] and r["job_id"] and "cuda_visible_devices" in r and r["lost"] == 0 for r in env["shards"])
    assert env["fingerprint"] == env["shards"][0]["fingerprint"]


@pytest.mark.slow
def test_a_shard_that_raises_becomes_error_rows_and_the_sweep_continues(tmp_path, monkeypatch):
    from attnbench.cluster import shard as shard_module

    real = shard_module.run_lane

    def flaky(spec, lane):
        if spec.index == 1:
            raise RuntimeError("node lost its scratch disk")
        return real(spec, lane)

    monkeypatch.setattr(shard_module, "run_lane", flaky)
    suite = validate_suite({**TINY, "metrics": ["flops", "params"]})
    run_dir = run_suite(suite, out=tmp_path, console=_quiet(), executor=_executor("debug", 3))
    rows = store.read_results(run_dir)
    plan = json.loads((run_dir / "shards" / "a1" / "plan.json").read_text())
    lost_keys = set(plan[1]["lanes"]["s001-t0"])
    assert len(rows) == 12 and set(rows["case_key"]) == set(k for s in plan for v in s["lanes"].values() for k in v)
    bad = rows[rows["case_key"].isin(lost_keys)]
    assert set(bad["status"]) == {"error"}
    assert all(e.startswith("scheduler: shard 1 (job DEBUG_") and "ended FAILED before this case finished: "
               "RuntimeError: node lost its scratch disk" in e for e in bad["error"])
    assert bad["macs"].notna().all()  # static columns are known without running
    good = rows[~rows["case_key"].isin(lost_keys)]
    assert len(good) == 12 - len(lost_keys) and set(good["status"]) == {"ok"}


@pytest.mark.slow
def test_killing_one_shard_then_resume_completes_with_nothing_lost_or_duplicated(tmp_path):
    # test_slow registers on import; imported here, not at collection, so registry-wide tests
    # collected after this module (test_fidelity) do not see it
    import runner_mechanisms  # noqa: F401

    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(HELPERS)!r})
        import runner_mechanisms
        from rich.console import Console
        from attnbench.cluster import ClusterOptions
        from attnbench.cluster.submitit_executor import SubmititExecutor
        from attnbench.runner import run_suite
        from attnbench.suite import validate_suite
        run_suite(validate_suite({SLOW!r}), out={str(tmp_path)!r}, console=Console(file=open(os.devnull, "w")),
                  executor=SubmititExecutor(ClusterOptions(cluster="local", shards=3, poll_s=0.2)))
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    victim = None
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and victim is None:
            for lane in tmp_path.glob("slowshards/*/shards/a1/s*-t0"):
                rows = store.read_results(lane) if (lane / store.RESULTS_CSV).exists() else []
                if 1 <= len(rows) and (lane / store.ENV_JSON).exists():
                    plan = json.loads((lane.parent / "plan.json").read_text())
                    total = [len(v) for s in plan for k, v in s["lanes"].items() if k == lane.name][0]
                    if len(rows) <= total - 2:  # two cases left: one is surely unfinished when the kill lands
                        victim = (lane, store.read_env(lane)["shard"]["pid"], total)
                        os.kill(victim[1], signal.SIGKILL)  # the job's process, as a lost node would
                        break
            time.sleep(0.1)
        assert parent.wait(timeout=240) == 0
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
    assert victim is not None, "no lane was caught mid-run"
    lane, pid, total = victim
    run_dir = lane.parents[2]
    first = store.read_results(run_dir)
    assert len(first) == 12 and first["case_key"].is_unique
    lost = first[[lost_row(r) for r in first.to_dict("records")]]
    assert 1 <= len(lost) < total
    assert all(f"scheduler: shard {int(lane.name[1:4])} (job " in e for e in lost["error"])
    assert set(first["status"]) <= {"ok", "error"}
    finished_before = first[first["status"] == "ok"].set_index("case_key")

    run_suite(validate_suite(SLOW), resume=run_dir, console=_quiet(), executor=_executor("local", 2))
    after = store.read_results(run_dir)
    assert len(after) == 12 and after["case_key"].is_unique
    assert set(after["status"]) == {"ok"}, after["error"].dropna().tolist()
    rerun = json.loads((run_dir / "shards" / "a2" / "plan.json").read_text())
    rerun_keys = {k for s in rerun for v in s["lanes"].values() for k in v}
    assert rerun_keys == set(lost["case_key"])  # only the lost cases were resubmitted
    kept = after.set_index("case_key").loc[finished_before.index, "wall_s"]
    assert (kept == finished_before["wall_s"]).all()  # finished rows untouched
    env = store.read_env(run_dir)
    assert [r["attempt"] for r in env["shards"]].count("a2") == sum(len(s["lanes"]) for s in rerun)
