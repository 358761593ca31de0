"""Assemble a run's report from its stored files: environment, tables per group, scaling, plots.

Layout written into the run directory: ``report.md``, ``report.tex``, ``tables/<metric>__<group>.csv``,
``plots/<kind>__<group>.{png,svg}``. Paths inside report.md are relative, so the report renders on
GitHub next to the committed run.
"""
from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any

import pandas as pd

from ..store import Run, atomic_write_text, load_run
from . import plots, tables
from .scaling import describe_crossover, fit_power_law

ENV_FIELDS = (
    "created_at", "git_commit", "git_dirty", "attnbench_version", "python", "platform", "cpu", "cpu_count",
    "torch", "cuda", "cudnn", "driver", "device", "device_name", "threads", "omp_wait_policy", "tf32_matmul",
    "tf32_cudnn", "cudnn_benchmark", "cudnn_deterministic", "float32_matmul_precision", "matmul_peak_gflops",
)
ACCURACY_PREFIXES = ("fid_", "rf_", "acc_")


def _env_table(env: dict[str, Any]) -> str:
    rows = [(k, env[k]) for k in ENV_FIELDS if k in env and env[k] is not None]
    if not rows:
        return "_no env.json in this run_"

    def show(v: Any) -> str:
        if isinstance(v, dict):
            return ", ".join(f"{k}: {tables.fmt_number(float(x)) if isinstance(x, (int, float)) else x}"
                             for k, x in v.items())
        return str(v).replace("|", "\\|")

    return "\n".join(["| field | value |", "|:--|:--|"] + [f"| {k} | {show(v)} |" for k, v in rows])


def _peak_gflops(env: dict[str, Any], dtype: str) -> float | None:
    peaks = env.get("matmul_peak_gflops") or {}
    try:
        return float(peaks.get(dtype)) if isinstance(peaks, dict) and peaks.get(dtype) is not None else None
    except (TypeError, ValueError):
        return None


def _scaling_table(frame: pd.DataFrame, baseline: str) -> pd.DataFrame | None:
    """α of latency and memory per mechanism, and where each becomes cheaper than the baseline."""
    metrics = [(c, n) for c, n in (("latency_ms", "latency"), ("peak_memory_mib", "memory")) if tables.has_metric(frame, c)]
    if not metrics:
        return None
    ok = tables.ok_rows(frame)
    index = pd.Index(tables.label_order(frame), name="mechanism")
    out = pd.DataFrame(index=index, dtype=object)
    for column, name in metrics:
        wide = ok.pivot_table(index="tokens", columns="label", values=column, aggfunc="first")
        for lab in index:
            if lab not in wide.columns:
                out.loc[lab, f"α {name}"] = "n/a"
                continue
            fit = fit_power_law(wide.index, wide[lab])
            out.loc[lab, f"α {name}"] = f"{fit.alpha:.2f}" if fit else "n/a (1 size)"
            if baseline in wide.columns and lab != baseline:
                text, _ = describe_crossover(wide.index, wide[lab], wide[baseline], baseline)
                out.loc[lab, f"{name} vs {baseline}"] = text
            elif baseline in wide.columns:
                out.loc[lab, f"{name} vs {baseline}"] = "(baseline)"
    return out.fillna("n/a")


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _accuracy_section(run: Run, out_dir: Path) -> str | None:
    cols = [c for c in run.results.columns if c.startswith(ACCURACY_PREFIXES)]
    if not cols:
        return None
    try:
        module = importlib.import_module("attnbench.report.accuracy_section")
    except ModuleNotFoundError as exc:
        if exc.name != "attnbench.report.accuracy_section":
            raise
        return None
    return module.render(run, out_dir)


def render_markdown_and_files(run: Run, baseline: str = "global", with_plots: bool = True) -> tuple[str, str, list[Path]]:
    """(report.md text, report.tex text, files written: CSVs and plots)."""
    root = run.path
    res = run.results
    env = run.env
    files: list[Path] = []
    suite = run.suite.get("name") or root.parent.name
    md = [f"# {suite}: {root.name}", ""]
    if run.suite.get("description"):
        md += [str(run.suite["description"]), ""]
    md += ["## Environment", "", _env_table(env), ""]
    tex = [r"% attnbench report (needs \usepackage{booktabs})", f"% run {latex_comment(root.name)}"]
    if res.empty:
        md += ["_No results in this run._", ""]
        return "\n".join(md), "\n".join(tex) + "\n", files
    counts = res["status"].astype(str).value_counts()
    md += ["## Summary", "", f"{len(res)} cases: " + ", ".join(f"{n} {s}" for s, n in counts.items())
           + f". Baseline for speed-ups and crossovers: `{baseline}`.", ""]
    for group in tables.iter_groups(res):
        frame = group.frame
        md += [f"## {group.title}", ""]
        for spec in tables.METRICS:
            if not tables.has_metric(frame, spec.column):
                continue
            title = spec.title
            if spec.column == "peak_memory_mib" and "memory_method" in frame.columns:
                methods = sorted(set(tables.ok_rows(frame)["memory_method"].dropna().astype(str)))
                title += f" [{', '.join(methods)}]" if methods else ""
            table = tables.pivot(frame, spec.fmt)
            md += [f"### {title}", "", tables.to_markdown(table), ""]
            tex += ["", tables.to_booktabs(table, f"{title}: {group.title}", f"tab:{spec.file}-{group.slug}")]
            csv = root / "tables" / f"{spec.file}__{group.slug}.csv"
            csv.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(csv, tables.pivot(frame, spec.csv_value).to_csv())
            files.append(csv)
        speed = tables.speedup_table(frame, baseline)
        if speed is not None:
            title = f"Speed-up vs {baseline} (latency of {baseline} / latency; >1 is faster)"
            md += [f"### {title}", "", tables.to_markdown(speed), ""]
            tex += ["", tables.to_booktabs(speed, f"{title}: {group.title}", f"tab:speedup-{group.slug}")]
            csv = root / "tables" / f"speedup_vs_{baseline}__{group.slug}.csv"
            atomic_write_text(csv, speed.to_csv())
            files.append(csv)
        elif tables.has_metric(frame, "latency_ms"):
            md += [f"_No speed-up table: baseline `{baseline}` is not in this group (choose one with --baseline)._", ""]
        scaling = _scaling_table(frame, baseline)
        if scaling is not None:
            md += ["### Scaling with tokens (cost ∝ tokens^α, log-log fit; crossover by log-log interpolation)", "",
                   tables.to_markdown(scaling), ""]
        images: list[Path] = []
        stem = root / "plots"
        if with_plots and tables.has_metric(frame, "latency_ms"):
            images += plots.scaling_plot(frame, "latency_ms", "latency (ms, median; bars: ±½ IQR)",
                                         f"Latency vs tokens — {group.title}", stem / f"latency__{group.slug}",
                                         baseline, err_column="latency_iqr_ms")
        if with_plots and tables.has_metric(frame, "peak_memory_mib"):
            images += plots.scaling_plot(frame, "peak_memory_mib", "peak memory (MiB)",
                                         f"Peak memory vs tokens — {group.title}", stem / f"memory__{group.slug}",
                                         baseline)
        if with_plots and tables.has_metric(frame, "achieved_gflops"):
            images += plots.gflops_plot(frame, _peak_gflops(env, str(group.get("dtype"))),
                                        f"Achieved GFLOP/s — {group.title}", stem / f"gflops__{group.slug}")
        files += images
        pngs = [p for p in images if p.suffix == ".png"]
        if pngs:
            md += ["### Plots", "", *[f"![{p.stem}]({_rel(p, root)})" for p in pngs], ""]
    mism = tables.mac_disagreements(res)
    if not mism.empty:
        md += ["## FLOP counter disagreements (counted MACs differ from the analytic formula by > 2 %)", "",
               mism.to_markdown(index=False), ""]
    fails = tables.failures(res)
    if not fails.empty:
        md += ["## Cases that did not run", "", fails.fillna("").to_markdown(index=False), ""]
    from .backends_section import render as backends_section

    section = backends_section(res)
    if section:
        md += [section.rstrip(), ""]
    acc = _accuracy_section(run, root)
    if acc:
        md += [acc.rstrip(), ""]
    return "\n".join(md), "\n".join(tex) + "\n", files


def latex_comment(text: str) -> str:
    return text.replace("\n", " ")


def write_report(run_dir: Path | str, baseline: str = "global", plots: bool = True) -> list[Path]:
    """Write report.md, report.tex, pivot CSVs and (unless ``plots=False``) plots into ``run_dir``.

    Returns every file written, report.md first.
    """
    run = load_run(run_dir)
    md, tex, files = render_markdown_and_files(run, baseline, with_plots=plots)
    md_path, tex_path = run.path / "report.md", run.path / "report.tex"
    atomic_write_text(md_path, md)
    atomic_write_text(tex_path, tex)
    return [md_path, tex_path, *files]
