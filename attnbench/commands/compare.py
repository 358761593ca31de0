"""``attnbench compare BASELINE_RUN NEW_RUN``: a verdict on two runs; exit 1 when something regressed.

The rule lives in ``attnbench.stats`` (latency) and ``attnbench.compare`` (MACs, params, memory,
status); this module only parses arguments and prints.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import UserError
from ..stats import DEFAULT_CONFIDENCE, DEFAULT_THRESHOLD
from ..store import load_run


def setup_arguments(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare two runs of a suite; exit 1 on a regression",
        description="Match the cases of two runs and compare latency (rank test on raw samples plus a "
        "minimum effect size), MACs and params (exactly) and peak memory (small tolerance). Exit code: "
        "0 no regression, 1 regression found, 2 usage error (e.g. environments differ).",
    )
    parser.add_argument("baseline", type=Path, help="run directory of the baseline (results/<suite>/<run-id>)")
    parser.add_argument("new", type=Path, help="run directory of the new run")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help=f"minimum latency change that counts, as a fraction (default {DEFAULT_THRESHOLD})")
    parser.add_argument("--confidence", type=float, default=DEFAULT_CONFIDENCE,
                        help=f"confidence of the interval on the latency ratio (default {DEFAULT_CONFIDENCE})")
    parser.add_argument("--format", choices=("text", "md"), default="text",
                        help="text for terminals, md for a CI comment (default text)")
    parser.add_argument("--allow-env-mismatch", action="store_true",
                        help="compare even when device, device name, torch version or threads differ (warns)")
    parser.add_argument("--across-machines", action="store_true",
                        help="compare runs from different machines (fingerprint in env.json) anyway, with a "
                        "warning naming what differs; without it such runs are refused")
    parser.add_argument("--only-changes", action="store_true", help="hide unchanged cases")
    parser.set_defaults(func=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    return compare(args.baseline, args.new, threshold=args.threshold, confidence=args.confidence,
                   fmt=args.format, allow_env_mismatch=args.allow_env_mismatch, only_changes=args.only_changes,
                   across_machines=args.across_machines)


def compare(baseline: Path | str, new: Path | str, *, threshold: float = DEFAULT_THRESHOLD,
            confidence: float = DEFAULT_CONFIDENCE, fmt: str = "text", allow_env_mismatch: bool = False,
            only_changes: bool = False, across_machines: bool = False) -> int:
    """Print the comparison of two run directories; return the exit code (0 ok, 1 regression)."""
    if not threshold >= 0:
        raise UserError(f"--threshold {threshold}: give a non-negative fraction, e.g. 0.05 for 5 %")
    if not 0.5 <= confidence < 1:
        raise UserError(f"--confidence {confidence}: give a value in [0.5, 1), e.g. 0.95")
    from ..compare import compare_runs  # lazy: pandas loads only when comparing

    comp = compare_runs(load_run(baseline), load_run(new), threshold=threshold, confidence=confidence,
                        allow_env_mismatch=allow_env_mismatch, across_machines=across_machines)
    if comp.env_differences:
        for k, (a, b) in comp.env_differences.items():
            print(f"attnbench: WARNING: environments differ: {k} = {a!r} vs {b!r}; timings are not comparable",
                  file=sys.stderr)
    print(comp.render(fmt, show_unchanged=not only_changes), end="")
    return comp.exit_code
