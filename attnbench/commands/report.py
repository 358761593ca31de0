"""``attnbench report RUN_DIR``: (re)write a run's report from its stored files, without re-running."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..report import write_report


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
    parser.set_defaults(func=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    return report(args.run_dir, baseline=args.baseline)


def report(run_dir: Path | str, baseline: str = "global") -> int:
    files = write_report(run_dir, baseline=baseline)
    print(f"wrote {files[0]} ({len(files)} files)")
    return 0
