"""The report's backends section: every backend of a mechanism next to its ``masked`` baseline.

Why its own section: the backends suite asks "how much does a fused or block-sparse kernel buy over
the dense masked baseline, at what memory and compile cost?". That reads across backends of *one*
mechanism configuration, so rows are (configuration, size) and each backend contributes latency,
speed-up over ``masked`` (masked latency / latency; > 1 is faster), peak memory and, for flex,
compile time and block sparsity. A backend that did not run shows its status instead of a number.
"""
from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from .tables import fmt_number

BASELINE = "masked"


def applies(res: pd.DataFrame) -> bool:
    """Render when the ``backend`` metric ran and the run has more than one backend to compare."""
    return "compile_mode" in res.columns and "backend" in res.columns and res["backend"].nunique() > 1


def _config(options: Any) -> str:
    """The mechanism configuration without its backend (what the backends of one row share)."""
    try:
        opts = json.loads(options) if isinstance(options, str) else dict(options or {})
    except (TypeError, ValueError):
        opts = {}
    opts.pop("backend", None)
    return ",".join(f"{k}={v}" for k, v in sorted(opts.items()))


def _cell(row: pd.Series, column: str, spec: str | None = None) -> str:
    if row is None:
        return ""
    if str(row.get("status")) != "ok":
        return str(row.get("status"))
    value = row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(float(value), spec) if spec else fmt_number(float(value))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def render(res: pd.DataFrame) -> str | None:
    if res.empty or not applies(res):
        return None
    frame = res.copy()
    for column in ("latency_ms", "peak_memory_mib", "compile_s", "flex_block_sparsity"):
        if column not in frame.columns:
            frame[column] = None  # a backends run without time or memory still gets its table
    frame["config"] = frame["mechanism"].astype(str) + frame["options"].map(lambda o: f"[{_config(o)}]" if _config(o) else "")
    md = ["## Backends", "",
          f"Per mechanism configuration and size: latency (ms, median), speed-up over `{BASELINE}` "
          f"({BASELINE} latency / latency, > 1 is faster), peak memory (MiB); flex adds its first-call compile time "
          "(s) and the fraction of attention blocks it skips. Correctness was checked against the float64 reference "
          "before timing (column `check_size` in results.csv); cells show the status of cases that did not run.", ""]
    for (device, dtype, mode), group in frame.groupby(["device", "dtype", "mode"], sort=True):
        backends = list(dict.fromkeys(group["backend"].astype(str)))  # in the suite's order
        header = ["mechanism", "size"]
        for b in backends:
            header += [f"{b} ms", f"{b} MiB"] + ([f"{b} ×{BASELINE}"] if b != BASELINE else [])
        compiled = [b for b in backends if group.loc[group["backend"] == b, "compile_mode"].dropna().astype(str).ne("eager").any()] \
            if "compile_mode" in group.columns else []
        for b in compiled:
            header += [f"{b} compile s", f"{b} block sparsity"]
        rows = []
        for (config, H, W), cell in group.groupby(["config", "height", "width"], sort=False):
            by_backend = {str(r["backend"]): r for _, r in cell.iterrows()}
            base = by_backend.get(BASELINE)
            base_ms = float(base["latency_ms"]) if base is not None and str(base.get("status")) == "ok" else None
            line = [config, f"{H}×{W}"]
            for b in backends:
                r = by_backend.get(b)
                line += [_cell(r, "latency_ms"), _cell(r, "peak_memory_mib")]
                if b != BASELINE:
                    ms = float(r["latency_ms"]) if r is not None and str(r.get("status")) == "ok" else None
                    line.append(f"{base_ms / ms:.2f}" if base_ms and ms else "")
            for b in compiled:
                r = by_backend.get(b)
                line += [_cell(r, "compile_s", ".1f"), _cell(r, "flex_block_sparsity", ".4f")]
            rows.append(line)
        md += [f"### {device} · {dtype} · {mode}", "", *_table(header, rows), ""]
    return "\n".join(md)
