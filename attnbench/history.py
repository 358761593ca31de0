"""History of a suite: every run lined up by date and commit, per case, with step detection.

Why steps and not points: on a shared machine one run in ten can be slow for reasons that have
nothing to do with the code (asv's lesson, pandas-dev/pandas#23412). A regression is a *sustained*
change of level, so the rule (``detect_steps``) asks for one:

For runs 0..n-1 of one case on one machine (oldest first), with per-run median latencies m_i, a
step starts at run k when

1. the ``min_after`` (default 2) consecutive runs k, k+1, … all differ by more than ``threshold``
   (default 5 %), in the same direction, from a strict majority of the up-to-``window`` runs before
   k (not crossing an earlier step). "Majority" is the median's idea made robust for an even window:
   with two runs before, one outlier among them cannot fake or hide a level; and
2. the raw samples of those runs, pooled, differ from the pooled samples of the window before by the
   rule of ``attnbench.stats.compare_samples`` (effect size plus a rank-based interval excluding 1).

The threshold adapts to the series' own noise: it is max(``threshold``, exp(``noise_z``·σ) − 1),
where σ, the run-to-run noise of one run's log-median, is estimated robustly from consecutive runs
(σ = 1.4826·median|Δ log m| / √2; a rare step barely moves a median of differences). On this 2-core
machine, 5 repeated ``blocked_autorange`` medians of one case had a CV of 3-5 %
(docs/findings.md has the noise measured under load); with a fixed 5 % threshold a
10-run series with 3 % drift would show a false step one time in three, with ``noise_z`` = 2
about one in ten, at the price of needing larger steps in noisy series.

A lone outlier fails (1) because the run after it is back on the old level. A change seen only on the
latest run(s), too few to satisfy (1), is reported as *unconfirmed* (one more run decides), never as
a step. Series are split by machine (device and the env.json fingerprint: CPU model and ISA flags,
GPU and capability, driver, torch, CUDA, threads), since timings from different machines are not
comparable.
"""
from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from . import UserError
from .compare import case_name
from .stats import DEFAULT_THRESHOLD, compare_samples, median_ci
from .faults import warn
from .store import atomic_write_text, list_runs, load_run

def machine_of(env: dict, known: list[dict] | None = None) -> tuple:
    """Series key of a run's machine: (device, fingerprint label, fingerprint id).

    A run stored before fingerprints existed gets one rebuilt from its env (``fingerprint.of_env``,
    unknown fields None); unknown is not different, so it joins the one fully recorded fingerprint
    among ``known`` that agrees on every field it has (and stays apart when none or several do)."""
    from . import fingerprint

    fp = fingerprint.of_env(env)
    if not isinstance(env.get("fingerprint"), dict) and known:
        matches = {fingerprint.machine_id(k): k for k in known
                   if all(v is None or k.get(f) == v for f, v in fp.items())}
        if len(matches) == 1:
            fp = next(iter(matches.values()))
    return (env.get("device"), fingerprint.label(fp), f"#{fingerprint.machine_id(fp)}")


@dataclass(frozen=True)
class StepAt:
    """A change of level starting at run ``index`` of a series."""

    index: int
    before: float  # level (ms) before
    after: float   # level (ms) from index on
    confirmed: bool

    @property
    def ratio(self) -> float:
        return self.after / self.before


def run_noise(medians: Sequence[float]) -> float:
    """Robust σ of log run-medians from consecutive differences (0 with fewer than 3 runs)."""
    m = np.log(np.asarray(medians, dtype=float))
    m = m[np.isfinite(m)]
    if m.size < 3:
        return 0.0
    return float(1.4826 * np.median(np.abs(np.diff(m))) / math.sqrt(2.0))


def effective_threshold(medians: Sequence[float], threshold: float = DEFAULT_THRESHOLD, noise_z: float = 2.0) -> float:
    return max(threshold, math.expm1(noise_z * run_noise(medians)))


def detect_steps(samples: Sequence[Sequence[float]], threshold: float = DEFAULT_THRESHOLD, window: int = 5,
                 min_after: int = 2, noise_z: float = 2.0) -> list[StepAt]:
    """Steps in a series of runs, each given by its raw samples (see the module docstring for the rule)."""
    if min_after < 1 or window < 1:
        raise ValueError("window and min_after must be >= 1")
    runs = [np.asarray(s, dtype=float) for s in samples]
    meds = np.array([np.median(r) if r.size else math.nan for r in runs])
    threshold = effective_threshold(meds, threshold, noise_z)
    steps: list[StepAt] = []
    seg = 0
    for k in range(1, len(runs)):
        if k <= seg or not math.isfinite(meds[k]):
            continue
        lo = max(seg, k - window)
        before, after = meds[lo:k], meds[k:k + min_after]
        rel = after[None, :] / before[:, None]  # every after-run against every before-run
        up = np.sum(np.all(rel > 1 + threshold, axis=1)) > before.size / 2
        down = np.sum(np.all(rel < 1 / (1 + threshold), axis=1)) > before.size / 2
        if not (up or down):
            continue
        level = float(np.nanmedian(before))
        est = compare_samples(np.concatenate(runs[lo:k]), np.concatenate(runs[k:k + min_after]), threshold=threshold)
        if est.verdict not in ("regression", "improvement"):
            continue
        confirmed = after.size >= min_after
        new_level = float(np.nanmedian(meds[k:k + window]))
        steps.append(StepAt(k, level, new_level, confirmed))
        if not confirmed:
            break
        seg = k
    return steps


@dataclass
class Series:
    case_key: str
    case: str
    machine: tuple
    runs: list[int] = field(default_factory=list)  # indices into History.runs
    samples: list[list[float]] = field(default_factory=list)

    @property
    def slug(self) -> str:
        """A file name for the series' plot; long labels are cut and made unique by a hash, since file
        systems refuse names over 255 bytes."""
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{self.case}_{self.machine_label}").strip("_")
        if len(slug) > 120:
            slug = f"{slug[:100]}-{hashlib.sha1(slug.encode()).hexdigest()[:12]}"
        return slug

    @property
    def machine_label(self) -> str:
        return " ".join(str(v) for v in self.machine if v is not None)


@dataclass
class RunInfo:
    name: str
    created_at: str
    commit: str
    dirty: bool
    machine: tuple


@dataclass
class History:
    suite_dir: Path
    runs: list[RunInfo]
    series: list[Series]
    steps: dict[tuple[str, tuple], list[StepAt]]


def collect(suite_dir: Path | str, threshold: float = DEFAULT_THRESHOLD, window: int = 5,
            min_after: int = 2) -> History:
    """Load every run of the suite and detect steps per (case, machine)."""
    suite_dir = Path(suite_dir)
    paths = list_runs(suite_dir)
    if not paths:
        raise UserError(f"{suite_dir}: no runs found; pass results/<suite>/ (a folder of run directories)")
    runs: list[RunInfo] = []
    series: dict[tuple[str, tuple], Series] = {}
    from . import fingerprint

    loaded = []
    for path in paths:
        try:
            loaded.append((path, load_run(path)))
        except UserError as exc:  # one damaged run must not hide the others
            warn(f"{exc}; that run is left out of the history")
    if not loaded:
        raise UserError(f"{suite_dir}: none of its {len(paths)} run(s) can be read (see the warnings above)")
    paths = [p for p, _ in loaded]
    recorded = [r.env["fingerprint"] for _, r in loaded if isinstance(r.env.get("fingerprint"), dict)]
    for idx, (path, run) in enumerate(loaded):
        env = run.env
        machine = machine_of(env, [fingerprint.of_env({"fingerprint": fp}) for fp in recorded])
        runs.append(RunInfo(path.name, str(env.get("created_at", "")), str(env.get("git_commit") or "nogit"),
                            bool(env.get("git_dirty")), machine))
        res = run.results
        if res.empty or "latency_ms" not in res.columns:
            continue
        for _, row in res[res["status"].astype(str) == "ok"].iterrows():
            key = str(row["case_key"])
            values = run.samples.get((key, "latency_ms"))
            if values is None:
                if not math.isfinite(float(row.get("latency_ms", math.nan))):
                    continue
                values = [float(row["latency_ms"])]
            s = series.setdefault((key, machine), Series(key, case_name(row), machine))
            s.runs.append(idx)
            s.samples.append(values)
    steps = {k: detect_steps(s.samples, threshold, window, min_after) for k, s in series.items()}
    return History(suite_dir, runs, list(series.values()), steps)


def _plot_series(hist: History, s: Series, path: Path) -> Path:
    import seaborn as sns
    from matplotlib.figure import Figure

    stats = [median_ci(v) for v in s.samples]
    med = np.array([m for m, _, _ in stats])
    lo = np.array([a for _, a, _ in stats])
    hi = np.array([b for _, _, b in stats])
    x = np.array(s.runs)
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=(7.0, 3.6))
        ax = fig.add_subplot()
        ax.fill_between(x, lo, hi, alpha=0.25, label="95% CI of the median")
        ax.plot(x, med, marker="o", ms=4, lw=1.5, label="median latency")
        for st in hist.steps.get((s.case_key, s.machine), []):
            xi = s.runs[st.index]
            ax.axvline(xi - 0.5, color="red" if st.ratio > 1 else "green", ls="--" if st.confirmed else ":", lw=1.2)
            ax.annotate(f"{st.ratio - 1:+.0%}" + ("" if st.confirmed else " (unconfirmed)"), (xi - 0.5, med.max()),
                        fontsize=7, ha="left", va="top")
        ticks = sorted(set(s.runs))
        ax.set_xticks(ticks)
        ax.set_xticklabels([f"{hist.runs[i].created_at[:10]}\n{hist.runs[i].commit[:7]}" for i in ticks],
                           fontsize=6, rotation=0)
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{s.case} — {s.machine_label}", fontsize=9)
        ax.legend(fontsize=7, loc="best")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def write_history(suite_dir: Path | str, threshold: float = DEFAULT_THRESHOLD, window: int = 5, min_after: int = 2,
                  plots: bool = True) -> tuple[Path, History]:
    """Write ``history.md`` (and ``history/<case>.png``) into the suite directory."""
    hist = collect(suite_dir, threshold, window, min_after)
    root = hist.suite_dir
    md = [f"# History of {root.name}", "",
          f"{len(hist.runs)} runs, {len(hist.series)} case series. A step is a change of more than "
          f"max({threshold:.0%}, twice the series' run-to-run noise) held for {min_after} consecutive runs "
          f"and significant on the raw samples (against up to {window} runs before); a single noisy run is "
          "not a step. See `attnbench/history.py` for the exact rule.", "", "## Runs", "",
          "| # | date (UTC) | run | commit | machine |", "|--:|:--|:--|:--|:--|"]
    for i, r in enumerate(hist.runs):
        machine = " ".join(str(v) for v in r.machine if v is not None)
        md.append(f"| {i} | {r.created_at[:19]} | {r.name} | {r.commit}{' (dirty)' if r.dirty else ''} | {machine} |")
    rows = []
    for s in hist.series:
        for st in hist.steps[(s.case_key, s.machine)]:
            run = hist.runs[s.runs[st.index]]
            kind = ("slower" if st.ratio > 1 else "faster") + ("" if st.confirmed else " (unconfirmed: latest run only)")
            rows.append(f"| {s.case} | {s.machine_label} | {s.runs[st.index]} ({run.commit}) | {st.before:.4g} | "
                        f"{st.after:.4g} | {st.ratio - 1:+.1%} | {kind} |")
    md += ["", "## Steps", ""]
    if rows:
        md += ["| case | machine | from run | before (ms) | after (ms) | change | kind |",
               "|:--|:--|:--|--:|--:|--:|:--|", *rows]
    else:
        md.append("No steps detected.")
    md += ["", "## Cases", "", "| case | machine | runs | first (ms) | latest (ms) | run-to-run noise | threshold | plot |",
           "|:--|:--|--:|--:|--:|--:|--:|:--|"]
    with_steps = []
    for s in hist.series:
        first, last = np.median(s.samples[0]), np.median(s.samples[-1])
        link = ""
        if plots:
            p = _plot_series(hist, s, root / "history" / f"{s.slug}.png")
            link = f"[plot]({p.relative_to(root).as_posix()})"
            if hist.steps[(s.case_key, s.machine)]:
                with_steps.append((s, p))
        meds = [float(np.median(v)) for v in s.samples]
        md.append(f"| {s.case} | {s.machine_label} | {len(s.runs)} | {first:.4g} | {last:.4g} | "
                  f"{run_noise(meds):.1%} | {effective_threshold(meds, threshold):.1%} | {link} |")
    if with_steps:
        md += ["", "## Plots of cases with steps", ""]
        md += [f"![{s.case}]({p.relative_to(root).as_posix()})" for s, p in with_steps]
    out = root / "history.md"
    atomic_write_text(out, "\n".join(md) + "\n")
    return out, hist


def summary_lines(hist: History) -> list[str]:
    out: list[str] = []
    for s in hist.series:
        for st in hist.steps[(s.case_key, s.machine)]:
            tag = "step" if st.confirmed else "unconfirmed change"
            out.append(f"{tag}: {s.case} ({s.machine_label}) {st.ratio - 1:+.1%} from run "
                       f"{hist.runs[s.runs[st.index]].name}")
    return out

