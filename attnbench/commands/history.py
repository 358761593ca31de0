"""``attnbench history results/<suite>/``: every run of a suite over time, with steps flagged.

The step rule lives in ``attnbench.history.detect_steps``; this module parses arguments and prints.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import UserError
from ..stats import DEFAULT_THRESHOLD


def setup_arguments(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "history",
        help="line up every run of a suite and flag sustained steps in latency",
        description="Read every run under results/<suite>/, order them by date (with their git commits), "
        "write history.md and one plot per case into that folder, and flag steps: changes beyond the "
        "threshold held for --min-runs consecutive runs, not single noisy points.",
    )
    parser.add_argument("suite_dir", type=Path, help="folder of run directories (results/<suite>/)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help=f"smallest change of level that counts, as a fraction (default {DEFAULT_THRESHOLD}); "
                        "raised automatically to twice a series' run-to-run noise")
    parser.add_argument("--window", type=int, default=5, help="runs before a candidate step that set the old level (default 5)")
    parser.add_argument("--min-runs", type=int, default=2,
                        help="consecutive runs that must sit on the new level to confirm a step (default 2)")
    parser.add_argument("--no-plots", action="store_true", help="write history.md only")
    parser.set_defaults(func=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    return history(args.suite_dir, threshold=args.threshold, window=args.window, min_runs=args.min_runs,
                   plots=not args.no_plots)


def history(suite_dir: Path | str, *, threshold: float = DEFAULT_THRESHOLD, window: int = 5, min_runs: int = 2,
            plots: bool = True) -> int:
    if not threshold >= 0:
        raise UserError(f"--threshold {threshold}: give a non-negative fraction, e.g. 0.05 for 5 %")
    if window < 1 or min_runs < 1:
        raise UserError("--window and --min-runs must be at least 1")
    from ..history import summary_lines, write_history  # lazy: plotting loads only here

    path, hist = write_history(suite_dir, threshold=threshold, window=window, min_after=min_runs, plots=plots)
    for line in summary_lines(hist):
        print(line)
    print(f"wrote {path} ({len(hist.runs)} runs, {len(hist.series)} case series)")
    return 0
