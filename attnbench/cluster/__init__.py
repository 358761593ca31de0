"""Running a suite as a submitit job array (Slurm, or submitit's local/debug executors in tests).

``plan`` splits cases into shards and lanes, ``shard`` is what a job runs, ``submitit_executor``
submits, watches and merges. This module holds the options and the few facts the runner needs
without importing submitit (an optional dependency: ``pip install 'attnbench[slurm]'``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import UserError

# Rows a lost job wrote for its unfinished cases start with this; ``--resume`` runs them again.
SCHEDULER_PREFIX = "scheduler: "
CLUSTERS = ("slurm", "local", "debug")
EXTRA = "pip install 'attnbench[slurm]'"


@dataclass
class ClusterOptions:
    """The ``executor:`` block merged with the command line (the command line wins)."""

    cluster: str = "slurm"
    shards: int = 1
    partition: str | None = None
    gpus_per_job: int | None = None
    max_parallel: int | None = None
    job_timeout_min: float = 120.0
    poll_s: float = 1.0


def resolve_options(block: Any, cli: dict[str, Any]) -> tuple[str, ClusterOptions]:
    """(executor kind, options) from the suite's ``executor:`` block (or None) and CLI values (None = unset)."""
    kind = cli.get("executor") or (block.kind if block is not None else "local")
    opts = ClusterOptions()
    if block is not None:
        for name in ("cluster", "shards", "partition", "gpus_per_job", "max_parallel", "job_timeout_min"):
            setattr(opts, name, getattr(block, name))
    given = {k: v for k, v in cli.items() if k != "executor" and v is not None}
    for name, value in given.items():
        setattr(opts, name, value)
    if kind != "submitit" and given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise UserError(f"{flags}: used only with --executor submitit; add --executor submitit (or executor: "
                        "{kind: submitit} in the suite)")
    if opts.cluster not in CLUSTERS:
        raise UserError(f"--cluster {opts.cluster}: choose from {', '.join(CLUSTERS)}")
    if opts.shards < 1:
        raise UserError(f"--shards {opts.shards}: give at least 1")
    if opts.gpus_per_job is not None and opts.gpus_per_job < 0:
        raise UserError(f"--gpus-per-job {opts.gpus_per_job}: give 0 or more")
    if opts.max_parallel is not None and opts.max_parallel < 1:
        raise UserError(f"--max-parallel {opts.max_parallel}: give at least 1")
    if not opts.job_timeout_min > 0:
        raise UserError(f"--job-timeout-min {opts.job_timeout_min}: give a positive number of minutes")
    return kind, opts


def require_submitit() -> Any:
    """The submitit module, or a UserError naming the extra that installs it."""
    try:
        import submitit
    except ImportError:
        raise UserError(f"--executor submitit needs the submitit package, which is not installed; {EXTRA}") from None
    return submitit


def lost_row(row: dict[str, Any]) -> bool:
    """A row written for a case whose job died before running it (``--resume`` runs it again)."""
    error = row.get("error")
    return row.get("status") in ("error", "timeout") and isinstance(error, str) and error.startswith(SCHEDULER_PREFIX)
