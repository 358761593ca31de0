"""Command-line entry point (asv style): ``main`` parses, dispatches, and turns a UserError into one line.

Every command runs inside one outermost handler: a ``UserError`` (bad input, a damaged file, a full
disk) is one line and exit code 2; anything unexpected is one line naming a log file that holds the
traceback, and exit code 1 (``attnbench --debug COMMAND`` prints the traceback in place instead).

Each subcommand lives in ``attnbench/commands/<name>.py`` and exposes ``setup_arguments(subparsers)``
and ``run_from_args(args) -> int`` (plus a plain keyword function that tests call directly). Adding a
command is one module and one line in ``COMMANDS``.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import traceback
import warnings
from datetime import datetime

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
    "doctor",
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
    parser.add_argument("--debug", action="store_true", help="on an unexpected error, print the traceback here "
                        "instead of into a log file (also: ATTNBENCH_DEBUG=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"attnbench.commands.{name}")
        except ImportError as exc:  # a bare machine (torch, numpy, rich) still gets `attnbench doctor`
            _missing_dependency_command(subparsers, name, exc)
            continue
        module.setup_arguments(subparsers)
    return parser


def _crash_log(exc: BaseException, argv: list[str]) -> str | None:
    """Write the traceback of ``exc`` to a fresh log file; its path, or None when nothing can be written."""
    text = (f"attnbench {__version__}, {datetime.now().isoformat(timespec='seconds')}\n"
            f"command: attnbench {' '.join(argv)}\n\n" + "".join(traceback.format_exception(exc)))
    for folder in (os.environ.get("ATTNBENCH_LOG_DIR"), tempfile.gettempdir(), os.getcwd()):
        if not folder:
            continue
        try:
            fd, path = tempfile.mkstemp(prefix="attnbench-error-", suffix=".log", dir=folder)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            return path
        except OSError:
            continue
    return None


def _missing_dependency_command(subparsers: argparse._SubParsersAction, name: str, exc: ImportError) -> None:
    """A stand-in subcommand that says which dependency its module could not import."""
    missing = exc.name or str(exc)
    parser = subparsers.add_parser(name, help=f"(unavailable: needs {missing})", add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)

    def fail(args: argparse.Namespace) -> int:
        raise UserError(f"`attnbench {name}` needs the Python package {missing!r}, which is not installed; "
                        f"pip install -e . (or pip install {missing}) and retry")

    parser.set_defaults(func=fail)


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
    except Exception as exc:  # a bug, or a fault nobody foresaw: one line and where the traceback is
        from .faults import is_write_fault, write_failure

        if is_write_fault(exc):  # a write fault outside the run's own files (report, plots, previews)
            print(f"attnbench: error: {' '.join(str(write_failure(exc)).split())}", file=sys.stderr)  # type: ignore[arg-type]
            return 2
        if getattr(args, "debug", False) or os.environ.get("ATTNBENCH_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
            return 1
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        log = _crash_log(exc, list(sys.argv[1:] if argv is None else argv))
        where = f"the traceback is in {log}" if log else "no log file could be written"
        print(f"attnbench: internal error: {msg} ({where}; --debug prints it here). Please report it.", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
