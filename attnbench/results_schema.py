"""The columns of results.csv: one name, type and unit each, for every reader and writer.

Why: results.csv is the user-facing format (tidy, opened in pandas or a spreadsheet), but read back
with guessed types a boolean column becomes ``"True"``, ``1.0`` or ``True`` depending on which
other cells were empty, and an integer column with one empty cell becomes floats. Every reader goes
through :func:`coerce` with this schema instead, and code that needs a column by name imports its
constant from here, so a renamed column is one edit.

Columns that identify a case and the run's own columns are declared here; each metric declares the
columns it writes (``Metric.columns``) with the same :class:`Column`, and :func:`schema` joins them.
A column no one declares (a third-party metric's extra) is read as pandas infers it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover - pandas is imported where results are read, not to run a case
    import pandas as pd

Kind = Literal["str", "int", "float", "bool", "json"]


@dataclass(frozen=True)
class Column:
    """One results.csv column: its name (units in the name, ``latency_ms``), kind, unit and meaning."""

    name: str
    kind: Kind
    unit: str = ""
    doc: str = ""


def _cols(*items: Column) -> dict[str, Column]:
    return {c.name: c for c in items}


# ----------------------------------------------------------------------- identity and run columns
CASE_KEY = "case_key"
MECHANISM, LABEL, BACKEND, OPTIONS = "mechanism", "label", "backend", "options"
HEIGHT, WIDTH, TOKENS, BATCH_SIZE, DIM, NUM_HEADS = "height", "width", "tokens", "batch_size", "dim", "num_heads"
DTYPE, DEVICE, MODE, FORM, TASK = "dtype", "device", "mode", "form", "task"
STATUS, ERROR, THREADS, WALL_S = "status", "error", "threads", "wall_s"
# Integrity columns (``attnbench.rowcheck``): what --resume checks before it trusts a row.
SAMPLE_SERIES, ROW_CHECK = "sample_series", "row_crc32"

# Metric columns the harness reads by name (compare, history, summary, report, calibration).
MACS, MACS_ATTENTION, MACS_MISMATCH = "macs", "macs_attention", "macs_mismatch"
PARAMS = "params"
PEAK_MEMORY_MIB, MEMORY_METHOD = "peak_memory_mib", "memory_method"
LATENCY_MS, LATENCY_IQR_MS, TIMING_CLOCK = "latency_ms", "latency_iqr_ms", "timing_clock"

CORE: dict[str, Column] = _cols(
    Column(CASE_KEY, "str", doc="stable identity of the case (resume and compare key)"),
    Column(MECHANISM, "str", doc="registry name"),
    Column(LABEL, "str", doc="the suite's label for this configuration"),
    Column(BACKEND, "str", doc="implementation that ran"),
    Column(OPTIONS, "json", doc="mechanism options, as JSON"),
    Column(HEIGHT, "int", "tokens"),
    Column(WIDTH, "int", "tokens"),
    Column(TOKENS, "int", "tokens", "H·W"),
    Column(BATCH_SIZE, "int"),
    Column(DIM, "int", "channels"),
    Column(NUM_HEADS, "int"),
    Column(DTYPE, "str"),
    Column(DEVICE, "str"),
    Column(MODE, "str", doc="forward (inference) or train (forward + backward)"),
    Column(FORM, "str", doc="deploy (the module as served, AttentionBase.deploy()) or train (as trained)"),
    Column(TASK, "str", doc="accuracy task, empty for cost cases"),
    Column(STATUS, "str", doc="ok | oom | unsupported | timeout | error"),
    Column(ERROR, "str", doc="one line: why the case did not end ok"),
    Column(THREADS, "int", doc="intra-op threads while measuring"),
    Column(WALL_S, "float", "s", "wall time of the case in its worker"),
    Column(SAMPLE_SERIES, "json", doc="names of the case's raw sample series in samples.jsonl"),
    Column(ROW_CHECK, "str", doc="CRC-32 of the row's other cells; last column; a cut or edited row fails it"),
)

ID_COLUMNS = (MECHANISM, LABEL, BACKEND, OPTIONS, HEIGHT, WIDTH, TOKENS, BATCH_SIZE, DIM, NUM_HEADS, DTYPE, DEVICE,
              MODE, FORM, TASK)
# Columns every results.csv starts with, in this order; metric columns follow in first-seen order.
LEADING_COLUMNS = (CASE_KEY, *ID_COLUMNS, STATUS, ERROR, THREADS, WALL_S)
STATUSES = ("ok", "oom", "unsupported", "timeout", "error")


FORMS: tuple[str, ...] = ("deploy", "train")


def normalized_form(form: str | None, mode: str) -> str | None:
    """A case's form, checked, with the mode's default spelled None (one case, one identity: a row
    stored before forms existed keeps its key). Layer cases and whole-backbone cases share it."""
    if form is not None and form not in FORMS:
        raise ValueError(f"form must be one of {list(FORMS)} or None, got {form!r}")
    if form == "deploy" and mode == "train":
        raise ValueError("form 'deploy' is the inference form; mode 'train' measures the training form")
    return None if form == default_form(mode) else form


def default_form(mode: str | None) -> str:
    """The form a mode measures unless a suite asks otherwise: inference serves the deploy form
    (``AttentionBase.deploy()``, e.g. Slide's merged conv), training trains the training form."""
    return "train" if mode == "train" else "deploy"


def identity_key(ident: dict[str, Any]) -> str:
    """The case key of identity values ``{column: value}`` (``ID_COLUMNS``; ints as ints, no task as
    None): what ``Case.key`` returns, computed here too so a stored row can be checked against it.
    The form counts only when it is not the mode's default, so keys from before the form column hold."""
    import hashlib
    import json

    values = {c: ident.get(c) for c in ID_COLUMNS}
    form = values.pop(FORM, None)
    if form and form != default_form(values.get(MODE)):
        values[FORM] = form
    raw = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def schema() -> dict[str, Column]:
    """Every declared column: the core ones, then each registered metric's."""
    from .metrics import all_metrics

    out = dict(CORE)
    for metric in all_metrics():
        for col in metric.columns:
            out.setdefault(col.name, col)
    return out


def is_missing(value: Any) -> bool:
    """An empty cell: None, NaN or pandas' NA (recognised without importing pandas)."""
    return value is None or (isinstance(value, float) and value != value) or type(value).__name__ in ("NAType", "NaTType")


def stored_bool(value: Any) -> bool | None:
    """A boolean cell as read back from a CSV (True, "True", 1, "1.0"...); None when empty."""
    if is_missing(value):
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("", "nan", "none", "<na>"):
        return None
    return text in ("true", "1", "1.0")


def coerce(frame: "pd.DataFrame", columns: dict[str, Column] | None = None) -> "pd.DataFrame":
    """``frame`` with every declared column in its declared type: ints as nullable ``Int64``,
    booleans as nullable ``boolean``, floats as float, text as object with None for empty cells."""
    import pandas as pd

    columns = schema() if columns is None else columns
    out = frame.copy()
    for name in out.columns:
        col = columns.get(name)
        if col is None:
            continue
        series = out[name]
        if col.kind == "int":
            out[name] = pd.to_numeric(series, errors="coerce").round().astype("Int64")
        elif col.kind == "float":
            out[name] = pd.to_numeric(series, errors="coerce").astype(float)
        elif col.kind == "bool":
            out[name] = pd.array([stored_bool(v) for v in series], dtype="boolean")
        else:
            out[name] = pd.Series([None if is_missing(v) else (str(v) if col.kind == "str" else v) for v in series],
                                  index=series.index, dtype=object)
    return out
