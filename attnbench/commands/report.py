"""``attnbench report RUN_DIR``: (re)write a run's report from its stored files, without re-running."""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import UserError
from ..store import load_run


def setup_arguments(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write report.md, report.tex, pivot CSVs and plots for a run",
        description="Render a stored run (results/<suite>/<run-id>) into report.md, report.tex, tables/*.csv "
        "and plots/*.png|svg inside the run directory. Nothing is re-run.",
    )
    parser.add_argument("run_dir", type=Path, help="run directory (results/<suite>/<run-id>)")
    parser.add_argument("--baseline", default="global",
                        help="mechanism label the speed-up table and crossovers are relative to (default: global)")
    parser.add_argument("--no-plots", action="store_true", help="tables only (plots take about a second each)")
    parser.set_defaults(func=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    return report(args.run_dir, baseline=args.baseline, plots=not args.no_plots)


def report(run_dir: Path | str, baseline: str = "global", plots: bool = True, check_baseline: bool = True) -> int:
    """Write the report of ``run_dir``; an explicit baseline must be one of the run's labels."""
    if check_baseline and baseline != "global":
        labels = sorted(set(load_run(run_dir).results.get("label", []).astype(str)))
        if baseline not in labels:
            raise UserError(f"--baseline {baseline!r} is not a mechanism label of {run_dir}; choose from {labels}")
    from ..report import write_report  # lazy: plotting libraries load only when reporting

    files = write_report(run_dir, baseline=baseline, plots=plots)
    print(f"wrote {files[0]} ({len(files)} files)")
    return 0
