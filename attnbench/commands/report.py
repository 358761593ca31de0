"""``attnbench report RUN_DIR``: (re)write a run's report from its stored files, without re-running."""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import UserError
from ..store import load_run


def setup_arguments(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write report.md, report.tex, pivot CSVs and plots for a run (or one merged report of several)",
        description="Render a stored run (results/<suite>/<run-id>) into report.md, report.tex, tables/*.csv "
        "and plots/*.png|svg inside the run directory. Nothing is re-run.",
    )
    parser.add_argument("run_dir", type=Path, nargs="+", metavar="RUN",
                        help="run directory (results/<suite>/<run-id>); several runs (other devices or machines) "
                        "are merged into one report with device and machine as columns")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="with several runs: where the merged report goes (default results/merged/<time>)")
    parser.add_argument("--baseline", default="global",
                        help="mechanism label the speed-up table and crossovers are relative to (default: global)")
    parser.add_argument("--no-plots", action="store_true", help="tables only (plots take about a second each)")
    parser.set_defaults(func=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    if len(args.run_dir) > 1:
        return merged_report(args.run_dir, out=args.out, baseline=args.baseline, plots=not args.no_plots)
    if args.out is not None:
        raise UserError("--out applies to a merged report of several runs; one run's report goes into its directory")
    return report(args.run_dir[0], baseline=args.baseline, plots=not args.no_plots)


def merged_report(run_dirs: list[Path], out: Path | None = None, baseline: str = "global", plots: bool = True) -> int:
    """One report across runs (``attnbench.report.merged``)."""
    from ..report.merged import write_merged_report

    files = write_merged_report(run_dirs, out=out, baseline=baseline, plots=plots)
    print(f"wrote {files[0]} ({len(files)} files)")
    return 0


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
