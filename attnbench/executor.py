"""Executors: run jobs in isolated worker processes and turn every way a job can end into a result.

Why an interface: today cases run in local ``spawn``-ed processes; later the same ``run(jobs)``
contract can be met by a cluster engine (submitit's Slurm executor, with its local executor in
tests) to shard a sweep over many GPUs. A result is plain data, so runs stay mergeable.

``LocalExecutor`` keeps ``workers`` processes busy. Each job has a wall-clock budget; a worker that
overruns it is killed (status ``timeout``), one that dies is reported from its exit signal
(``SIGKILL`` is ``oom`` only when a kernel OOM-kill counter rose while it ran, see ``lifeline``;
otherwise, like anything else, ``error``), and the
next job gets a fresh process. A worker is recycled after ``jobs_per_worker`` jobs and after any
failure, so one case's state cannot leak into another's numbers. A job's clock starts when its
worker is ready (imports done), so start-up on a busy machine never counts against ``timeout_s``.
"""
from __future__ import annotations

import multiprocessing as mp
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from .lifeline import oom_counters, oom_evidence
from .resume import KILLED
from .worker import Job, WorkerInit, worker_main


@dataclass
class Outcome:
    """How a job ended: ``status`` in ok|oom|unsupported|timeout|error, plus what it measured."""

    status: str
    error: str | None
    columns: dict[str, Any]
    samples: dict[str, list[float]]
    wall_s: float


class Executor(Protocol):
    def run(self, jobs: Iterable[tuple[Any, Job]], on_start: Callable[[Any], None],
            on_done: Callable[[Any, Outcome], None]) -> None: ...


class _Slot:
    """One worker process and the job it is running."""

    def __init__(self, ctx: mp.context.BaseContext, init: WorkerInit, jobs_per_worker: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(child, init, jobs_per_worker), daemon=True)
        self.proc.start()
        child.close()
        self.jobs_left = jobs_per_worker
        self.tag: Any = None
        self.started = 0.0
        self.oom_before: dict[str, int] = {}  # OOM-kill counters when its job started

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=10)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, BrokenPipeError):
            pass
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.kill()
        else:
            self.conn.close()


def _log_tail(path: str | None) -> str:
    if not path or not Path(path).exists():
        return ""
    lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines()[-20:] if ln.strip()]
    lines = [ln for ln in lines if "USDT" not in ln]
    return lines[-1][:300] if lines else ""


def _death(exitcode: int | None, log_path: str | None, oom_before: dict[str, int] | None = None) -> tuple[str, str]:
    """(status, reason) for a worker that died without answering."""
    tail = _log_tail(log_path)
    tail = f"; last log line: {tail}" if tail else ""
    if exitcode is not None and exitcode < 0:
        sig = signal.Signals(-exitcode).name if -exitcode in signal.Signals._value2member_map_ else str(-exitcode)
        if -exitcode == signal.SIGKILL:
            evidence = oom_evidence(oom_before) if oom_before else None
            if evidence:
                return "oom", f"worker killed by the kernel OOM killer ({evidence}){tail}"
            why = "no OOM-kill counter rose while it ran" if oom_before else "no OOM-kill counter is readable here"
            return "error", f"{KILLED}, not by the kernel OOM killer ({why}); --resume runs it again{tail}"
        return "error", f"worker crashed with {sig}{tail}"
    return "error", f"worker exited with code {exitcode} before reporting{tail}"


class LocalExecutor:
    """Jobs in ``workers`` local spawn-ed processes, each job limited to ``timeout_s`` seconds."""

    def __init__(self, init: WorkerInit, workers: int = 1, timeout_s: float = 600.0, jobs_per_worker: int = 1,
                 poll_s: float = 0.5) -> None:
        self.init = init
        self.workers = workers
        self.timeout_s = timeout_s
        self.jobs_per_worker = max(1, jobs_per_worker)
        self.poll_s = poll_s
        self._ctx = mp.get_context("spawn")

    def run(self, jobs: Iterable[tuple[Any, Job]], on_start: Callable[[Any], None],
            on_done: Callable[[Any, Outcome], None]) -> None:
        # Jobs are pulled lazily, one when a worker is free, so the caller may decide about later jobs
        # from the outcomes of earlier ones (skip 224² once 112² timed out).
        source = iter(jobs)
        exhausted = False
        idle: list[_Slot] = []
        busy: list[_Slot] = []
        try:
            while not exhausted or busy:
                while not exhausted and len(busy) < self.workers:
                    nxt = next(source, None)
                    if nxt is None:
                        exhausted = True
                        break
                    tag, job = nxt
                    slot = idle.pop() if idle else _Slot(self._ctx, self.init, self.jobs_per_worker)
                    slot.tag, slot.started = tag, time.monotonic()
                    slot.oom_before = oom_counters()
                    on_start(tag)
                    try:
                        slot.conn.send(job)
                    except OSError:  # the worker died while starting; _check reports how
                        pass
                    busy.append(slot)
                ready = wait([s.conn for s in busy] + [s.proc.sentinel for s in busy], timeout=self.poll_s)
                now = time.monotonic()
                for slot in list(busy):
                    outcome, reuse = self._check(slot, ready, now)
                    if outcome is None:
                        continue
                    busy.remove(slot)
                    slot.jobs_left -= 1
                    if reuse and slot.jobs_left > 0 and slot.proc.is_alive():
                        idle.append(slot)
                    elif reuse:
                        slot.stop()
                    else:
                        slot.kill()
                    on_done(slot.tag, outcome)
        finally:  # Ctrl-C or an error in a callback: no orphaned workers
            for slot in busy:
                slot.kill()
            for slot in idle:
                slot.stop()

    def _check(self, slot: _Slot, ready: list[Any], now: float) -> tuple[Outcome | None, bool]:
        if slot.conn in ready or slot.conn.poll():
            try:
                res = slot.conn.recv()
            except (EOFError, OSError):
                res = None
            if res == "ready":  # a fresh worker finished its imports: the job's clock starts now
                slot.started = now
                res = None
            elif res is not None:
                ok = res["status"] == "ok"
                return Outcome(res["status"], res["error"], res["columns"], res["samples"], res["wall_s"]), ok
        elapsed = now - slot.started
        if not slot.proc.is_alive() or slot.proc.sentinel in ready:
            slot.proc.join(timeout=5)
            status, reason = _death(slot.proc.exitcode, self.init.log_path, slot.oom_before)
            return Outcome(status, reason, {}, {}, elapsed), False
        if elapsed > self.timeout_s:
            return Outcome("timeout", f"case did not finish within limits.timeout_s={self.timeout_s:g} s; worker killed",
                           {}, {}, elapsed), False
        return None, True
