"""The report's papers'-table section for runs that measured whole backbones (``models:``).

Why a section of its own: a backbone row answers "is this the paper's model?" (params and MACs at
224² against what the paper printed and what the authors' code counts) and "what does it cost here?"
(img/s, latency, peak memory per device, dtype, mode and resolution), which the per-mechanism
pivots do not put side by side. The scaling plot shows img/s against pixels per device.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..results_schema import LATENCY_MS, MACS, PARAMS, PEAK_MEMORY_MIB, STATUS


def _model_rows(results: pd.DataFrame) -> pd.DataFrame:
    if "model" not in results.columns:
        return results.iloc[0:0]
    return results[results["model"].notna() & (results["model"].astype(str) != "")]


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None or pd.isna(value) else format(value, spec)


def _num(value: Any) -> str:
    """Three significant digits without exponents (3530, 26.1, 0.417)."""
    if value is None or pd.isna(value):
        return "–"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def papers_rows(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per model label: params and MACs at 224² (batch 1 per image) against the paper and
    issue 13's counted targets, where the model has them."""
    from mechanisms import backbones

    out = []
    for label, group in rows.groupby("label", sort=False):
        model = str(group["model"].iloc[0])
        at224 = group[(group["height"] == 224) & (group["width"] == 224) & (group[STATUS] == "ok")]
        params = group[PARAMS].dropna()
        macs = (at224[MACS] / at224["batch_size"]).dropna() if MACS in at224 else pd.Series(dtype=float)
        options = group["options"].iloc[0] if "options" in group else None
        overridden = bool(options) and options not in ("{}", "null")
        swapped = label != model or overridden  # not the paper's model: no paper row to compare with
        spec = backbones.get_spec(model)
        out.append({
            "model": label,
            "params": params.iloc[0] if len(params) else None,
            "gmacs_224": macs.iloc[0] / 1e9 if len(macs) else None,
            "paper_params": "" if swapped else spec.paper.get("params", ""),
            "paper_flops": "" if swapped else spec.paper.get("flops", ""),
            "target_params": None if swapped else spec.target.get("params"),
            "target_macs": None if swapped else spec.target.get("macs"),
        })
    return out


def section(results: pd.DataFrame, root: Path, with_plots: bool = True) -> str | None:
    """Markdown of the section (and its plot under ``root/plots``), or None without model rows."""
    rows = _model_rows(results)
    if rows.empty:
        return None
    md = ["## Whole backbones: the papers' table", "",
          "Params count every parameter (frozen ones included); GMACs are one 224² image, analytic "
          "(every matmul and conv; no norms, softmax or GELU, as in the papers). Targets: issue 13's counts of "
          "the authors' code. A swapped (skeleton/mechanism) or overridden model has no paper row.", "",
          "| model | params | GMACs 224² | paper params | paper FLOPs | params vs target | MACs vs target |",
          "|:--|--:|--:|--:|--:|--:|--:|"]
    for r in papers_rows(rows):
        dp = (f"{r['params'] / r['target_params'] - 1:+.2%}" if r["params"] is not None and r["target_params"] else "")
        dm = (f"{r['gmacs_224'] * 1e9 / r['target_macs'] - 1:+.2%}" if r["gmacs_224"] is not None and r["target_macs"] else "")
        md.append(f"| {r['model']} | {_fmt(r['params'] and r['params'] / 1e6, '.2f')}M | {_fmt(r['gmacs_224'], '.2f')} | "
                  f"{r['paper_params']} | {r['paper_flops']} | {dp} | {dm} |")
    md.append("")
    ok = rows[rows[STATUS] == "ok"].copy()
    if not ok.empty and LATENCY_MS in ok:
        ok["size"] = ok["height"].astype(int).astype(str) + "×" + ok["width"].astype(int).astype(str)
        for (device, dtype, mode), frame in ok.groupby(["device", "dtype", "mode"], sort=False):
            md += [f"### {device} · {dtype} · {mode}: img/s, latency ms, peak MiB", ""]
            cells = frame.assign(cell=[
                f"{_num(r.get('throughput_img_s'))} · {_num(r.get(LATENCY_MS))} · {_fmt(r.get(PEAK_MEMORY_MIB), '.0f')}"
                for _, r in frame.iterrows()])
            table = cells.pivot_table(index="label", columns="size", values="cell", aggfunc="first", sort=False)
            md += [table.fillna("–").to_markdown(), ""]
        if with_plots:
            path = scaling_plot(ok, root / "plots")
            if path is not None:
                md += [f"![img/s against pixels](plots/{path.name})", ""]
    not_run = rows[rows[STATUS] != "ok"]
    if not not_run.empty:
        md += [f"{len(not_run)} backbone case(s) did not run; see 'Cases that did not run'.", ""]
    return "\n".join(md)


def scaling_plot(ok: pd.DataFrame, folder: Path) -> Path | None:
    """img/s against pixels (log-log), one panel per device·dtype·mode, one line per model."""
    if "throughput_img_s" not in ok or ok["throughput_img_s"].dropna().empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(ok.groupby(["device", "dtype", "mode"], sort=False))
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, ((device, dtype, mode), frame) in zip(axes[0], groups):
        for label, series in frame.groupby("label", sort=False):
            series = series.assign(pixels=series["height"] * series["width"]).sort_values("pixels")
            ax.plot(series["pixels"], series["throughput_img_s"], marker="o", label=str(label))
        ax.set(xscale="log", yscale="log", xlabel="pixels (H·W)", ylabel="images/s", title=f"{device} · {dtype} · {mode}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "backbones_throughput_vs_pixels.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
