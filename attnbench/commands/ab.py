"""``attnbench ab BASE_REF HEAD_REF SUITE``: both versions in one interleaved session; exit 1 on a regression.

The session lives in ``attnbench.ab``, the statistics in ``attnbench.paired``, the verdicts and the
report in ``attnbench.abreport``; this module parses arguments and prints.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


# attnbench.ab's defaults (not imported: keeps `attnbench --help` light; tests/test_ab_cli.py checks they agree)
DEFAULT_ROUNDS = 16
DEFAULT_MIN_ROUNDS = 8
AB_DEFAULT_THRESHOLD = 0.02
AB_DEFAULT_CONFIDENCE = 0.99


def setup_arguments(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ab",
        help="A/B two git refs (or two variants) in one interleaved session; exit 1 on a regression",
        description="Check out mechanisms/ (and the repository's plugins) at BASE_REF and HEAD_REF, measure every "
        "case of SUITE on both sides alternately in R rounds with the current harness, and judge each case from "
        "its R paired head/base ratios (signed-rank interval plus threshold). The same ref twice is an A/A "
        "calibration. Exit code: 0 no regression, 1 regression found, 2 usage error (bad ref, uncommitted "
        "changes that would be ignored, suite invalid on a side).",
    )
    parser.add_argument("base", metavar="BASE_REF", help="git ref of the baseline (branch, tag, sha, HEAD~1)")
    parser.add_argument("head", metavar="HEAD_REF", help="git ref of the candidate")
    parser.add_argument("suite", metavar="SUITE", help="suite file (read from the working tree), e.g. suites/smoke.yaml")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                        help=f"paired rounds per case (default {DEFAULT_ROUNDS}; at least 8 at 99%% confidence, 6 at 95%%)")
    parser.add_argument("--min-rounds", type=int, default=None, metavar="N",
                        help=f"fewest rounds for a case whose one call outlasts its share of the timing budget: such "
                        "a case gets as many rounds as its whole budget holds calls, but at least N "
                        f"(default {DEFAULT_MIN_ROUNDS}); --min-rounds equal to --rounds times every case in every round")
    parser.add_argument("--confirm-rounds", type=int, default=None, metavar="N",
                        help="a case still inconclusive after its rounds is timed again in N confirmation rounds at "
                        "the end and judged from those alone (default: as many rounds as it had; 0 turns this off)")
    parser.add_argument("--threshold", type=float, default=AB_DEFAULT_THRESHOLD,
                        help=f"minimum latency change that counts, as a fraction (default {AB_DEFAULT_THRESHOLD}); "
                        "choose it from an A/A session (BASE_REF = HEAD_REF)")
    parser.add_argument("--confidence", type=float, default=AB_DEFAULT_CONFIDENCE,
                        help=f"confidence of the interval on the ratio (default {AB_DEFAULT_CONFIDENCE}: a case "
                        "is a false regression at most (1 - confidence)/2 of the time)")
    parser.add_argument("--format", choices=("text", "md"), default="text",
                        help="text for terminals, md for a CI job summary (default text)")
    parser.add_argument("--out", metavar="DIR", default="results",
                        help="the session goes to DIR/<suite>-ab/<run-id>/ (default: results)")
    parser.add_argument("--variant", nargs=2, metavar=("LABEL_A", "LABEL_B"), default=None,
                        help="compare two mechanism labels of the suite instead of two versions: LABEL_A at BASE_REF "
                        "against LABEL_B at HEAD_REF, case by case at the same geometry (often the same ref twice)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the measurement order (recorded; default 0)")
    parser.add_argument("--min-run-time", type=float, default=None,
                        help="seconds of timed blocks per case, side and round (default: the suite's "
                        "timing.min_run_time split over the rounds)")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (it registers mechanisms the suite uses); repeatable")
    parser.set_defaults(func=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    return ab(args.base, args.head, args.suite, rounds=args.rounds, threshold=args.threshold,
              confidence=args.confidence, fmt=args.format, out=args.out, variant=tuple(args.variant) if args.variant
              else None, seed=args.seed, min_run_time=args.min_run_time, imports=tuple(args.imports),
              min_rounds=args.min_rounds, confirm_rounds=args.confirm_rounds)


def ab(base: str, head: str, suite: str | Path, *, rounds: int = DEFAULT_ROUNDS, threshold: float = AB_DEFAULT_THRESHOLD,
       confidence: float = AB_DEFAULT_CONFIDENCE, fmt: str = "text", out: str | Path = "results",
       variant: tuple[str, str] | None = None, seed: int = 0, min_run_time: float | None = None,
       imports: tuple[str, ...] = (), repo: str | Path = ".", min_rounds: int | None = None,
       confirm_rounds: int | None = None) -> int:
    """Run the session, print the report (stdout) and progress (stderr); return 0, or 1 on a regression."""
    from .. import abreport
    from ..ab import run_session

    session = run_session(base, head, suite, rounds=rounds, out=out, seed=seed, variant=variant, imports=imports,
                          min_run_time=min_run_time, repo=repo, threshold=threshold, confidence=confidence,
                          min_rounds=min_rounds, confirm_rounds=confirm_rounds, log=lambda s: print(f"attnbench ab: {s}", file=sys.stderr, flush=True))
    comp = abreport.findings(session, threshold, confidence)
    abreport.write(session, comp)
    print(abreport.render(session, comp, fmt), end="")
    return comp.exit_code
