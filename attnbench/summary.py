"""Terminal output of a run: the plan of a dry run and the summary table at the end of a run.

Why here and not in ``report/``: these are the harness's own console views (rich tables), printed
whether or not the report package is installed; ``report/`` renders files from a stored run.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from .predict import steps_needed
from .store import stored_bool

SUMMARY_ALWAYS = {"label", "size", "device", "dtype", "mode", "status"}  # shown even when empty
STATUS_STYLE = {"ok": "green", "oom": "yellow", "timeout": "yellow", "unsupported": "blue", "error": "red"}


def _num(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    try:
        return format(float(value), fmt)
    except (TypeError, ValueError):
        return str(value)


def print_plan(suite: Any, plan: Any, peaks: dict[str, dict[str, float]], startup_s: float, console: Console) -> float:
    """The cases of a dry run, what would happen to each, and a lower-bound time estimate."""
    timing = suite.metric_options.get("time")
    mem = suite.metric_options.get("memory")
    steps = steps_needed(suite.metrics, getattr(mem, "warmup", 1), getattr(timing, "warmup", 1))
    min_run = float(getattr(timing, "min_run_time", 0.0)) if "time" in suite.metrics else 0.0
    table = Table(title=f"{suite.name}: {len(plan.cases)} cases (dry run: nothing is run or written)")
    for col in ("#", "case", "GMACs", "pred. MiB", "plan", "est. s (>=)"):
        table.add_column(col, justify="right" if col not in ("case", "plan") else "left", overflow="fold")
    total = 0.0
    train_steps: list[int] = []  # accuracy optimiser steps per case to run (steps x seeds)
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
            acc = suite.metric_options_for(case).get("accuracy") if "accuracy" in suite.metrics else None
            if acc is not None:
                train_steps.append(int(acc.steps) * int(acc.seeds))
        table.add_row(str(i), case.describe(), _num(pred.macs / 1e9 if pred else None, ".3g"),
                      _num(pred.memory_bytes / 2**20 if pred else None, ".0f"), what, _num(est, ".1f"))
    console.print(table)
    peak_txt = "; ".join(f"{d}: " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in p.items()) for d, p in peaks.items())
    console.print(f"Matmul peak (quick): {peak_txt or 'n/a'}")
    console.print(f"Estimated wall time >= {total / 60:.1f} min for {len(plan.cases) - len(plan.skips)} cases to run "
                  f"(worker start-up ~{startup_s:.1f} s each + {steps} steps at the matmul peak"
                  f"{f' + {min_run:g} s timing' if min_run else ''}; real kernels reach a fraction of that peak)")
    if train_steps:
        console.print(f"Not in that estimate: accuracy training, {sum(train_steps)} optimiser steps in all "
                      f"({min(train_steps)}-{max(train_steps)} per case, steps x seeds); see the README's measured "
                      f"wall times for suites/accuracy.yaml")
    return total


def print_summary(results: pd.DataFrame, console: Console, title: str = "results") -> None:
    """One line per case with the headline numbers, then counts by status and flagged MAC mismatches."""
    table = Table(title=title)
    cols = [("label", "label", None), ("size", None, None), ("dtype", "dtype", None), ("mode", "mode", None),
            ("form", "form", None), ("status", "status", None), ("GMACs", "macs", ".3g"), ("params", "params", ".0f"),
            ("peak MiB", "peak_memory_mib", ".1f"), ("ms", "latency_ms", ".3g"), ("±IQR", "latency_iqr_ms", ".2g"),
            ("img/s", "throughput_img_s", ".3g"), ("GFLOP/s", "achieved_gflops", ".3g"), ("eff", "efficiency", ".0%")]
    cols += [("task", "task", None), ("fidelity", "fid_pass", None), ("layers to full", "rf_layers_to_full", ".0f"),
             ("ERF95", "rf_erf_area95", ".2f"), ("acc", "acc_mean", ".3f"), ("train s", "acc_train_s", ".0f")]
    devices = results["device"].dropna().unique() if "device" in results else []
    if len(devices) > 1:
        cols.insert(2, ("device", "device", None))
    # A column no row filled (the cost columns of an accuracy suite, the accuracy columns of a cost
    # suite) only pushes the ones that matter off a terminal's width.
    cols = [c for c in cols if c[0] in SUMMARY_ALWAYS or (c[1] in results and results[c[1]].notna().any())]
    for name, _, _ in cols:
        table.add_column(name, justify="left" if name in ("label", "status", "dtype", "mode", "device") else "right")
    for _, r in results.iterrows():
        cells = []
        for name, col, fmt in cols:
            if name == "size":
                cells.append(f"{int(r['height'])}x{int(r['width'])}")
            elif name == "GMACs":
                v = r.get("macs")
                flag = " [red]≠[/red]" if str(r.get("macs_mismatch")) == "True" else ""
                cells.append(_num(v / 1e9 if v is not None and not pd.isna(v) else None, ".3g") + flag)
            elif name == "layers to full" and pd.isna(r.get(col)) and not pd.isna(r.get("rf_keys_mean")):
                cells.append("never")
            elif name == "fidelity":
                cells.append({True: "pass", False: "[red]FAIL[/red]", None: ""}[stored_bool(r.get(col))])
            elif name == "status":
                cells.append(f"[{STATUS_STYLE.get(r['status'], 'white')}]{r['status']}[/]")
            elif fmt:
                cells.append(_num(r.get(col), fmt))
            else:
                cells.append("" if pd.isna(r.get(col)) else str(r.get(col)))
        table.add_row(*cells)
    console.print(table)
    counts = results["status"].value_counts().to_dict() if "status" in results else {}
    console.print("Status: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if "acc_mean" in results and results["acc_mean"].notna().any():
        from .metrics.accuracy import run_validity

        state, reasons = run_validity(results)
        style = {"valid": "green", "invalid": "red"}.get(state, "yellow")
        console.print(f"Accuracy run validity (PairMatch sanity check): [{style}]{state.upper()}[/]"
                      + "".join(f"\n  {r}" for r in reasons))
    if "macs_mismatch" in results:
        bad = results[results["macs_mismatch"].astype(str) == "True"]
        if len(bad):
            console.print(f"[red]MACs mismatch > tolerance (analytic vs fvcore / FlopCounterMode) in {len(bad)} case(s):[/red]")
            for _, r in bad.iterrows():
                console.print(f"  {r['label']} {int(r['height'])}x{int(r['width'])}: analytic {r['macs']:.4g}, "
                              f"fvcore {_num(r.get('macs_fvcore'), '.4g')}, flop_counter {_num(r.get('macs_flop_counter'), '.4g')}")
    problems = results[results["status"] != "ok"] if "status" in results else results.iloc[0:0]
    for _, r in problems.iterrows():
        if r["status"] == "error":
            console.print(f"  [red]error[/red] {r['label']} {int(r['height'])}x{int(r['width'])} {r['dtype']} {r['mode']}: {r['error']}")
