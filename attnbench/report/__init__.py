"""Reports of a run: ``report.md`` (GitHub), ``report.tex`` (booktabs), pivot CSVs and plots.

``write_report(run_dir)`` is what the runner calls at the end of every run and what
``attnbench report RUN_DIR`` calls on a stored run; it reads only the run directory, never re-runs.
"""
from .render import write_report

__all__ = ["write_report"]
