"""``attnbench run SUITE``: validate the suite, run every case in isolated workers, store, summarise."""
from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from ..console import make_console

from .. import store
from ..devices import KNOWN_DEVICES


def setup_arguments(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a benchmark suite (YAML) and store its results",
        description="Run every case of a suite (mechanism x resolution x dtype x mode x device ...), each in "
        "its own worker process, and write results/<suite>/<run-id>/{results.csv, samples.jsonl, env.json, "
        "suite.yaml}. A case that runs out of memory, times out, crashes or cannot run on a device becomes a "
        "row with that status; the sweep goes on.",
    )
    parser.add_argument("suite", metavar="SUITE", help="suite file, e.g. suites/smoke.yaml")
    parser.add_argument("--out", metavar="DIR", default="results",
                        help="root directory for results; the run goes to DIR/<suite>/<run-id>/ (default: results)")
    parser.add_argument("--device", choices=("auto", *KNOWN_DEVICES), default=None,
                        help="run every case on this device instead of the suite's 'device' list; it must exist "
                        "here (auto = cuda, then mps, then cpu)")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue an interrupted run in RUN_DIR: only cases without a row are run")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the cases, their predicted MACs and memory, which would be skipped and why, "
                        "and a lower-bound time estimate; run and write nothing")
    parser.add_argument("--no-report", action="store_true", help="do not render the report at the end of the run")
    cluster = parser.add_argument_group(
        "cluster", "run the cases as a submitit job array (see docs/cluster.md); these override the suite's "
        "'executor:' block. Needs: pip install 'attnbench[slurm]'")
    cluster.add_argument("--executor", choices=("local", "submitit"), default=None,
                         help="local worker processes (default) or submitit jobs")
    cluster.add_argument("--cluster", choices=("slurm", "local", "debug"), default=None,
                         help="submitit cluster: slurm (default), local (processes on this machine), debug (in-process)")
    cluster.add_argument("--shards", type=int, default=None, metavar="N", help="jobs in the array (default 1)")
    cluster.add_argument("--partition", default=None, metavar="P", help="Slurm partition")
    cluster.add_argument("--gpus-per-job", type=int, default=None, metavar="G",
                         help="GPUs per job, one timing lane per GPU (default: 1 for cuda cases, 0 otherwise)")
    cluster.add_argument("--max-parallel", type=int, default=None, metavar="K",
                         help="jobs of the array running at once (Slurm array throttle)")
    cluster.add_argument("--job-timeout-min", type=float, default=None, metavar="T",
                         help="wall-clock limit of one job in minutes (default 120)")
    parser.set_defaults(func=run_from_args)


CLUSTER_FLAGS = ("executor", "cluster", "shards", "partition", "gpus_per_job", "max_parallel", "job_timeout_min")


def run_from_args(args: argparse.Namespace) -> int:
    return run(args.suite, out=args.out, device=args.device, resume=args.resume, dry_run=args.dry_run,
               report=not args.no_report, executor={k: getattr(args, k) for k in CLUSTER_FLAGS})


def run(suite: str | Path, out: str | Path = "results", device: str | None = None, resume: str | Path | None = None,
        dry_run: bool = False, report: bool = True, console: Console | None = None,
        executor: dict | None = None) -> int:
    """Keyword API of the command (tests call this). Returns the exit code: 0 when no case errored.

    ``executor``: the cluster flags ({executor, cluster, shards, ...}; None = unset), merged over the
    suite's ``executor:`` block."""
    from ..cluster import require_submitit, resolve_options
    from ..runner import dry_run as do_dry_run
    from ..runner import run_suite
    from ..suite import load_suite
    from ..summary import print_summary

    console = console or make_console()
    loaded = load_suite(suite)
    kind, opts = resolve_options(loaded.model.executor, executor or {})
    if dry_run:
        if kind == "submitit":
            from ..cluster.dry_run import print_shard_plan

            print_shard_plan(loaded, opts, device=device, console=console)
        else:
            do_dry_run(loaded, device=device, console=console)
        return 0
    runner = None
    if kind == "submitit":
        require_submitit()
        from ..cluster.submitit_executor import SubmititExecutor

        runner = SubmititExecutor(opts, console)
    try:
        run_dir = run_suite(loaded, out=out, device=device, resume=resume, console=console, executor=runner)
    except KeyboardInterrupt:
        return 130
    results = store.read_results(run_dir)
    print_summary(results, console, title=f"{loaded.name} - {run_dir}")
    if report:
        _write_report(run_dir, console)
    console.print(f"Results: {run_dir}")
    return 1 if (results["status"] == "error").any() else 0


def _write_report(run_dir: Path, console: Console) -> None:
    """Render the report; a report bug must not hide the results that were just measured."""
    from ..report import write_report

    try:
        files = write_report(run_dir)
    except Exception as exc:
        console.print(f"[yellow]report not written[/yellow]: {type(exc).__name__}: {exc}")
        return
    console.print(f"Report: {files[0]}")  # report.md comes first
