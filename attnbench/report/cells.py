"""Formatting of one table cell from one results row, shared by metric declarations and the report.

Why separate from ``tables``: metrics declare their report tables with these formatters, and a
metric module must import without pandas (workers, ``attnbench doctor``); rows are only read with
``row.get``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

NOT_MEASURED = "n/a"


def fmt_number(v: float) -> str:
    """About three significant figures without scientific notation for everyday magnitudes."""
    if v is None or not math.isfinite(v):
        return NOT_MEASURED
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 0.01:
        return f"{v:.3g}" if a < 1 else f"{v:.2f}"
    return f"{v:.2g}"


def value(row: Any, column: str) -> float:
    try:
        return float(row.get(column))
    except (TypeError, ValueError):
        return math.nan


def plain_cell(column: str, scale: float = 1.0) -> Callable[[Any], str]:
    return lambda row: fmt_number(value(row, column) * scale)


def raw_cell(column: str, scale: float = 1.0) -> Callable[[Any], Any]:
    def get(row: Any) -> Any:
        v = value(row, column) * scale
        return v if math.isfinite(v) else NOT_MEASURED
    return get


def with_spread_cell(column: str, spread: str) -> Callable[[Any], str]:
    """``median ± spread`` when both are there (latency ± IQR)."""
    def cell(row: Any) -> str:
        med, iqr = value(row, column), value(row, spread)
        if not math.isfinite(med):
            return NOT_MEASURED
        return f"{fmt_number(med)} ± {fmt_number(iqr)}" if math.isfinite(iqr) else fmt_number(med)
    return cell
