"""Reports of a run: ``report.md`` (GitHub), ``report.tex`` (booktabs), pivot CSVs and plots.

``write_report(run_dir)`` is what the runner calls at the end of every run and what
``attnbench report RUN_DIR`` calls on a stored run; it reads only the run directory, never re-runs.
Imported lazily: metric declarations use ``report.cells``, which must not pull in pandas.
"""
from __future__ import annotations

from typing import Any


def write_report(*args: Any, **kwargs: Any) -> Any:
    from .render import write_report as _write_report

    return _write_report(*args, **kwargs)


__all__ = ["write_report"]
