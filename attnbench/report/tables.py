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

# Identifying columns besides (device, dtype, mode) that split a run into separate tables when they vary.
SPLIT_COLUMNS = ("form", "batch_size", "dim", "num_heads", "task")
NOT_MEASURED = "n/a"


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


@dataclass(frozen=True)
class MetricSpec:
    column: str
    title: str
    fmt: Callable[[pd.Series], str]
    csv_value: Callable[[pd.Series], Any]
    file: str


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


def _value(row: pd.Series, column: str) -> float:
    try:
        return float(row.get(column))
    except (TypeError, ValueError):
        return math.nan


def _latency_cell(row: pd.Series) -> str:
    med, iqr = _value(row, "latency_ms"), _value(row, "latency_iqr_ms")
    if not math.isfinite(med):
        return NOT_MEASURED
    return f"{fmt_number(med)} ± {fmt_number(iqr)}" if math.isfinite(iqr) else fmt_number(med)


def _plain(column: str, scale: float = 1.0) -> Callable[[pd.Series], str]:
    return lambda row: fmt_number(_value(row, column) * scale)


def _raw(column: str, scale: float = 1.0) -> Callable[[pd.Series], Any]:
    def get(row: pd.Series) -> Any:
        v = _value(row, column) * scale
        return v if math.isfinite(v) else NOT_MEASURED
    return get


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("latency_ms", "Latency (ms, median ± IQR)", _latency_cell, _raw("latency_ms"), "latency_ms"),
    MetricSpec("throughput_img_s", "Throughput (images/s)", _plain("throughput_img_s"), _raw("throughput_img_s"),
               "throughput_img_s"),
    MetricSpec("peak_memory_mib", "Peak memory (MiB)", _plain("peak_memory_mib"), _raw("peak_memory_mib"),
               "peak_memory_mib"),
    MetricSpec("macs", "MACs (G)", _plain("macs", 1e-9), _raw("macs", 1e-9), "gmacs"),
)


def res_label(height: Any, width: Any) -> str:
    h, w = int(height), int(width)
    return f"{h}²" if h == w else f"{h}×{w}"


def ok_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"].astype(str) == "ok"]


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
    if "macs_mismatch" not in results.columns:
        return results.iloc[0:0]
    flag = results["macs_mismatch"].astype(str).str.lower().isin(("true", "1", "1.0"))
    cols = [c for c in ("label", "height", "width", "dtype", "mode", "macs", "macs_fvcore", "macs_flop_counter",
                        "flops_unsupported_ops") if c in results.columns]
    return results.loc[flag, cols]


def failures(results: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ("label", "height", "width", "dtype", "device", "mode", "status", "error") if c in results.columns]
    return results.loc[results["status"].astype(str) != "ok", cols]
