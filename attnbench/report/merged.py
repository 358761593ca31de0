"""One report across runs: which attention is fastest on which device and machine.

``attnbench report RUN RUN ...`` stacks the runs' rows into one tidy table (``merged.csv``: every
row with its ``run``, ``device``, ``machine`` and ``machine_id``, from the env.json fingerprint) and
renders wide tables whose columns are device · machine. Cases are matched by their identity
(the case key without the device: label, options, geometry, dtype, mode, task).

Duplicates: the same case on the same machine in two runs. Identical ones are shown once; ones
that disagree (status, or latency/memory beyond the compare tolerances, MACs at all) are
*conflicts*: every value is shown in the cell (``1.2 ≠ 1.9 ⚠``) and listed with its run, never
silently dropped. A crossover plot per (device, machine) and table group marks where each mechanism
becomes faster than the baseline.
"""
from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from .. import UserError, fingerprint
from ..results_schema import LATENCY_MS, MACS, PEAK_MEMORY_MIB, is_missing
from ..store import Run, atomic_write_text, load_run
from . import tables
from .scaling import describe_crossover

IDENTITY = ("label", "options", "height", "width", "batch_size", "dim", "num_heads", "dtype", "mode", "task")
# Relative gap between duplicate measurements of one case on one machine that counts as a conflict:
# run-to-run medians wander by a few % on a quiet machine (compare's latency threshold is 5 %).
LATENCY_RTOL = 0.10
MEMORY_RTOL = 0.01


def _short_machine(fp: dict[str, Any]) -> str:
    return fingerprint.label(fp).split(" torch ")[0].replace(" 1 thread", "")


def merge(runs: list[Run]) -> pd.DataFrame:
    """Every row of every run, with run, machine and column name (``device · machine``)."""
    frames = []
    for run in runs:
        if run.results.empty:
            continue
        fp = fingerprint.of_env(run.env)
        f = run.results.copy()
        f["run"] = run.name
        f["machine"] = _short_machine(fp)
        f["machine_id"] = fingerprint.machine_id(fp)
        frames.append(f)
    if not frames:
        raise UserError("none of the runs has results; pass run directories with results.csv")
    out = pd.concat(frames, ignore_index=True)
    out["column"] = out["device"].astype(str) + " · " + out["machine"].astype(str)
    for c in IDENTITY:
        if c not in out.columns:
            out[c] = None
    text = {c: out[c].map(lambda v: "" if is_missing(v) else str(v)) for c in IDENTITY}
    out["identity"] = pd.DataFrame(text).agg("|".join, axis=1)
    return out


def _close(a: Any, b: Any, rtol: float) -> bool:
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return a == b
    if math.isnan(x) and math.isnan(y):
        return True
    return math.isfinite(x) and math.isfinite(y) and abs(x - y) <= rtol * max(abs(x), abs(y))


def conflicts(frame: pd.DataFrame) -> pd.DataFrame:
    """Duplicates (same case, device and machine in several runs) that disagree, one row per run."""
    rows = []
    for (_, _), g in frame.groupby(["identity", "column"], sort=False):
        if len(g) < 2:
            continue
        first = g.iloc[0]
        disagree = any(
            str(r["status"]) != str(first["status"])
            or not _close(r.get(LATENCY_MS), first.get(LATENCY_MS), LATENCY_RTOL)
            or not _close(r.get(PEAK_MEMORY_MIB), first.get(PEAK_MEMORY_MIB), MEMORY_RTOL)
            or not _close(r.get(MACS), first.get(MACS), 0.0)
            for _, r in g.iloc[1:].iterrows())
        if disagree:
            rows.append(g)
    if not rows:
        return frame.iloc[0:0]
    return pd.concat(rows)


def _cell(g: pd.DataFrame, column: str, conflicting: bool) -> str:
    def one(r: pd.Series) -> str:
        if str(r["status"]) != "ok":
            return str(r["status"])
        v = r.get(column)
        return tables.fmt_number(float(v)) if v is not None and not pd.isna(v) else "-"

    values = [one(r) for _, r in g.iterrows()]
    if conflicting and len(set(values)) > 1:  # this metric disagrees: every run's value, in run order
        return " ≠ ".join(values) + " ⚠"
    return values[0]


def wide_table(frame: pd.DataFrame, column: str, conflict_idx: set) -> pd.DataFrame:
    """(mechanism, resolution) × (device · machine) for one dtype/mode group."""
    cols = list(dict.fromkeys(frame["column"]))
    sizes = sorted({(int(h), int(w)) for h, w in frame[["height", "width"]].itertuples(index=False)},
                   key=lambda hw: (hw[0] * hw[1], hw))
    index = [(lab, tables.res_label(h, w)) for lab in tables.label_order(frame) for h, w in sizes]
    table = pd.DataFrame(index=pd.MultiIndex.from_tuples(index, names=["mechanism", "resolution"]), columns=cols,
                         dtype=object)
    for (lab, h, w, col), g in frame.groupby(["label", "height", "width", "column"], sort=False):
        table.loc[(str(lab), tables.res_label(h, w)), col] = _cell(g, column, bool(set(g.index) & conflict_idx))
    table = table.fillna("not run")
    return table[(table != "not run").any(axis=1)]


def _md(table: pd.DataFrame) -> str:
    head = "| " + " | ".join(list(table.index.names) + [str(c) for c in table.columns]) + " |"
    sep = "|" + "|".join([":--"] * table.index.nlevels + ["--:"] * len(table.columns)) + "|"
    body = ["| " + " | ".join([str(x) for x in (i if isinstance(i, tuple) else (i,))] +
                              [str(v).replace("|", "\\|") for v in row]) + " |" for i, row in table.iterrows()]
    return "\n".join([head, sep, *body])


def crossover_table(frame: pd.DataFrame, baseline: str) -> pd.DataFrame | None:
    """Per mechanism and device · machine: from which size it is faster than ``baseline``."""
    ok = tables.ok_rows(frame)
    if baseline not in set(ok["label"].astype(str)) or not tables.has_metric(frame, LATENCY_MS):
        return None
    labels = [lab for lab in tables.label_order(frame) if lab != baseline]
    cols = list(dict.fromkeys(frame["column"]))
    out = pd.DataFrame(index=pd.Index(labels, name="mechanism"), columns=cols, dtype=object)
    for col in cols:
        sub = ok[ok["column"] == col]
        wide = sub.pivot_table(index="tokens", columns="label", values=LATENCY_MS, aggfunc="median")
        for lab in labels:
            if lab in wide.columns and baseline in wide.columns:
                out.loc[lab, col] = describe_crossover(wide.index, wide[lab], wide[baseline], baseline)[0]
    return out.fillna("n/a")


def write_merged_report(run_dirs: list[Path | str], out: Path | str | None = None, baseline: str = "global",
                        plots: bool = True) -> list[Path]:
    """Write ``report.md``, ``merged.csv`` (and plots) for several runs into ``out``; returns the files."""
    runs = [load_run(p) for p in run_dirs]
    names = [r.path.resolve() for r in runs]
    if len(set(names)) != len(names):
        raise UserError("a run is given twice; pass each run directory once")
    out = Path(out) if out else Path("results") / "merged" / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    frame = merge(runs)
    bad = conflicts(frame)
    bad_idx = set(bad.index)
    files: list[Path] = []
    md = [f"# Merged report: {len(runs)} runs", "",
          "Columns are device · machine (the machine is the env.json fingerprint: CPU model and ISA flags, GPU, "
          "driver, torch, CUDA, threads). Cases are matched by their identity (mechanism label, options, "
          f"geometry, dtype, mode). Cells are medians; a cell with ⚠ holds conflicting duplicates.", "",
          "## Runs", "", "| run | suite | device | machine | machine id | created | commit | cases |",
          "|:--|:--|:--|:--|:--|:--|:--|--:|"]
    for run in runs:
        fp = fingerprint.of_env(run.env)
        md.append(f"| {run.name} | {run.suite.get('name', run.path.parent.name)} | {run.env.get('device', '-')} | "
                  f"{_short_machine(fp)} | {fingerprint.machine_id(fp)} | {str(run.env.get('created_at', ''))[:19]} | "
                  f"{run.env.get('git_commit') or 'nogit'} | {len(run.results)} |")
    md += ["", "## Machines", "", "| field | " + " | ".join(r.name for r in runs) + " |",
           "|:--|" + ":--|" * len(runs)]
    fps = [fingerprint.of_env(r.env) for r in runs]
    for f in fingerprint.FIELDS:
        vals = [fp.get(f) for fp in fps]
        if all(v is None for v in vals):
            continue
        shown = [("not recorded" if v is None else (", ".join(v) or "none") if isinstance(v, list) else str(v))
                 for v in vals]
        md.append(f"| {fingerprint.TITLES[f]} | " + " | ".join(shown) + " |")
    peaks = [r.env.get("matmul_peak_gflops") or {} for r in runs]
    for dt in sorted({k for p in peaks for k in p}):
        md.append(f"| matmul peak {dt} (GFLOP/s, measured) | " +
                  " | ".join(tables.fmt_number(float(p[dt])) if dt in p else "-" for p in peaks) + " |")
    md.append("")
    groups: dict[tuple, pd.DataFrame] = {}
    for key, g in frame.groupby(["dtype", "mode"], sort=False):
        groups[key] = g
    for (dtype, mode), g in groups.items():
        md += [f"## {dtype} · {mode}", ""]
        if tables.has_metric(g, LATENCY_MS):
            md += ["### Latency (ms, median)", "", _md(wide_table(g, LATENCY_MS, bad_idx)), ""]
        if tables.has_metric(g, PEAK_MEMORY_MIB):
            md += ["### Peak memory (MiB)", "", _md(wide_table(g, PEAK_MEMORY_MIB, bad_idx)), ""]
        cross = crossover_table(g, baseline)
        if cross is not None:
            md += [f"### Faster than {baseline} from (latency; log-log interpolation between measured sizes)", "",
                   _md(cross), ""]
        if plots and tables.has_metric(g, LATENCY_MS):
            from .plots import scaling_plot

            images = []
            for col, sub in g.groupby("column", sort=False):
                dev, mid = str(sub["device"].iloc[0]), str(sub["machine_id"].iloc[0])
                stem = out / "plots" / f"crossover__{dev}__{mid}__{dtype}_{mode}"
                images += scaling_plot(sub, LATENCY_MS, "latency (ms)", f"{col} — {dtype} · {mode}", stem, baseline)
            files += images
            md += ["### Crossover plots (one per device · machine)", "",
                   *[f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in images if p.suffix == ".png"], ""]
    md += ["## Conflicting duplicates", ""]
    if bad.empty:
        md.append("None: no case was measured twice on the same device and machine with different results.")
    else:
        show = bad[["label", "height", "width", "dtype", "mode", "column", "run", "status", LATENCY_MS,
                    *([PEAK_MEMORY_MIB] if PEAK_MEMORY_MIB in bad.columns else [])]]
        md += [f"{bad.groupby(['identity', 'column']).ngroups} case(s) measured more than once on one device and "
               "machine disagree (status, latency beyond "
               f"{LATENCY_RTOL:.0%}, memory beyond {MEMORY_RTOL:.0%}, or MACs); every measurement is kept:", "",
               show.fillna("").to_markdown(index=False)]
    tidy = out / "merged.csv"
    atomic_write_text(tidy, frame.drop(columns=["identity"]).assign(conflict=frame.index.isin(bad_idx)).to_csv(index=False))
    report = out / "report.md"
    atomic_write_text(report, "\n".join(md) + "\n")
    return [report, tidy, *files]
