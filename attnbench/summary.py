"""Terminal output of a run: the plan of a dry run and the summary table at the end of a run.

Why here and not in ``report/``: these are the harness's own console views (rich tables), printed
whether or not the report package is installed; ``report/`` renders files from a stored run.
"""
from __future__ import annotations

from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from . import metrics as metric_registry
from .metrics import SummaryColumn
from .predict import steps_needed
from .results_schema import is_missing

SUMMARY_ALWAYS = {"label", "size", "device", "dtype", "mode", "status"}  # shown even when empty
STATUS_STYLE = {"ok": "green", "oom": "yellow", "timeout": "yellow", "unsupported": "blue", "error": "red"}


def _num(value: Any, fmt: str) -> str:
    if is_missing(value):
        return ""
    try:
        return format(float(value), fmt)
    except (TypeError, ValueError):
        return str(value)


def print_plan(suite: Any, plan: Any, peaks: dict[str, dict[str, float]], startup_s: float, console: Console) -> float:
    """The cases of a dry run, what would happen to each, and a lower-bound time estimate."""
    steps = steps_needed(suite.metric_options)
    min_run = sum(float(metric_registry.get(m).seconds(o)) for m, o in suite.metric_options.items())
    table = Table(title=f"{suite.name}: {len(plan.cases)} cases (dry run: nothing is run or written)")
    for col in ("#", "case", "GMACs", "pred. MiB", "plan", "est. s (>=)"):
        table.add_column(col, justify="right" if col not in ("case", "plan") else "left", overflow="fold")
    total = 0.0
    run_options: dict[str, list[Any]] = {m: [] for m in suite.metrics}  # per metric: options of each case to run
    for i, case in enumerate(plan.cases, 1):
        key = case.key()
        pred = plan.predictions.get(key)
        skip = plan.skips.get(key)
        if skip:
            what = f"[{STATUS_STYLE[skip[0]]}]{skip[0]}[/]: {skip[1]}"
            est = 0.0
        else:
            what = "run"
            step = pred.step_seconds_min if pred and pred.step_seconds_min is not None else 0.0
            est = startup_s + steps * step + min_run
            total += est
            for m, opts in suite.metric_options_for(case).items():
                run_options[m].append(opts)
        table.add_row(str(i), case.describe(), _num(pred.macs / 1e9 if pred else None, ".3g"),
                      _num(pred.memory_bytes / 2**20 if pred else None, ".0f"), what, _num(est, ".1f"))
    console.print(table)
    peak_txt = "; ".join(f"{d}: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in p.items()) for d, p in peaks.items())
    console.print(f"Matmul peak (quick): {peak_txt or 'n/a'}")
    console.print(f"Estimated wall time >= {total / 60:.1f} min for {len(plan.cases) - len(plan.skips)} cases to run "
                  f"(worker start-up ~{startup_s:.1f} s each + {steps} steps at the matmul peak"
                  f"{f' + {min_run:g} s timing' if min_run else ''}; real kernels reach a fraction of that peak)")
    for m, options in run_options.items():
        note = metric_registry.get(m).plan_note
        line = note(options) if note is not None else None
        if line:
            console.print(line)
    return total


BASE_COLUMNS = (SummaryColumn("label", "label"), SummaryColumn("size", "height", render=lambda r: f"{int(r['height'])}x{int(r['width'])}"),
                SummaryColumn("dtype", "dtype"), SummaryColumn("mode", "mode"), SummaryColumn("form", "form"),
                SummaryColumn("status", "status",
                render=lambda r: f"[{STATUS_STYLE.get(r['status'], 'white')}]{r['status']}[/]"),
                SummaryColumn("task", "task"))


def _cell(row: Any, col: SummaryColumn) -> str:
    if col.render is not None:
        return col.render(row)
    value = row.get(col.column)
    if col.fmt:
        return _num(value, col.fmt)
    return "" if is_missing(value) else str(value)


def print_summary(results: pd.DataFrame, console: Console, title: str = "results") -> None:
    """One line per case with the headline numbers of every metric (``Metric.summary``), then counts
    by status and each metric's notes (``Metric.summary_notes``: MAC mismatches, the accuracy verdict)."""
    table = Table(title=title)
    metrics = metric_registry.all_metrics()
    cols = [*BASE_COLUMNS, *(c for m in metrics for c in m.summary)]
    devices = results["device"].dropna().unique() if "device" in results else []
    if len(devices) > 1:
        cols.insert(2, SummaryColumn("device", "device"))
    # A column no row filled (the cost columns of an accuracy suite, the accuracy columns of a cost
    # suite) only pushes the ones that matter off a terminal's width.
    cols = [c for c in cols if c.header in SUMMARY_ALWAYS or (c.column in results and results[c.column].notna().any())]
    for c in cols:
        table.add_column(c.header, justify="left" if c.header in ("label", "status", "dtype", "mode", "device", "task") else "right")
    for _, r in results.iterrows():
        table.add_row(*(_cell(r, c) for c in cols))
    console.print(table)
    counts = results["status"].value_counts().to_dict() if "status" in results else {}
    console.print("Status: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for m in metrics:
        if m.summary_notes is not None:
            for line in m.summary_notes(results):
                console.print(line)
    problems = results[results["status"] != "ok"] if "status" in results else results.iloc[0:0]
    for _, r in problems.iterrows():
        if r["status"] == "error":
            console.print(f"  [red]error[/red] {r['label']} {int(r['height'])}x{int(r['width'])} {r['dtype']} {r['mode']}: {r['error']}")
