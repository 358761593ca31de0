"""What one job of the array runs: its lane's cases, with the usual worker isolation, into a lane directory.

Why a lane directory is a run directory: the job writes through the same store as a local run
(``results.csv`` rewritten atomically after every case, samples appended line by line, ``env.json``
and ``suite.yaml``), so a job killed at any moment leaves a consistent subset of rows, the parent
merges lanes by reading them with ``store.read_results``, and a lane can be inspected on its own
(``attnbench report results/<suite>/<run>/shards/a1/s003-t0``).

Everything the job needs travels in a ``ShardSpec`` of plain data (the suite as its dict, cases by
key): submitit pickles it onto the node, where the suite is validated again by the same code.
Machine facts are measured here, on the node that times: environment, fingerprint, matmul peaks
(the parent may be a login node without a GPU) and whether the device exists at all.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LaneSpec:
    name: str
    dir: str
    device: str
    case_keys: list[str]


@dataclass
class ShardSpec:
    index: int
    gpus: int
    lanes: list[LaneSpec]
    suite: dict[str, Any]
    imports: tuple[str, ...] = ()
    threads: int = 1
    max_memory_gb: float | None = None
    timeout_s: float = 600.0
    cases_per_worker: int = 1
    sys_path: list[str] = field(default_factory=list)  # the parent's import path, as spawn would copy it


def _task_rank() -> int:
    """This task's rank within its job (one task per GPU); 0 outside a multi-task job."""
    try:
        import submitit

        return int(submitit.JobEnvironment().local_rank)
    except Exception:  # debug executor, or not under submitit at all
        return 0


def _job_id() -> str | None:
    try:
        import submitit

        return str(submitit.JobEnvironment().job_id)
    except Exception:
        return os.environ.get("SLURM_JOB_ID")


def _pin_gpu(rank: int, gpus: int) -> None:
    """Give task ``rank`` its own GPU of the job's ``CUDA_VISIBLE_DEVICES`` (before CUDA starts)."""
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if gpus > 1 and rank < len(visible):
        os.environ["CUDA_VISIBLE_DEVICES"] = visible[rank]


def run_shard(spec: ShardSpec) -> dict[str, Any]:
    """Job entry point: run this task's lane; returns {lane, rows, host}."""
    import sys

    sys.path.extend(p for p in spec.sys_path if p not in sys.path)  # plugin modules the parent imported
    rank = _task_rank()
    if rank >= len(spec.lanes):
        return {"lane": None, "rows": 0, "host": socket.gethostname()}
    lane = spec.lanes[rank]
    _pin_gpu(rank, spec.gpus)
    return run_lane(spec, lane)


def run_lane(spec: ShardSpec, lane: LaneSpec) -> dict[str, Any]:
    import importlib

    from .. import devices, store
    from ..executor import LocalExecutor, Outcome
    from ..predict import steps_needed
    from ..runner import Calibration, RunState, matmul_peaks, static_columns, unsupported_reason
    from ..suite import validate_suite
    from ..worker import Job, WorkerInit

    for name in spec.imports:  # plugin mechanisms/metrics register before the suite is validated
        importlib.import_module(name)
    suite = validate_suite(spec.suite, source=f"suite of shard {spec.index}")
    by_key = {c.key(): c for c in suite.expand([lane.device])}
    missing = [k for k in lane.case_keys if k not in by_key]
    if missing:
        raise RuntimeError(f"lane {lane.name}: {len(missing)} case(s) of the plan are not in the suite here "
                           f"(first: {missing[0]}); the suite or attnbench differs between parent and node")
    cases = [by_key[k] for k in lane.case_keys]
    lane_dir = Path(lane.dir)
    lane_dir.mkdir(parents=True, exist_ok=True)

    threads = spec.threads
    peaks: dict[str, float] = {}
    if devices.is_available(lane.device):
        peaks = matmul_peaks(lane.device, sorted({c.dtype for c in cases} | {"float32"}), threads)
    env = devices.capture_env(lane.device, threads)
    env.update({"threads": threads, "matmul_peak_gflops": peaks, "matmul_peak_gflops_by_device": {lane.device: peaks},
                "shard": {"lane": lane.name, "shard": spec.index, "host": socket.gethostname(), "pid": os.getpid(),
                          "job_id": _job_id(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                          "device_name": env.get("device_name"), "driver": env.get("driver")}})
    store.write_env(lane_dir, env)
    store.write_suite(lane_dir, spec.suite)

    existing = {}
    frame = store.read_results(lane_dir)
    if not frame.empty:  # a requeued job (preemption) keeps what it had finished
        frame = frame.astype(object).where(frame.notna(), None)
        existing = {str(r["case_key"]): dict(r) for r in frame.to_dict("records")}
    state = RunState(lane_dir, cases, existing)
    todo = [c for c in cases if c.key() not in existing]
    to_run = []
    for case in todo:
        reason = unsupported_reason(case)
        if reason:
            state.add(case, "unsupported", reason, threads, 0.0, {})
        else:
            to_run.append(case)

    calib = Calibration(steps_needed(suite.metric_options), spec.timeout_s)

    def options(case) -> dict[str, Any]:
        return {m: (o.model_dump(mode="json") if o is not None else None) for m, o in suite.metric_options_for(case).items()}

    def jobs():
        for case in to_run:
            skip = calib.skip(case)
            if skip:
                state.add(case, skip[0], skip[1], threads, 0.0, static_columns(suite, case))
                continue
            yield case, Job(case=case.to_dict(), metrics=suite.metrics, options=options(case),
                            env={"matmul_peak_gflops": peaks})

    def on_done(case, outcome: Outcome) -> None:
        cols = outcome.columns
        if outcome.status != "ok":
            cols = {**static_columns(suite, case), **cols}
        state.add(case, outcome.status, outcome.error, threads, round(outcome.wall_s, 3), cols, outcome.samples)
        calib.record(case, outcome)

    runner = LocalExecutor(
        WorkerInit(threads=threads, max_memory_gb=spec.max_memory_gb, imports=spec.imports,
                   log_path=str(lane_dir / "worker.log")),
        workers=1, timeout_s=spec.timeout_s, jobs_per_worker=spec.cases_per_worker)
    runner.run(jobs(), lambda case: None, on_done)
    state.flush()
    return {"lane": lane.name, "rows": len(state.rows), "host": socket.gethostname()}
