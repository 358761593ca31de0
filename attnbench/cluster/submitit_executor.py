"""The submitit executor: the ``Executor.run(jobs, on_start, on_done)`` contract met by a job array.

The runner hands over every case still to run (after its own skips); this executor plans shards
(``plan.make_plan``), submits one job array per (device, GPUs per job), then watches the lane
directories the jobs write (``shard.run_lane``) and reports every new row through ``on_done``, so
the runner's ``RunState`` writes the merged ``results.csv`` and ``samples.jsonl`` exactly as for a
local run, with the same progress bar. A job that ends with cases unfinished (preempted, node
failure, job time limit, an exception in the job) turns each of them into a row whose error starts
with ``scheduler:`` and names the job's state, its exception and the tail of its log; ``--resume``
runs exactly those again (``cluster.lost_row``). Each submission goes to a new
``shards/a<N>/`` folder, so a resume never overwrites the lanes of an earlier attempt.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from rich.console import Console

from .. import UserError, store
from ..executor import Outcome
from ..worker import Job, WorkerInit
from . import SCHEDULER_PREFIX, ClusterOptions, require_submitit
from .plan import Shard, make_plan
from .shard import LaneSpec, ShardSpec, run_shard

ROW_KEYS = ("case_key", "status", "error", "threads", "wall_s")
_UNSET = object()


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _tail(text: str | None, lines: int = 3) -> str:
    if not text:
        return ""
    keep = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(keep[-lines:])


def _reason(exc: BaseException | None) -> str:
    """One line from what submitit says about a job: the exception of a job that raised (the last line
    of its traceback), or the summary of a job that ended without a result (the first line)."""
    if exc is None:
        return "no exception recorded"
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    if len(lines) == 1:
        return f"{type(exc).__name__}: {lines[0]}"
    if any(ln.startswith("Traceback") for ln in lines):
        return lines[-1]
    head = []
    for ln in lines:  # submitit's UncompletedJobError: a summary, then the job's error stream
        if ln.startswith(("Error stream produced", "No error stream produced", "---")):
            break
        head.append(ln)
    return " ".join(head)


def _job_lines(text: str | None) -> str:
    """A job's log without submitit's own start-up lines."""
    return "\n".join(ln for ln in (text or "").splitlines() if ln.strip() and not ln.startswith("submitit "))


def remote_devices(requested: list[str] | str, override: str | None, gpus_per_job: int | None) -> list[str]:
    """Devices of a Slurm run, resolved without looking at this (login) machine: ``auto`` is ``cuda``
    unless the jobs get no GPU (``--gpus-per-job 0``), and a device is not required to exist here."""
    items = [override] if override else (requested if isinstance(requested, list) else [requested])
    auto = "cpu" if gpus_per_job == 0 else "cuda"
    out: list[str] = []
    for d in items:
        dev = auto if d == "auto" else d
        if dev not in out:
            out.append(dev)
    return out


class SubmititExecutor:
    """Run the jobs of ``run_suite`` as a submitit job array; see the module docstring."""

    def __init__(self, options: ClusterOptions, console: Console | None = None) -> None:
        self.opts = options
        self.console = console
        self.init: WorkerInit | None = None
        self.run_dir: Path | None = None
        self.suite: Any = None

    @property
    def checks_devices_remotely(self) -> bool:
        """On Slurm the parent is a login node: device checks and peaks happen in the jobs."""
        return self.opts.cluster == "slurm"

    def resolve_devices(self, requested: list[str] | str, override: str | None) -> list[str]:
        return remote_devices(requested, override, self.opts.gpus_per_job)

    def bind(self, *, init: WorkerInit, run_dir: Path, suite: Any, console: Console | None = None) -> "SubmititExecutor":
        self.init, self.run_dir, self.suite = init, Path(run_dir), suite
        self.console = console or self.console
        return self

    # ---------------------------------------------------------------------------- submission
    def _attempt_dir(self) -> Path:
        root = self.run_dir / "shards"
        root.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            path = root / f"a{n}"
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return path
        raise UserError(f"{root}: too many attempts")  # pragma: no cover

    def _specs(self, plan: list[Shard], attempt: Path) -> list[ShardSpec]:
        """What each job needs, as plain data; the job derives each case's metric options from the suite."""
        from ..runner import worker_imports

        limits = self.suite.model.limits
        # A job validates the whole suite, so it imports the modules of every mechanism, not only its own.
        imports = tuple(sorted(set(self.init.imports) | set(worker_imports(
            self.suite.expand(sorted({s.device for s in plan})), self.suite.metrics))))
        return [ShardSpec(
            index=s.index, gpus=s.gpus,
            lanes=[LaneSpec(ln.name, str(attempt / ln.name), ln.device, [c.key() for c in ln.cases]) for ln in s.lanes],
            suite=self.suite.as_dict(), imports=imports, threads=self.init.threads,
            max_memory_gb=self.init.max_memory_gb, timeout_s=limits.timeout_s,
            cases_per_worker=self.suite.model.cases_per_worker, sys_path=list(sys.path)) for s in plan]

    def _executor(self, folder: Path, shard: Shard) -> Any:
        submitit = require_submitit()
        if self.opts.cluster == "slurm" and not shutil.which("sbatch"):
            raise UserError("--cluster slurm: no Slurm here (sbatch is not on PATH); submit from a login node of the "
                            "cluster, use --cluster local to test on this machine, or --dry-run to see the plan")
        ex = submitit.AutoExecutor(folder=folder, cluster=self.opts.cluster)
        params: dict[str, Any] = {
            "name": f"attnbench-{self.suite.name}", "timeout_min": int(round(self.opts.job_timeout_min)),
            "tasks_per_node": max(1, shard.gpus), "cpus_per_task": self.init.threads,
        }
        if shard.gpus:
            params["gpus_per_node"] = shard.gpus
        if self.opts.cluster == "slurm":
            if self.opts.partition:
                params["slurm_partition"] = self.opts.partition
            if self.opts.max_parallel:
                params["slurm_array_parallelism"] = self.opts.max_parallel
            if shard.device == "cpu":  # a CPU timing lane must not share its socket with another job
                params["slurm_exclusive"] = True
        ex.update_parameters(**params)
        return ex

    # ------------------------------------------------------------------------------- watching
    def run(self, jobs: Iterable[tuple[Any, Job]], on_start: Callable[[Any], None],
            on_done: Callable[[Any, Outcome], None]) -> None:
        if self.run_dir is None:
            raise RuntimeError("SubmititExecutor.run before bind(): run_suite binds it to the run directory")
        items = list(jobs)
        if not items:
            return
        plan = make_plan([c for c, _ in items], self.opts.shards, self.opts.gpus_per_job)
        attempt = self._attempt_dir()
        specs = self._specs(plan, attempt)
        store.atomic_write_text(attempt / "plan.json", json.dumps(
            [{"shard": s.index, "device": s.device, "gpus": s.gpus,
              "lanes": {ln.name: [c.key() for c in ln.cases] for ln in s.lanes}} for s in plan], indent=1) + "\n")
        groups: dict[tuple[str, int], list[int]] = {}
        for s in plan:
            groups.setdefault((s.device, s.gpus), []).append(s.index)
        submitted: dict[int, Any] = {}
        for (_, _), idx in groups.items():
            ex = self._executor(attempt / "submitit", plan[idx[0]])
            try:
                array = ex.map_array(run_shard, [specs[i] for i in idx])
            except Exception as exc:  # sbatch refused (partition, account, limits): say what it said
                for job in submitted.values():
                    job.cancel(check=False)
                raise UserError(f"submitting the job array to {self.opts.cluster} failed: "
                                f"{_one_line(str(exc))}") from None
            for i, job in zip(idx, array):
                submitted[i] = job
        self._say(f"submitted {len(plan)} shard(s) to {self.opts.cluster} as {len(groups)} job array(s) "
                  f"({', '.join(str(j.job_id) for j in submitted.values())}); lanes in {attempt}")
        cases = {c.key(): c for c, _ in items}
        seen: set[str] = set()
        records: list[dict[str, Any]] = []
        pending = dict(submitted)
        try:
            while pending:
                for i, job in list(pending.items()):
                    failure: Any = _UNSET
                    if self.opts.cluster == "debug":
                        # The debug executor runs the job here, in this process, exactly once: its
                        # done()/result() would run a failed job again (and open pdb).
                        failure, done = job.exception(), True
                    else:
                        done = job.done()
                    self._harvest(plan[i], attempt, cases, seen, on_start, on_done)
                    if done:
                        del pending[i]
                        records += self._finish(plan[i], job, attempt, cases, seen, on_done, failure)
                if pending:
                    time.sleep(self.opts.poll_s)
        except KeyboardInterrupt:
            for job in pending.values():
                try:
                    job.cancel(check=False)
                except Exception:  # the scheduler may be gone; Ctrl-C must still return
                    pass
            raise
        finally:
            self._record_env(attempt, records)

    def _harvest(self, shard: Shard, attempt: Path, cases: dict[str, Any], seen: set[str],
                 on_start: Callable[[Any], None], on_done: Callable[[Any, Outcome], None]) -> None:
        """Report rows the shard's lanes wrote since the last look."""
        for lane in shard.lanes:
            lane_dir = attempt / lane.name
            if not (lane_dir / store.RESULTS_CSV).exists():
                continue
            frame = store.read_results(lane_dir)
            new = [r for r in frame.astype(object).where(frame.notna(), None).to_dict("records")
                   if str(r["case_key"]) in cases and str(r["case_key"]) not in seen]
            if not new:
                continue
            samples = store.read_samples(lane_dir)
            for row in new:
                key = str(row["case_key"])
                case = cases[key]
                ident = set(case.id_row())
                columns = {k: v for k, v in row.items() if k not in ident and k not in ROW_KEYS}
                series = {name: vals for (k, name), vals in samples.items() if k == key}
                seen.add(key)
                on_start(case)
                on_done(case, Outcome(str(row["status"]), row.get("error"), columns, series,
                                      float(row.get("wall_s") or 0.0)))

    def _finish(self, shard: Shard, job: Any, attempt: Path, cases: dict[str, Any], seen: set[str],
                on_done: Callable[[Any, Outcome], None], failure: Any = None) -> list[dict[str, Any]]:
        """Last look at a finished job; its unfinished cases become rows saying why. ``failure``:
        the job's exception when already known (``_UNSET``: ask the scheduler)."""
        self._harvest(shard, attempt, cases, seen, lambda c: None, on_done)
        if failure is _UNSET:
            state = str(getattr(job, "state", "UNKNOWN"))
        else:  # the debug executor keeps no state of its own for a job that raised
            state = "FAILED" if failure is not None else "DONE"
        lost = [c for ln in shard.lanes for c in ln.cases if c.key() not in seen]
        if lost:
            exc = failure
            if exc is _UNSET:
                try:
                    exc = job.exception()
                except Exception as err:  # noqa: BLE001  (whatever the scheduler says is the reason)
                    exc = err
            reason = _reason(exc)
            try:
                log = _tail(_job_lines(job.stderr())) or "the job's log ends without an error (killed from outside?)"
            except Exception:  # logs may not exist when the job never started
                log = ""
            status = "timeout" if "TIMEOUT" in state.upper() else "error"
            text = _one_line(f"{SCHEDULER_PREFIX}shard {shard.index} (job {job.job_id}) ended {state} before this "
                             f"case finished: {reason}" + (f"; log tail: {log}" if log else ""), 600)
            for case in lost:
                seen.add(case.key())
                on_done(case, Outcome(status, text, {}, {}, 0.0))
            self._say(f"[yellow]shard {shard.index}[/yellow] (job {job.job_id}) ended {state}: {len(lost)} case(s) "
                      f"not finished, written as {status} rows; `attnbench run ... --resume {self.run_dir}` runs them again")
        else:
            self._say(f"shard {shard.index} (job {job.job_id}) ended {state}: {len(shard.cases)} case(s) done")
        out = []
        for lane in shard.lanes:
            env = store.read_env(attempt / lane.name) if (attempt / lane.name / store.ENV_JSON).exists() else {}
            out.append({"attempt": attempt.name, "lane": lane.name, "shard": shard.index, "job_id": str(job.job_id),
                        "state": state, "cases": len(lane.cases), "lost": sum(c in lost for c in lane.cases),
                        **(env.get("shard") or {}), "fingerprint": env.get("fingerprint"),
                        "matmul_peak_gflops": env.get("matmul_peak_gflops")})
        return out

    def _record_env(self, attempt: Path, records: list[dict[str, Any]]) -> None:
        """Per-lane env records into the run's env.json; the run's fingerprint is the jobs' one."""
        if not records:
            return
        env = store.read_env(self.run_dir)
        env["shards"] = list(env.get("shards") or []) + records
        prints = [r["fingerprint"] for r in env["shards"] if r.get("fingerprint")]
        distinct = [json.loads(x) for x in dict.fromkeys(json.dumps(p, sort_keys=True) for p in prints)]
        if len(distinct) == 1:
            env["fingerprint"] = distinct[0]
            if self.checks_devices_remotely:  # the parent ran on a login node: the machine is the jobs'
                first = next(r for r in env["shards"] if r.get("fingerprint"))
                env.update({k: first.get(k) for k in ("device_name", "driver") if first.get(k) is not None})
                if first.get("matmul_peak_gflops"):
                    env["matmul_peak_gflops"] = first["matmul_peak_gflops"]
        elif distinct:
            env["fingerprint"] = distinct[0]
            env["fingerprints"] = distinct
            self._say(f"[yellow]warning[/yellow]: the jobs ran on {len(distinct)} different machines (see "
                      "env.json 'fingerprints'); their timings are not comparable with each other")
        store.write_env(self.run_dir, env)

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)
