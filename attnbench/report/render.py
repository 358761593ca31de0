"""Assemble a run's report from its stored files: environment, tables per group, scaling, plots.

Layout written into the run directory: ``report.md``, ``report.tex``, ``tables/<metric>__<group>.csv``,
``plots/<kind>__<group>.{png,svg}``. Paths inside report.md are relative, so the report renders on
GitHub next to the committed run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .. import metrics as metric_registry
from ..results_schema import LATENCY_MS, MEMORY_METHOD, PEAK_MEMORY_MIB, STATUS
from ..store import Run, atomic_write_text, load_run
from . import papers_table, tables
from .scaling import describe_crossover, fit_power_law

ENV_FIELDS = (
    "created_at", "git_commit", "git_dirty", "attnbench_version", "python", "platform", "cpu", "cpu_count",
    "torch", "cuda", "cudnn", "driver", "device", "device_name", "threads", "omp_wait_policy", "tf32_matmul",
    "tf32_cudnn", "cudnn_benchmark", "cudnn_deterministic", "float32_matmul_precision", "matmul_peak_gflops",
)


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


def _scaling_table(frame: pd.DataFrame, baseline: str) -> pd.DataFrame | None:
    """α of latency and memory per mechanism, and where each becomes cheaper than the baseline."""
    metrics = [(c, n) for m in metric_registry.all_metrics() for c, n in m.report_scaling if tables.has_metric(frame, c)]
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
    counts = res[STATUS].astype(str).value_counts()
    md += ["## Summary", "", f"{len(res)} cases: " + ", ".join(f"{n} {s}" for s, n in counts.items())
           + f". Baseline for speed-ups and crossovers: `{baseline}`.", ""]
    for group in tables.iter_groups(res):
        frame = group.frame
        md += [f"## {group.title}", ""]
        for spec in tables.report_tables():
            if not tables.has_metric(frame, spec.column):
                continue
            title = spec.title
            if spec.column == PEAK_MEMORY_MIB and MEMORY_METHOD in frame.columns:
                methods = sorted(set(tables.ok_rows(frame)[MEMORY_METHOD].dropna().astype(str)))
                title += f" [{', '.join(methods)}]" if methods else ""
            table = tables.pivot(frame, spec.cell)
            md += [f"### {title}", "", tables.to_markdown(table), ""]
            tex += ["", tables.to_booktabs(table, f"{title}: {group.title}", f"tab:{spec.file}-{group.slug}")]
            csv = root / "tables" / f"{spec.file}__{group.slug}.csv"
            csv.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(csv, tables.pivot(frame, spec.value).to_csv())
            files.append(csv)
        speed = tables.speedup_table(frame, baseline)
        if speed is not None:
            title = f"Speed-up vs {baseline} (latency of {baseline} / latency; >1 is faster)"
            md += [f"### {title}", "", tables.to_markdown(speed), ""]
            tex += ["", tables.to_booktabs(speed, f"{title}: {group.title}", f"tab:speedup-{group.slug}")]
            csv = root / "tables" / f"speedup_vs_{baseline}__{group.slug}.csv"
            atomic_write_text(csv, speed.to_csv())
            files.append(csv)
        elif tables.has_metric(frame, LATENCY_MS):
            md += [f"_No speed-up table: baseline `{baseline}` is not in this group (choose one with --baseline)._", ""]
        scaling = _scaling_table(frame, baseline)
        if scaling is not None:
            md += ["### Scaling with tokens (cost ∝ tokens^α, log-log fit; crossover by log-log interpolation)", "",
                   tables.to_markdown(scaling), ""]
        images: list[Path] = []
        stem = root / "plots"
        if with_plots:
            ranked = sorted(metric_registry.all_metrics(), key=lambda m: min((t.rank for t in m.report_tables), default=100))
            for m in ranked:
                if m.report_plots is not None and any(tables.has_metric(frame, t.column) for t in m.report_tables):
                    images += m.report_plots(frame, env, group, stem, baseline)
        files += images
        pngs = [p for p in images if p.suffix == ".png"]
        if pngs:
            md += ["### Plots", "", *[f"![{p.stem}]({_rel(p, root)})" for p in pngs], ""]
    fails = tables.failures(res)
    if not fails.empty:
        md += ["## Cases that did not run", "", fails.fillna("").to_markdown(index=False), ""]
    for m in metric_registry.all_metrics():
        section = m.report_section(run, root) if m.report_section is not None else None
        if section:
            md += [section.rstrip(), ""]
    papers = papers_table.section(res, root, with_plots)  # runs that measured whole backbones
    if papers:
        md += [papers.rstrip(), ""]
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
