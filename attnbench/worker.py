"""What runs inside a worker process: set the process up once, then measure cases sent to it.

Why a separate process per case (or per few cases): an out-of-memory, a segfault in a kernel or a
hang must cost one row, not the sweep; a fresh process also gives every case a clean allocator
(timm#955: later models in one process get fragmented CUDA memory and slower cuDNN algorithms).
Everything here must be importable by a ``spawn``-ed interpreter: plain functions, plain data.
"""
from __future__ import annotations

import importlib
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

GIB = 2**30
CPU_ALLOC_FAILURE = "DefaultCPUAllocator: can't allocate memory"


@dataclass
class WorkerInit:
    """Per-process settings, the same for every case a worker runs."""

    threads: int = 1
    max_memory_gb: float | None = None  # hard cap on CPU (RLIMIT_DATA) and CUDA (memory fraction)
    imports: tuple[str, ...] = ()  # modules that register non-builtin mechanisms (plugins, tests)
    log_path: str | None = None  # stdout/stderr of the worker go here, keeping the terminal clean
    paths: tuple[str, ...] = ()  # source trees searched first for mechanisms and plugins (``ab``: one ref's tree)
    layout_seed: str | None = None  # ``ab``: shuffle the process's memory layout first (``shuffle_layout``)


@dataclass
class Job:
    """One case to measure: the case, the metrics with their option dicts, and run-level facts."""

    case: dict[str, Any]
    metrics: list[str]
    options: dict[str, dict[str, Any] | None]
    env: dict[str, Any] = field(default_factory=dict)
    # Staged (``attnbench ab``): the worker runs every metric's untimed half (``Metric.prepare``),
    # answers ``{"status": "prepared"}``, and measures only when it then receives ``GO``.
    staged: bool = False


GO = "go"  # what the parent sends a worker holding a prepared, staged job to measure it now


def _vm_data_bytes() -> int | None:
    try:
        with open("/proc/self/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _cap_cpu_memory(max_memory_gb: float) -> None:
    """Make CPU allocations past the limit fail in this process instead of swapping the machine.

    RLIMIT_DATA bounds private writable memory (Linux >= 4.7), which is where tensors live; the cap
    is the process's current data size plus the limit, so imports don't eat into the budget.
    """
    try:
        import resource
    except ImportError:  # Windows
        return
    current = _vm_data_bytes()
    if current is None:
        return
    cap = current + int(max_memory_gb * GIB)
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))


def use_source_trees(paths: tuple[str, ...]) -> None:
    """Put ``paths`` first on ``sys.path`` and forget any module of theirs already imported from elsewhere.

    ``attnbench ab`` gives each side's workers that side's checkout of ``mechanisms/`` (and plugins);
    a spawned child may already have imported the parent's copy while unpickling, so those modules
    are dropped and re-imported from the side's tree.
    """
    if not paths:
        return
    roots = [os.path.realpath(p) for p in paths]
    sys.path[:0] = roots
    tops = {name.split(".")[0] for root in roots for name in os.listdir(root)
            if name.endswith(".py") or os.path.isdir(os.path.join(root, name))}
    tops = {t[:-3] if t.endswith(".py") else t for t in tops}
    for name in list(sys.modules):
        mod = sys.modules[name]
        origin = os.path.realpath(getattr(mod, "__file__", None) or "/")
        if name.split(".")[0] in tops and not any(origin.startswith(r + os.sep) for r in roots):
            del sys.modules[name]


_LAYOUT_PADDING: list[Any] = []  # what ``shuffle_layout`` allocated, alive for the whole process


def layout_padding_sizes(seed: str) -> dict[str, Any]:
    """The random allocations ``shuffle_layout`` makes for ``seed``: a pure function, so it is tested."""
    import random

    rng = random.Random(seed)
    return {"small": [rng.randrange(1, 4096) for _ in range(rng.randrange(1, 256))],  # pymalloc and malloc
            "objects": rng.randrange(1, 4096),  # pymalloc pools
            "heap": rng.randrange(4096, 128 * 1024),  # the malloc heap, below glibc's mmap threshold
            "tensor": rng.randrange(1, 64 * 1024)}  # torch's CPU allocator


def shuffle_layout(seed: str) -> None:
    """Allocate (and keep) a seeded random set of blocks, so what is allocated afterwards lands at
    random offsets: the side's own modules (imported next), tensors, and per-call objects.

    Why: every worker is forked from the same server, so without this a worker's memory layout is
    a function of the side alone (the same imports from the same tree path, whose name is drawn once
    a session), identical in every round. Layout moves the speed of small, Python-heavy calls by
    several per cent (cache-set and alignment effects, Mytkowicz et al., "Producing wrong data without
    doing anything obviously wrong!", ASPLOS 2009), so a side could keep a fixed offset for a whole
    session that the paired rounds cannot see. Measured here with an unchanged Swin case paired with
    an injected +5 % in a two-case suite (as confirmation rounds are): 5 of 20 sessions flagged the
    unchanged case (+4.9 %, -4.8 %, -4.0 %, ...), its per-round ratios steady at one level for a whole
    session; with a layout shuffled per worker before the side's tree is imported, 0 of 24, and the
    +5 % was caught 24 of 24 (results/ab-calibration/20261205-002900-layout/).
    Shuffling turns the offset into round-to-round noise, which the interval sees (as STABILIZER
    does, Curtsinger and Berger, ASPLOS 2013). It must run before the side's tree is imported.
    """
    import torch

    sizes = layout_padding_sizes(seed)
    _LAYOUT_PADDING.extend(bytearray(n) for n in sizes["small"])
    _LAYOUT_PADDING.extend(object() for _ in range(sizes["objects"]))
    _LAYOUT_PADDING.append(bytearray(sizes["heap"]))
    _LAYOUT_PADDING.append(torch.empty(sizes["tensor"], dtype=torch.uint8))


def setup_process(init: WorkerInit) -> None:
    import signal

    if init.layout_seed is not None:
        shuffle_layout(init.layout_seed)
    use_source_trees(init.paths)

    # Ctrl-C reaches the whole process group; only the parent decides (it kills workers and keeps
    # finished rows). A worker dying of SIGINT would otherwise be recorded as a failed case.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if init.log_path:
        fd = os.open(init.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"fvcore.*|iopath.*")
    import torch

    torch.set_num_threads(init.threads)
    for name in init.imports:
        importlib.import_module(name)
    import mechanisms  # noqa: F401  (registers the built-ins)

    if init.max_memory_gb:
        _cap_cpu_memory(init.max_memory_gb)
        if torch.cuda.is_available():
            total = torch.cuda.get_device_properties(0).total_memory
            fraction = init.max_memory_gb * GIB / total
            if fraction < 1:
                torch.cuda.set_per_process_memory_fraction(fraction)


def is_oom(exc: BaseException) -> bool:
    """Out of memory, by type (CUDA, MPS) -- or, on CPU, by the allocator's message, since torch
    raises a plain RuntimeError there (there is no distinct type to catch)."""
    import torch

    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and CPU_ALLOC_FAILURE in str(exc)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 400:
        text = text[:397] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _failure(name: str, exc: BaseException) -> tuple[str, str]:
    """(status, error) of a metric that raised."""
    if isinstance(exc, NotImplementedError):
        return "unsupported", f"{name}: {one_line(exc)}"
    if is_oom(exc):
        return "oom", f"{name}: {one_line(exc)}"
    traceback.print_exc()  # into the worker log, for whoever debugs it
    return "error", f"{name}: {one_line(exc)}"


def _contexts(job: Job, threads: int) -> list[tuple[str, Any, Any]]:
    """(name, metric, context) for each metric of the job, in order."""
    import torch

    from . import metrics as metric_registry
    from .metrics import MetricContext
    from .model_case import case_from_dict

    case = case_from_dict(job.case)
    out = []
    for name in job.metrics:
        metric = metric_registry.get(name)
        out.append((name, metric, MetricContext(case=case, options=metric.make_options(job.options.get(name)),
                                                device=torch.device(case.device), dtype=case.torch_dtype,
                                                threads=threads, env=job.env)))
    return out


def _run_metrics(parts: list[tuple[str, Any, Callable[[], dict[str, Any]]]]) -> dict[str, Any]:
    """Call each metric's measuring call in order, stopping at the first failure; never raises."""
    columns: dict[str, Any] = {}
    samples: dict[str, list[float]] = {}
    status, error = "ok", None
    for name, ctx, call in parts:
        try:
            columns.update(call())
        except Exception as exc:
            status, error = _failure(name, exc)
        finally:
            samples.update(ctx.samples)
        if status != "ok":
            break
    return {"status": status, "error": error, "columns": columns, "samples": samples}


def run_job(job: Job, threads: int) -> dict[str, Any]:
    """Measure one case with every metric; never raises. Returns {status, error, columns, samples}."""
    return _run_metrics([(name, ctx, lambda m=metric, c=ctx: m.measure(c)) for name, metric, ctx in _contexts(job, threads)])


def prepare_job(job: Job, threads: int) -> tuple[Callable[[], dict[str, Any]] | None, dict[str, Any] | None]:
    """A staged job's untimed half: (call that measures, None), or (None, the failure's result)."""
    parts = []
    for name, metric, ctx in _contexts(job, threads):
        try:
            if metric.prepare is None:
                raise ValueError(f"metric {name!r} has no prepare half, so it cannot run in a staged job")
            parts.append((name, ctx, metric.prepare(ctx)))
        except Exception as exc:
            status, error = _failure(name, exc)
            return None, {"status": status, "error": error, "columns": {}, "samples": dict(ctx.samples)}
    return (lambda: _run_metrics(parts)), None


def worker_main(conn: Any, init: WorkerInit, max_jobs: int) -> None:
    """Process entry point: set up, then answer jobs until told to stop or ``max_jobs`` are done."""
    from .lifeline import tie_to_parent

    tie_to_parent()  # first: a worker whose parent is gone must not go on computing
    setup_process(init)
    conn.send("ready")  # the parent starts a job's clock from here: imports are not the case's time
    done = 0
    while done < max_jobs:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        start = time.perf_counter()
        if getattr(job, "staged", False):
            finish, result = prepare_job(job, init.threads)
            if finish is not None:
                prepared_s = time.perf_counter() - start
                conn.send({"status": "prepared", "wall_s": prepared_s})
                try:
                    go = conn.recv()
                except EOFError:
                    return
                if go != GO:  # None (stop) or anything else: the prepared case is dropped
                    return
                start = time.perf_counter() - prepared_s  # wall_s: the case's own time, not the wait for GO
                result = finish()
        else:
            result = run_job(job, init.threads)
        result["wall_s"] = time.perf_counter() - start
        sys.stdout.flush()
        sys.stderr.flush()
        conn.send(result)
        done += 1
