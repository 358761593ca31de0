"""``results/reference-macs.csv``: the deterministic columns of the committed reference runs, one small file.

Why: MACs, params and case keys do not depend on the machine, so unlike timings they can gate CI
without flaking (``tests/test_reference_run.py`` rebuilds every row with today's code). Reading them
from this file instead of every committed ``results.csv`` keeps that check fast and independent of
which runs happen to sit under ``results/``. The file is a plain subset of the runs (their ``ok``
rows, these columns, the cells copied as stored), and a test regenerates it from the runs it names,
so it cannot drift from them.

After committing a new reference run (and ``git rm``-ing the run it supersedes), regenerate it::

    python -m attnbench.reference_macs results/highres/<run-id> results/accuracy/<run-id>
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from decimal import Decimal
from pathlib import Path

from . import UserError
from .case import ID_COLUMNS
from .store import RESULTS_CSV, atomic_write_text

DEFAULT_OUT = Path("results") / "reference-macs.csv"
# Cost columns copied when the run measured them (a run without the flops/params metrics has none).
COST_COLUMNS = ("macs", "params", "params_trainable")
# ``model`` names the backbone of a whole-model row (``models:`` in a suite); empty for a layer row.
COLUMNS = ("run", "case_key", *ID_COLUMNS, "model", *COST_COLUMNS)


def run_name(run_dir: Path) -> str:
    """``<suite>/<run-id>``: how the file names a run, relative to its results root."""
    return f"{run_dir.parent.name}/{run_dir.name}"


def _count(cell: str) -> str:
    """A stored count as an integer string: pandas writes ``5.0`` when a column also holds blanks."""
    return str(int(Decimal(cell))) if cell else ""


def reference_rows(run_dir: Path) -> list[dict[str, str]]:
    """The ``ok`` rows of one run, reduced to ``COLUMNS``: identity cells as stored, counts as integers."""
    path = Path(run_dir) / RESULTS_CSV
    if not path.is_file():
        raise UserError(f"{run_dir}: no {RESULTS_CSV}; pass a run directory, results/<suite>/<run-id>")
    with path.open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("status") == "ok"]
    name = run_name(Path(run_dir))
    return [{"run": name, **{c: r.get(c) or "" for c in ("case_key", *ID_COLUMNS, "model")},
             **{c: _count(r.get(c) or "") for c in COST_COLUMNS}} for r in rows]


def render(run_dirs: list[Path]) -> str:
    """The file's text for these runs: runs in the order given, rows in their results.csv order."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for run_dir in run_dirs:
        writer.writerows(reference_rows(run_dir))
    return buf.getvalue()


def runs_named_in(path: Path) -> list[str]:
    """The ``<suite>/<run-id>`` runs a reference file was generated from, in file order."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        return list(dict.fromkeys(r["run"] for r in csv.DictReader(f)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attnbench.reference_macs", description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="reference run directories, results/<suite>/<run-id>")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"file to write (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    try:
        text = render(args.runs)
    except UserError as exc:
        print(f"attnbench: error: {exc}", file=sys.stderr)
        return 2
    atomic_write_text(args.out, text)
    print(f"{args.out}: {text.count(chr(10)) - 1} rows from {len(args.runs)} run(s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
