"""The report's accuracy section: fidelity, receptive field and trained accuracy side by side.

Why one section: the question it answers is "for the same cost, what does each mechanism see and
what can it learn?", so the three metrics must be read together, next to the cost. It writes its own
plots (accuracy-vs-throughput Pareto per task, accuracy vs marker distance, ERF heatmaps) into
``out_dir/plots`` and returns markdown that links them relative to ``out_dir``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..accuracy.verdict import run_validity
from ..results_schema import stored_bool

PLOT_DIR = "plots"


def _ok(res: pd.DataFrame) -> pd.DataFrame:
    return res[res["status"] == "ok"] if "status" in res.columns else res


def _fmt(v: Any, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return "pass" if v else "FAIL"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return format(float(v), spec)
    return str(v)


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out + [""]


def _first(frame: pd.DataFrame, column: str) -> Any:
    if column not in frame.columns:
        return None
    vals = frame[column].dropna()
    return vals.iloc[0] if len(vals) else None


def _acc_cell(frame: pd.DataFrame) -> str:
    if frame.empty or "acc_mean" not in frame.columns or frame["acc_mean"].isna().all():
        return "—"
    r = frame.iloc[0]
    seeds = json.loads(r["acc_seeds"]) if isinstance(r.get("acc_seeds"), str) else []
    std = r.get("acc_std")
    spread = f" ± {std:.3f}" if std is not None and not (isinstance(std, float) and math.isnan(std)) else ""
    flag = {True: "", False: " ✗", None: ""}[stored_bool(r.get("acc_valid"))]
    return f"{r['acc_mean']:.3f}{spread} (n={len(seeds) or 1}){flag}"


def _summary_table(res: pd.DataFrame) -> list[str]:
    tasks = [t for t in dict.fromkeys(res.get("task", pd.Series(dtype=object)).dropna())]
    header = ["mechanism", "grid", "fidelity", "fid rel L2", "fid cosine", "keys/query (min–max)", "1-layer reach",
              "layers to full", "ERF area95", "attention MACs/img", *[f"acc {t}" for t in tasks]]
    rows = []
    for (label, h, w), g in res.groupby(["label", "height", "width"], sort=False):
        passes = [stored_bool(v) for v in g.get("fid_pass", pd.Series(dtype=object)).dropna()]
        fid = "—" if not passes else ("pass" if all(passes) else "FAIL")
        keys = "—"
        if _first(g, "rf_keys_mean") is not None:
            keys = f"{_first(g, 'rf_keys_mean'):.1f} ({_fmt(_first(g, 'rf_keys_min'))}–{_fmt(_first(g, 'rf_keys_max'))})"
        layers = _first(g, "rf_layers_to_full")
        layers = ("never" if _first(g, "rf_keys_mean") is not None else "—") if layers is None else str(int(layers))
        attn_macs = None
        if _first(g, "acc_backbone_macs") is not None:
            attn_macs = _attention_macs(g.iloc[0], int(_first(g, "acc_depth") or 1))
        row = [str(label), f"{h}x{w}", fid, _fmt(_first(g, "fid_rel_l2"), ".2e"), _fmt(_first(g, "fid_cosine"), ".7f"), keys,
               _fmt(_first(g, "rf_reach_fraction"), ".3f"), layers, _fmt(_first(g, "rf_erf_area95"), ".3f"), _fmt(attn_macs)]
        for t in tasks:
            row.append(_acc_cell(g[g["task"] == t]))
        rows.append(row)
    return _md_table(header, rows)


def _attention_macs(row: pd.Series, depth: int) -> int | None:
    """MACs of the attention layers alone per image, from the mechanisms' own formulas."""
    try:
        from ..accuracy.backbone import attention_macs

        opts = json.loads(row["options"]) if isinstance(row.get("options"), str) else {}
        return attention_macs(row["mechanism"], opts, int(row["dim"]), int(row["num_heads"]),
                              (int(row["height"]), int(row["width"])), depth)
    except Exception:  # a plugin mechanism that is not importable here: leave the cell empty
        return None


def _accuracy_table(res: pd.DataFrame) -> list[str]:
    acc = res[res["acc_mean"].notna()] if "acc_mean" in res.columns else res.iloc[0:0]
    if acc.empty:
        return []
    out = []
    for (h, w), grid in acc.groupby(["height", "width"], sort=False):
        tasks = list(dict.fromkeys(grid["task"]))
        img = _first(grid, "acc_image_size")
        out += [f"Test accuracy, {h}x{w} tokens ({_fmt(img)} px images for patch size {_fmt(_first(grid, 'acc_patch_size'))}; "
                f"{_fmt(_first(grid, 'acc_steps'))} steps; ✗ = failed its sanity check):", ""]
        rows = [[str(label), *[_acc_cell(g[g["task"] == t]) for t in tasks]] for label, g in grid.groupby("label", sort=False)]
        out += _md_table(["mechanism", *tasks], rows)
    return out


def _throughput(g: pd.DataFrame) -> tuple[pd.Series, str]:
    if "throughput_img_s" in g.columns and g["throughput_img_s"].notna().all():
        return g["throughput_img_s"], "attention throughput (img/s, this run's timing)"
    return g["acc_train_img_s"], "backbone training throughput (img/s, measured during training)"


def _pareto_plot(res: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    acc = res[res["acc_mean"].notna()]
    for (task, h, w), g in acc.groupby(["task", "height", "width"], sort=False):
        x, xlabel = _throughput(g)
        fig, ax = plt.subplots(figsize=(5.5, 4))
        ax.scatter(x, g["acc_mean"], zorder=3)
        for i, (xi, yi, lab) in enumerate(zip(x, g["acc_mean"], g["label"])):  # staggered: equal scores overlap
            ax.annotate(str(lab), (xi, yi), textcoords="offset points", xytext=(4, 4 + 9 * (i % 3) * (1 if yi < 0.9 else -1)),
                        fontsize=7)
        order = np.argsort(-x.to_numpy())  # frontier: fastest first, keep points better than all faster ones
        best, front = -1.0, []
        for i in order:
            if g["acc_mean"].iloc[i] > best:
                best = g["acc_mean"].iloc[i]
                front.append((x.iloc[i], best))
        if len(front) > 1:
            ax.plot(*zip(*sorted(front)), "--", color="grey", zorder=2, label="Pareto front")
            ax.legend(fontsize=8)
        ax.axhline(float(g["acc_chance"].iloc[0]), color="red", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{task}, {h}x{w} tokens: accuracy vs throughput", fontsize=10)
        path = out / f"accuracy-pareto-{task}-{h}x{w}.png"
        paths.append(_save(fig, path))
    return paths


def _save(fig: Any, path: Path) -> Path:
    """Write a figure as PNG and release it (pyplot keeps every open figure alive otherwise)."""
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _distance_plot(res: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if "acc_by_distance" not in res.columns:
        return []
    paths = []
    rows = res[res["acc_by_distance"].notna()]
    for (task, h, w), g in rows.groupby(["task", "height", "width"], sort=False):
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for _, r in g.iterrows():
            bins = json.loads(r["acc_by_distance"])
            ax.plot(list(bins), [np.nan if v is None else v for v in bins.values()], marker="o", label=str(r["label"]))
        ax.axhline(0.5, color="red", lw=0.8, ls=":")
        ax.set_xlabel("marker distance (fraction of the image side)")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0.3, 1.02)
        ax.legend(fontsize=7)
        ax.set_title(f"{task}, {h}x{w} tokens: accuracy vs marker distance", fontsize=10)
        path = out / f"accuracy-distance-{task}-{h}x{w}.png"
        paths.append(_save(fig, path))
    return paths


def erf_maps(run: Any) -> dict[tuple[str, int, int], np.ndarray]:
    """(label, H, W) -> ERF map, from samples.jsonl (one map per label and grid; tasks share it)."""
    res = run.results
    maps = {}
    for _, r in res.iterrows():
        key = (str(r["label"]), int(r["height"]), int(r["width"]))
        values = run.samples.get((r["case_key"], "rf_erf_map"))
        if key not in maps and values and len(values) == key[1] * key[2]:
            maps[key] = np.asarray(values, dtype=float).reshape(key[1], key[2])
    return maps


def _erf_plot(run: Any, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    maps = erf_maps(run)
    paths = []
    for (h, w) in dict.fromkeys((k[1], k[2]) for k in maps):
        items = [(lab, m) for (lab, hh, ww), m in maps.items() if (hh, ww) == (h, w)]
        fig, axes = plt.subplots(1, len(items), figsize=(2.3 * len(items), 2.8), squeeze=False)
        top = max(m.max() for _, m in items)
        norm = LogNorm(vmin=top * 1e-6, vmax=top)
        for ax, (lab, m) in zip(axes[0], items):
            im = ax.imshow(np.where(m > 0, m, np.nan), norm=norm, cmap="magma", interpolation="nearest")
            ax.set_facecolor("#dddddd")
            ax.set_title(lab, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="|∂ centre / ∂ input| (share; grey = 0)")
        fig.suptitle(f"Effective receptive field of the centre token, {h}x{w} tokens, random init", fontsize=9)
        path = out / f"accuracy-erf-{h}x{w}.png"
        paths.append(_save(fig, path))
    return paths


def render(run: Any, out_dir: Path | str) -> str:
    """Markdown for the run's fid_/rf_/acc_ columns; plots are written to ``out_dir/plots``."""
    out_dir = Path(out_dir)
    res = _ok(run.results)
    md = ["## Accuracy: what each mechanism sees and learns", ""]
    if res.empty:
        return "\n".join(md + ["No successful accuracy cases in this run.", ""])
    if "acc_mean" in res.columns and res["acc_mean"].notna().any():
        status, reasons = run_validity(res)
        md += [f"**Run validity (PairMatch sanity check): {status.upper()}**" + (": " + "; ".join(reasons) if reasons else
               " — global attention learned it and quadrant windows stayed at chance."), ""]
    md += ["Fidelity: kernel vs float64 reference on the same rounded inputs; pass = max error ≤ 2× the naive "
           "same-dtype maths' + 2× rounding, and rel. L2 under the dtype cap. Receptive field: union over heads of the "
           "declared pattern; \"layers to full\" = blocks until every token reaches every other (Swin alternating "
           "plain/shifted); ERF area95 = share of tokens holding 95% of the centre token's input gradient.", ""]
    md += _summary_table(res)
    md += _accuracy_table(res)
    plot_dir = out_dir / PLOT_DIR
    plot_dir.mkdir(parents=True, exist_ok=True)
    images = []
    if "acc_mean" in res.columns and res["acc_mean"].notna().any():
        images += _pareto_plot(res, plot_dir) + _distance_plot(res, plot_dir)
    images += _erf_plot(run, plot_dir)
    if images:
        md += ["### Accuracy plots", "", *[f"![{p.stem}]({p.relative_to(out_dir).as_posix()})" for p in images], ""]
    if "acc_backbone_params" in res.columns and res["acc_backbone_params"].notna().any():
        params = res["acc_backbone_params"].dropna()
        md += [f"These accuracies come from a {_fmt(int(params.min()))}–{_fmt(int(params.max()))}-parameter backbone "
               f"trained for {_fmt(_first(res, 'acc_steps'))} steps: they measure capacity *and* early sample "
               "efficiency, not converged quality. A mechanism that can reach every token in two layers may still sit "
               "at chance within the budget.", ""]
    return "\n".join(md)
