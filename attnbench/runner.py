"""Run a suite: expand it, skip what cannot run (saying why), measure the rest in workers, store rows.

Why it is built this way:
- Every case ends as exactly one row, whatever happens: ``ok``, ``oom`` (predicted or real),
  ``unsupported`` (device absent, kernel missing), ``timeout`` (predicted lower bound or killed),
  ``error`` (anything else, one line; the traceback is in ``worker.log``).
- ``results.csv`` is rewritten atomically after every case and samples are appended, so Ctrl-C or a
  kill -9 loses at most the case in flight, and ``--resume RUN_DIR`` runs only the missing cases.
- Environment and the matmul peaks are measured once per run, in the parent, before any case.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from .console import make_console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import UserError, devices, store
from .case import Case
from .cluster import lost_row
from .executor import LocalExecutor, Outcome
from .model_case import mechanism_names
from .predict import Prediction, predict, skip_reason, steps_needed
from .resume import INFERRED, resumable_rows, seed_calibration
from .results_schema import SAMPLE_SERIES
from .rounds import RoundCollector, round_budget
from .runguard import guarded_run
from .suite import Suite
from .worker import Job, WorkerInit

@dataclass
class Plan:
    """What a run will do with each case: run it, or write a row for it right away."""

    cases: list[Case]
    predictions: dict[str, Prediction] = field(default_factory=dict)
    skips: dict[str, tuple[str, str]] = field(default_factory=dict)  # case key -> (status, reason)


class Calibration:
    """Skip a case whose cost the same configuration at a smaller size already rules out.

    Cost grows with the token count, so once a configuration (everything but the size) hit
    ``timeout`` or ``oom`` at some size, larger sizes are skipped with that status; and a size whose
    step time, extrapolated from the largest measured size by the analytic MACs ratio, makes the
    case exceed ``limits.timeout_s`` is skipped as ``timeout``. The row says which measurement the
    decision came from. Cases run in the suite's order (sizes ascending as listed), so the smaller
    sizes are measured first.
    """

    def __init__(self, steps: int, timeout_s: float) -> None:
        self.steps = max(steps, 1)
        self.timeout_s = timeout_s
        self.failed: dict[tuple, tuple[str, Case]] = {}
        self.measured: dict[tuple, tuple[Case, int, float]] = {}  # config -> (case, macs, step seconds)

    @staticmethod
    def config(case: Case) -> tuple:
        return (case.mechanism, case.label, case.options, case.batch_size, case.dim, case.num_heads, case.dtype,
                case.device, case.mode, case.task)

    def record(self, case: Case, outcome: Outcome) -> None:
        key = self.config(case)
        if outcome.status in ("timeout", "oom"):
            prev = self.failed.get(key)
            if prev is None or case.tokens < prev[1].tokens:
                self.failed[key] = (outcome.status, case)
        latency = outcome.columns.get("latency_ms")
        macs = outcome.columns.get("macs")
        if outcome.status == "ok" and latency and macs:
            prev = self.measured.get(key)
            if prev is None or case.tokens >= prev[0].tokens:
                self.measured[key] = (case, int(macs), latency / 1e3)

    def skip(self, case: Case) -> tuple[str, str] | None:
        key = self.config(case)
        failed = self.failed.get(key)
        if failed and case.tokens >= failed[1].tokens:
            status, small = failed
            return status, f"{INFERRED}the same configuration at {small.height}x{small.width} already ended in {status}"
        measured = self.measured.get(key)
        if measured and case.tokens > measured[0].tokens:
            small, macs, step_s = measured
            est = step_s * predict(case).macs / max(macs, 1)
            if self.steps * est > self.timeout_s:
                return "timeout", (f"{INFERRED}{self.steps} steps x ~{est:.0f} s (step time measured at {small.height}x"
                                   f"{small.width}, scaled by analytic MACs) > limits.timeout_s={self.timeout_s:g}")
        return None


def matmul_peaks(device: str, dtypes: list[str], threads: int, quick: bool = False) -> dict[str, float]:
    from .case import DTYPES

    old = torch.get_num_threads()
    try:
        return {d: devices.matmul_peak_gflops(device, DTYPES[d], threads, min_run_time=0.05 if quick else 0.2)
                for d in dtypes}
    finally:
        torch.set_num_threads(old)


def worker_imports(cases: list[Case], metrics: list[str]) -> tuple[str, ...]:
    """Modules a spawned worker must import so every case's mechanism and metric is registered there
    too (third-party plugins, test-only ones); the built-ins register on import of their packages."""
    import mechanisms

    from . import metrics as metric_registry

    mods = {mechanisms.get(name).__module__ for c in cases for name in mechanism_names(c)}
    mods |= {metric_registry.get(m).module for m in metrics if m not in metric_registry.BUILTIN}
    return tuple(sorted(m for m in mods if not m.startswith(("mechanisms.", "attnbench.")) and m != "__main__"))


def unsupported_reason(case: Case) -> str | None:
    """Why the case cannot run here: the device is absent, or the mechanism says its backend cannot
    (for flex also the configuration: Slide's learnable branch has no exact flex form)."""
    from .backend_support import case_unavailable_reason

    return devices.unavailable_reason(case.device) or case_unavailable_reason(case)


def plan(suite: Suite, cases: list[Case], peaks: dict[str, dict[str, float]], check_devices: bool = True) -> Plan:
    """Predict every case and decide which ones are skipped, and why (``check_devices=False``: whether
    a case can run is decided where it runs, e.g. on a cluster node)."""
    p = Plan(cases=cases)
    limits = suite.model.limits
    for case in cases:
        key = case.key()
        reason = unsupported_reason(case) if check_devices else None
        if reason:
            p.skips[key] = ("unsupported", reason)
            continue
        # The time bound uses the device's best peak over all dtypes: kernels may compute in another
        # precision than their inputs (CPU SDPA accumulates bf16 in fp32 at near-fp32 speed).
        pred = predict(case, max(peaks.get(case.device, {}).values(), default=None))
        p.predictions[key] = pred
        skip = skip_reason(case, pred, suite.metric_options_for(case), limits.max_memory_gb, limits.timeout_s)
        if skip:
            p.skips[key] = skip
    return p


def static_columns(suite: Suite, case: Case) -> dict[str, Any]:
    """Columns the suite's metrics know without running (``Metric.static``: MACs, parameter counts)."""
    from . import metrics as metric_registry

    cols: dict[str, Any] = {}
    for name in suite.metrics:
        static = metric_registry.get(name).static
        if static is not None:
            cols.update(static(case))
    return cols


class RunState:
    """Rows of a run in case order, persisted after every change."""

    def __init__(self, run_dir: Path, cases: list[Case], existing: dict[str, dict[str, Any]]) -> None:
        self.run_dir = run_dir
        self.order = [c.key() for c in cases]
        self.rows: dict[str, dict[str, Any]] = dict(existing)

    def add(self, case: Case, status: str, error: str | None, threads: int, wall_s: float | None,
            columns: dict[str, Any], samples: dict[str, list[float]] | None = None) -> dict[str, Any]:
        row = {"case_key": case.key(), **case.id_row(), "status": status, "error": error, "threads": threads,
               "wall_s": wall_s, **columns, SAMPLE_SERIES: sorted(samples) if samples else None}
        self.rows[case.key()] = row
        if samples:
            store.append_samples(self.run_dir, case.key(), case.label, samples)
        self.flush()
        return row

    def flush(self) -> None:
        keys = [k for k in self.order if k in self.rows] + [k for k in self.rows if k not in set(self.order)]
        store.write_results(self.run_dir, [self.rows[k] for k in keys])


def prepare_run_dir(suite: Suite, out: Path, device: str, resume: Path | None) -> Path:
    if resume is None:
        return store.create_run_dir(out, suite.name, device)
    resume = Path(resume)
    if not resume.is_dir():
        raise UserError(f"--resume {resume}: no such run directory")
    if not (resume / store.SUITE_YAML).exists() and not (resume / store.RESULTS_CSV).exists():
        raise UserError(f"--resume {resume}: not a run directory (no {store.SUITE_YAML}); pass results/<suite>/<run-id>")
    previous = store.load_run(resume).suite.get("name")
    if previous and previous != suite.name:
        raise UserError(f"--resume {resume}: that run is of suite {previous!r}, not {suite.name!r}; pass the same suite")
    return resume


def run_suite(suite: Suite, out: Path | str = "results", device: str | None = None, resume: Path | str | None = None,
              console: Console | None = None, executor: Any = None) -> Path:
    """Run every case of ``suite``; returns the run directory. Ctrl-C keeps what has finished; a
    write fault (full disk...) ends the run with one line and the resume command (``runguard``)."""
    with guarded_run(suite.path, resume):
        return _run_suite(suite, out, device, resume, console, executor)


def _record_environment(suite: Suite, run_dir: Path, devs: list[str], dtypes: list[str], threads: int,
                        resume: bool) -> dict[str, dict[str, float]]:
    """Measure (or, on resume, complete) the matmul peaks of every device and write env.json and
    suite.yaml; returns the peaks ({device: {dtype: GFLOP/s}}), measured once per run, in the parent."""
    env = store.read_env(run_dir) if resume else {}
    peaks: dict[str, dict[str, float]] = dict(env.get("matmul_peak_gflops_by_device") or {})
    for dev in devs:
        if devices.is_available(dev):
            have = peaks.setdefault(dev, {})
            missing = [d for d in dtypes if d not in have]
            if missing:
                have.update(matmul_peaks(dev, missing, threads))
    if not env:
        env = devices.capture_env(devs[0], threads)
    env["threads"] = threads
    env["matmul_peak_gflops"] = peaks.get(devs[0], {})
    env["matmul_peak_gflops_by_device"] = peaks
    store.write_env(run_dir, env)
    store.write_suite(run_dir, suite.as_dict())
    return peaks


def _executor_for(suite: Suite, executor: Any, run_dir: Path, to_run: list[Case], threads: int,
                  console: Console) -> Any:
    """The executor that measures the cases: the caller's (bound to this run when it needs it, as the
    submitit job array does), or local worker processes."""
    limits = suite.model.limits
    init = WorkerInit(threads=threads, max_memory_gb=limits.max_memory_gb, imports=worker_imports(to_run, suite.metrics),
                      log_path=str(run_dir / "worker.log"))
    if hasattr(executor, "bind"):
        return executor.bind(init=init, run_dir=run_dir, suite=suite, console=console)
    return executor or LocalExecutor(init, workers=suite.model.workers, timeout_s=limits.timeout_s,
                                     jobs_per_worker=suite.model.cases_per_worker)


def _write_skipped(state: "RunState", suite: Suite, todo: list[Case], the_plan: Plan, threads: int) -> list[Case]:
    """Write the row of every case the plan skips (with the costs known from shapes, unless the case
    cannot run here at all); returns the cases left to run, in order."""
    for case in todo:
        if case.key() in the_plan.skips:
            status, reason = the_plan.skips[case.key()]
            state.add(case, status, reason, threads, 0.0,
                      static_columns(suite, case) if status != "unsupported" else {})
    state.flush()
    return [c for c in todo if c.key() not in the_plan.skips]


def _stop_interrupted(console: Console, suite: Suite, run_dir: Path) -> None:
    console.print(f"[red]interrupted[/red]: finished rows are in {run_dir / store.RESULTS_CSV}; continue with\n"
                  f"  attnbench run {suite.path or '<suite>'} --resume {run_dir}")
    raise KeyboardInterrupt


def _run_suite(suite: Suite, out: Path | str = "results", device: str | None = None, resume: Path | str | None = None,
               console: Console | None = None, executor: Any = None) -> Path:
    console = console or make_console(stderr=True)
    remote = bool(getattr(executor, "checks_devices_remotely", False))  # Slurm: the devices are on the nodes
    if remote:
        devs = executor.resolve_devices(suite.model.device, device)
    else:
        devs = devices.resolve_devices(suite.model.device, device)
    cases = suite.expand(devs)
    threads = suite.threads
    dtypes = sorted({c.dtype for c in cases} | {"float32"})
    run_dir = prepare_run_dir(suite, Path(out), devs[0], Path(resume) if resume else None)

    peaks = _record_environment(suite, run_dir, devs, dtypes, threads, bool(resume))

    say = lambda msg: console.print(msg, style="yellow", markup=False, soft_wrap=True)  # noqa: E731
    existing = resumable_rows(run_dir, say) if resume else {}
    state = RunState(run_dir, cases, existing)
    existing = {k: r for k, r in existing.items() if not lost_row(r)}  # cases a dead job never ran: again
    todo = [c for c in cases if c.key() not in existing]
    the_plan = plan(suite, todo, peaks, check_devices=not remote)
    to_run = _write_skipped(state, suite, todo, the_plan, threads)

    limits = suite.model.limits
    runner = _executor_for(suite, executor, run_dir, to_run, threads, console)
    rounds = int(getattr(suite.metric_options.get("time"), "rounds", 1))
    collector = RoundCollector()

    def options(case: Case) -> dict[str, Any]:
        """Metric options of the grid the case comes from (the top level or an ``include:`` block)."""
        opts = {m: (o.model_dump(mode="json") if o is not None else None) for m, o in suite.metric_options_for(case).items()}
        if rounds > 1 and opts.get("time"):
            opts["time"]["min_run_time"] = round_budget(opts["time"]["min_run_time"], rounds)
        return opts

    calib = Calibration(steps_needed(suite.metric_options), limits.timeout_s)
    seed_calibration(calib, cases, existing)  # a resumed run infers skips from the rows it kept

    def jobs():
        """Yield the cases still worth running; write a row for those the measured cost rules out."""
        for case in to_run:
            skip = calib.skip(case)
            if skip:
                state.add(case, skip[0], skip[1], threads, 0.0, static_columns(suite, case))
                progress.advance(task, rounds)
                continue
            env = {"matmul_peak_gflops": peaks.get(case.device, {})}
            yield case, Job(case=case.to_dict(), metrics=suite.metrics, options=options(case), env=env)
        for r in range(1, rounds):  # timing.rounds: the later rounds time the cases whose first round was ok
            for case in to_run:
                if collector.count(case.key()) == r:
                    env = {"matmul_peak_gflops": peaks.get(case.device, {})}
                    yield (case, r), Job(case=case.to_dict(), metrics=["time"], options=options(case), env=env)

    console.print(f"[bold]attnbench[/bold] {suite.name}: {len(cases)} cases ({len(existing)} already done, "
                  f"{len(the_plan.skips)} skipped, {len(to_run)} to run) -> {run_dir}")
    interrupted = False
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("starting", total=len(to_run) * rounds)

        def on_start(tag: Any) -> None:
            case = tag[0] if isinstance(tag, tuple) else tag
            progress.update(task, description=f"[cyan]{case.describe()}[/cyan]")

        def on_done(tag: Any, outcome: Outcome) -> None:
            case = tag[0] if isinstance(tag, tuple) else tag
            cols, samples = outcome.columns, outcome.samples
            if outcome.status != "ok":
                cols = {**static_columns(suite, case), **cols}
                if isinstance(tag, tuple):  # a later round failed: keep the earlier rounds' numbers
                    cols = {**collector.snapshot(case.key())[0], **cols}
                progress.advance(task, rounds - 1 - (tag[1] if isinstance(tag, tuple) else 0))
            elif rounds > 1:
                cols, samples = collector.add(case.key(), cols, samples)
            state.add(case, outcome.status, outcome.error, threads, round(outcome.wall_s, 3), cols, samples)
            if not isinstance(tag, tuple):
                calib.record(case, outcome)
            progress.advance(task)
            if outcome.status != "ok":
                progress.console.print(f"  [yellow]{outcome.status}[/yellow] {case.describe()}: {outcome.error}")

        try:
            runner.run(jobs(), on_start, on_done)
        except KeyboardInterrupt:
            interrupted = True
    state.flush()
    if interrupted:
        _stop_interrupted(console, suite, run_dir)
    return run_dir


def dry_run(suite: Suite, device: str | None = None, console: Console | None = None) -> Plan:
    """Print the cases with predicted MACs, memory and a time estimate; run nothing, write nothing."""
    from .summary import print_plan

    startup = (time.time() - _process_start_time()) / suite.model.cases_per_worker
    console = console or make_console()
    devs = devices.resolve_devices(suite.model.device, device)
    cases = suite.expand(devs)
    threads = suite.threads
    dtypes = sorted({c.dtype for c in cases} | {"float32"})
    peaks = {d: matmul_peaks(d, dtypes, threads, quick=True) for d in devs if devices.is_available(d)}
    the_plan = plan(suite, cases, peaks)
    print_plan(suite, the_plan, peaks, startup, console)
    return the_plan


def _process_start_time() -> float:
    """When this interpreter started: time since then (imports, suite validation) is a measured
    stand-in for a worker's start-up cost, which imports the same libraries."""
    try:
        import psutil

        return psutil.Process(os.getpid()).create_time()
    except Exception:  # psutil missing or restricted: no start-up estimate
        return time.time()
