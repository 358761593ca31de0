"""Plots of a run: cost against tokens on log-log axes, with fitted exponents and crossovers marked.

Why log-log: a power law cost ∝ tokens^α is a straight line of slope α, so quadratic global
attention and linear windowed attention separate at a glance, and the legend carries the fitted α.
Figures are built on ``matplotlib.figure.Figure`` (no pyplot global state, no display needed) with
seaborn's style and palette, and saved as PNG (for GitHub) and SVG (for papers).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, NullLocator

from .scaling import describe_crossover, fit_power_law
from .tables import label_order, ok_rows

FORMATS = ("png", "svg")


def _save(fig: Figure, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in FORMATS:
        path = stem.with_suffix(f".{ext}")
        fig.savefig(path, dpi=130, bbox_inches="tight")
        out.append(path)
    return out


def _series(frame: pd.DataFrame, label: str, column: str) -> pd.DataFrame:
    sub = ok_rows(frame[frame["label"].astype(str) == label])
    sub = sub[pd.to_numeric(sub[column], errors="coerce").notna()]
    return sub.assign(_t=pd.to_numeric(sub["tokens"]), _v=pd.to_numeric(sub[column])).sort_values("_t")


def _token_ticks(ax, frame: pd.DataFrame) -> None:
    """Ticks at the measured sizes, labelled "56²\n3136" (log-scale minor labels collide)."""
    sizes = frame[["height", "width", "tokens"]].drop_duplicates().sort_values("tokens")
    ticks, labels = [], []
    for h, w, t in sizes.itertuples(index=False):
        if int(t) in ticks:
            continue
        ticks.append(int(t))
        labels.append(f"{int(h)}²\n{int(t)}" if int(h) == int(w) else f"{int(h)}×{int(w)}\n{int(t)}")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, fontsize=7)


def _palette(labels: list[str]) -> dict[str, tuple]:
    return dict(zip(labels, sns.color_palette("colorblind", n_colors=max(len(labels), 1))))


def scaling_plot(frame: pd.DataFrame, column: str, ylabel: str, title: str, stem: Path,
                 baseline: str | None = "global", err_column: str | None = None) -> list[Path]:
    """``column`` against tokens, one line per mechanism, α in the legend, crossovers vs ``baseline`` marked.

    A crossover mark (star and dotted vertical line, in the mechanism's colour) sits where that
    mechanism becomes cheaper than the baseline, by log-log interpolation between measured sizes.
    Returns the files written; nothing when no mechanism has a measured value.
    """
    labels = [lab for lab in label_order(frame) if not _series(frame, lab, column).empty]
    if not labels:
        return []
    colors = _palette(labels)
    base = _series(frame, baseline, column) if baseline in labels else None
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=(7.0, 4.6))
        ax = fig.add_subplot()
        for lab in labels:
            s = _series(frame, lab, column)
            fit = fit_power_law(s["_t"], s["_v"])
            name = f"{lab} (α={fit.alpha:.2f})" if fit else lab
            yerr = None
            if err_column and err_column in s.columns:
                half = pd.to_numeric(s[err_column], errors="coerce").fillna(0).to_numpy() / 2
                yerr = np.vstack([np.minimum(half, s["_v"].to_numpy() * 0.999), half])
            ax.errorbar(s["_t"], s["_v"], yerr=yerr, marker="o", ms=4, lw=1.6, capsize=2,
                        color=colors[lab], label=name)
            if base is not None and lab != baseline:
                grid = pd.merge(s[["_t", "_v"]], base[["_t", "_v"]], on="_t", suffixes=("_a", "_b"))
                _, cross = describe_crossover(grid["_t"], grid["_v_a"], grid["_v_b"], baseline)
                if cross is not None and cross.direction == "a_cheaper":
                    y = float(np.exp(np.interp(math.log(cross.tokens), np.log(s["_t"]), np.log(s["_v"]))))
                    ax.axvline(cross.tokens, color=colors[lab], ls=":", lw=1)
                    ax.plot([cross.tokens], [y], marker="*", ms=12, color=colors[lab], mec="black", mew=0.5,
                            ls="none")
                    ax.annotate(f"≈{cross.side:.0f}²", (cross.tokens, y), textcoords="offset points",
                                xytext=(4, -12), fontsize=7, color=colors[lab])
        if base is not None and len(labels) > 1:
            ax.plot([], [], marker="*", ms=10, color="grey", mec="black", mew=0.5, ls=":",
                    label=f"cheaper than {baseline} from here")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _token_ticks(ax, ok_rows(frame))
        ax.set_xlabel("resolution, tokens (H·W)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="best")
        return _save(fig, stem)


def gflops_plot(frame: pd.DataFrame, peak_gflops: float | None, title: str, stem: Path) -> list[Path]:
    """Achieved GFLOP/s against tokens, with the device's measured matmul peak as a horizontal line."""
    labels = [lab for lab in label_order(frame) if not _series(frame, lab, "achieved_gflops").empty]
    if not labels:
        return []
    colors = _palette(labels)
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=(7.0, 4.6))
        ax = fig.add_subplot()
        for lab in labels:
            s = _series(frame, lab, "achieved_gflops")
            ax.plot(s["_t"], s["_v"], marker="o", ms=4, lw=1.6, color=colors[lab], label=lab)
        if peak_gflops and math.isfinite(peak_gflops):
            ax.axhline(peak_gflops, color="black", ls="--", lw=1, label=f"matmul peak {peak_gflops:,.0f} GFLOP/s")
        ax.set_xscale("log")
        _token_ticks(ax, ok_rows(frame))
        ax.set_xlabel("resolution, tokens (H·W)")
        ax.set_ylabel("achieved GFLOP/s (2·MACs of the step / latency)")
        ax.set_ylim(bottom=0)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="best")
        return _save(fig, stem)
