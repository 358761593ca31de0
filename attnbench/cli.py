"""Command-line entry point (asv style): ``main`` parses, dispatches, and turns a UserError into one line.

Each subcommand lives in ``attnbench/commands/<name>.py`` and exposes ``setup_arguments(subparsers)``
and ``run_from_args(args) -> int`` (plus a plain keyword function that tests call directly). Adding a
command is one module and one line in ``COMMANDS``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from . import UserError, __version__

# Subcommand modules under attnbench.commands, in the order `--help` lists them.
COMMANDS: list[str] = [
    "run",
    "list",
    "report",
    "compare",
    "ab",
    "history",
    "tasks",
]


def _quiet_known_warnings() -> None:
    """fvcore/iopath import-time DeprecationWarnings are noise for users; filter, never fail on them."""
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"fvcore.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"iopath.*")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnbench",
        description="Benchmark vision attention mechanisms: FLOPs, params, memory, speed (and accuracy) "
        "across resolutions, dtypes and devices.",
    )
    parser.add_argument("--version", action="version", version=f"attnbench {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"attnbench.commands.{name}")
        module.setup_arguments(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    _quiet_known_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        msg = " ".join(str(exc).split())  # one line, whatever the message held
        print(f"attnbench: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attnbench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
