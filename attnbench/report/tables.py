"""Tables of a run: mechanisms as rows, resolutions as columns, one table per metric and group.

Why: the question "at 224², what does Pale cost and what does Swin cost" is answered by a pivot, not
by a tidy CSV. A cell shows the value when the case ran, and the status (``oom``, ``timeout``,
``unsupported``, ``error``) when it did not, so a failure can never read as a blank or a zero. The same
pivots are written as markdown (for GitHub), booktabs LaTeX (for papers) and CSV (for scripts).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pandas as pd

from ..results_schema import MACS_MISMATCH, STATUS, stored_bool
from .cells import NOT_MEASURED, fmt_number
from .cells import value as _value

# Identifying columns besides (device, dtype, mode) that split a run into separate tables when they vary.
SPLIT_COLUMNS = ("form", "batch_size", "dim", "num_heads", "task")


@dataclass(frozen=True)
class Group:
    """One table group: a fixed (device, dtype, mode) plus any other varying identifying columns."""

    key: tuple[tuple[str, Any], ...]
    frame: pd.DataFrame

    @property
    def title(self) -> str:
        return " · ".join(f"{v}" if k in ("device", "dtype", "mode") else f"{k} {v}" for k, v in self.key)

    @property
    def slug(self) -> str:
        return "_".join(str(v) for _, v in self.key).replace("/", "-").replace(" ", "")

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.key).get(name, default)


def report_tables() -> list[Any]:
    """Every registered metric's report tables (``Metric.report_tables``), in their declared order."""
    from ..metrics import all_metrics

    return sorted((t for m in all_metrics() for t in m.report_tables), key=lambda t: t.rank)


def res_label(height: Any, width: Any) -> str:
    h, w = int(height), int(width)
    return f"{h}²" if h == w else f"{h}×{w}"


def ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame[STATUS] == "ok"]


def label_order(frame: pd.DataFrame) -> list[str]:
    """Mechanism labels in the order the suite listed them (first appearance in the results)."""
    return list(dict.fromkeys(frame["label"].astype(str)))


def iter_groups(results: pd.DataFrame) -> Iterator[Group]:
    """Split a run into table groups: per (device, dtype, mode), and per other id column that varies."""
    if results.empty:
        return
    cols = ["device", "dtype", "mode"] + [c for c in SPLIT_COLUMNS
                                          if c in results.columns and results[c].nunique(dropna=True) > 1]
    frame = results.copy()
    for c in cols:
        frame[c] = frame[c].where(frame[c].notna(), "-")
    for values, sub in frame.groupby(cols, sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        yield Group(tuple(zip(cols, values)), results.loc[sub.index])


def _columns(frame: pd.DataFrame) -> list[tuple[int, int]]:
    sizes = frame[["height", "width"]].drop_duplicates().astype(int)
    return sorted(((int(h), int(w)) for h, w in sizes.itertuples(index=False)), key=lambda hw: (hw[0] * hw[1], hw))


def pivot(frame: pd.DataFrame, cell: Callable[[pd.Series], Any]) -> pd.DataFrame:
    """Labels × resolutions; a failed case shows its status instead of a value."""
    sizes = _columns(frame)
    table = pd.DataFrame(index=pd.Index(label_order(frame), name="mechanism"),
                         columns=[res_label(h, w) for h, w in sizes], dtype=object)
    for _, row in frame.iterrows():
        status = str(row.get("status"))
        table.loc[str(row["label"]), res_label(row["height"], row["width"])] = cell(row) if status == "ok" else status
    return table.fillna("not run")


def has_metric(frame: pd.DataFrame, column: str) -> bool:
    return column in frame.columns and ok_rows(frame)[column].notna().any()


def speedup_table(frame: pd.DataFrame, baseline: str, column: str = "latency_ms") -> pd.DataFrame | None:
    """baseline latency / mechanism latency at each resolution ("2.0×" = twice as fast as the baseline)."""
    labels = set(frame["label"].astype(str))
    if baseline not in labels or not has_metric(frame, column):
        return None
    base = {(int(r["height"]), int(r["width"])): r for _, r in frame[frame["label"].astype(str) == baseline].iterrows()}

    def cell(row: pd.Series) -> str:
        b = base.get((int(row["height"]), int(row["width"])))
        if b is None:
            return f"no {baseline}"
        if str(b.get("status")) != "ok":
            return f"{baseline} {b.get('status')}"
        bv, v = _value(b, column), _value(row, column)
        if not (math.isfinite(bv) and math.isfinite(v) and v > 0):
            return NOT_MEASURED
        return f"{bv / v:.2f}×"

    return pivot(frame, cell)


def to_markdown(table: pd.DataFrame) -> str:
    header = "| " + " | ".join([table.index.name or ""] + [str(c) for c in table.columns]) + " |"
    align = "|:--" + "|--:" * len(table.columns) + "|"
    body = ["| " + " | ".join([str(i)] + [str(v) for v in row]) + " |" for i, row in zip(table.index, table.values)]
    return "\n".join([header, align, *body])


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "×": r"$\times$", "²": r"$^2$", "≈": r"$\approx$", "·": r"$\cdot$",
                  "≥": r"$\geq$", "≤": r"$\leq$", "α": r"$\alpha$"}


def latex_escape(text: Any) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def to_booktabs(table: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs table (needs ``\\usepackage{booktabs}``); our own writer keeps jinja2 optional."""
    cols = "l" + "r" * len(table.columns)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
             rf"\label{{{label}}}", rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join([latex_escape(table.index.name or "")] + [latex_escape(c) for c in table.columns]) + r" \\",
             r"\midrule"]
    for idx, row in zip(table.index, table.values):
        lines.append(" & ".join([latex_escape(idx)] + [latex_escape(v) for v in row]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def mac_disagreements(results: pd.DataFrame) -> pd.DataFrame:
    """Rows whose counted MACs differ from the analytic ones (the ``macs_mismatch`` flag)."""
    if MACS_MISMATCH not in results.columns:
        return results.iloc[0:0]
    flag = [stored_bool(v) is True for v in results[MACS_MISMATCH]]
    cols = [c for c in ("label", "height", "width", "dtype", "mode", "macs", "macs_fvcore", "macs_flop_counter",
                        "flops_unsupported_ops") if c in results.columns]
    return results.loc[flag, cols]


def failures(results: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ("label", "height", "width", "dtype", "device", "mode", "status", "error") if c in results.columns]
    return results.loc[results[STATUS] != "ok", cols]
