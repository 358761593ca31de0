"""Compare two runs of a suite case by case: did anything get slower, bigger or costlier?

Why this exists: pytest-benchmark compares one statistic against a fixed percentage, and
xformers' gate let a single regression pass. Here latency is judged from the raw samples with a rank
test plus a minimum effect size (``attnbench.stats.compare_samples``), deterministic metrics (MACs,
params) must match exactly, memory within a small tolerance, and the environments must match
before timings are compared at all.

Matching: by ``case_key`` first; a case left over is matched on its user-visible identity
(label, geometry, dtype, mode, task), so a mechanism re-implemented under the same label is still
compared with its predecessor. The options of such a pair are shown in a note.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import pandas as pd

from . import UserError
from .paired import compare_rounds
from .rounds import ROUND_SAMPLES
from .stats import DEFAULT_CONFIDENCE, DEFAULT_THRESHOLD, compare_samples
from .results_schema import MACS, PARAMS, is_missing
from .store import Run

# Environment fields that must agree for latencies to be comparable.
ENV_KEYS = ("device", "device_name", "torch", "threads")
# Identity of a case as the user sees it, for the fallback match.
FALLBACK_KEY = ("label", "height", "width", "batch_size", "dim", "num_heads", "dtype", "mode", "task")
# Deterministic cost metrics: any difference is a change (higher is worse).
EXACT_METRICS = (MACS, PARAMS)
# Memory tolerance. On CPU the allocator peak comes from profiler allocation events and on CUDA
# from max_memory_allocated; both are sums of exact tensor sizes for a fixed op sequence. What can
# move them between runs is library scratch space (oneDNN/cuBLAS workspaces, allocator block
# rounding to 512 B on CUDA), which is small next to any activation of a real change at the sizes
# we benchmark. 1 % or 0.25 MiB, whichever is larger, absorbs that and still flags an extra copy of
# a 64-channel 56x56 float32 activation (0.77 MiB).
MEMORY_RTOL = 0.01
MEMORY_ATOL_MIB = 0.25
# Rounds per run from which compare judges latency by between-round variance (timing.rounds).
MIN_ROUNDS = 3
# The matmul peak each run measures at its start is a cheap canary for machine load: on the shared
# 2-core box it ranged 21-85 GFLOP/s between runs minutes apart. A gap beyond this fraction is reported.
PEAK_DRIFT = 0.2

ORDER = {"regression": 0, "improvement": 1, "inconclusive": 2, "unchanged": 3}


def _natural(text: str) -> list:
    """Sort key that puts ``8x8`` before ``16x16``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def _order(f: "Finding") -> tuple:
    return (ORDER.get(f.verdict, 9), _natural(f.case), f.metric)


@dataclass
class Finding:
    """One (case, metric) comparison."""

    case: str
    metric: str
    baseline: float | str | None
    new: float | str | None
    verdict: str
    ratio: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    p_value: float = math.nan
    note: str = ""
    case_key: str = ""


@dataclass
class Comparison:
    baseline_name: str
    new_name: str
    findings: list[Finding]
    env_differences: dict[str, tuple[Any, Any]]
    only_baseline: list[str] = field(default_factory=list)
    only_new: list[str] = field(default_factory=list)
    threshold: float = DEFAULT_THRESHOLD
    confidence: float = DEFAULT_CONFIDENCE
    load_warnings: list[str] = field(default_factory=list)
    basis: str = ""  # what the latency verdicts rest on, said plainly in the report

    def by_verdict(self, verdict: str) -> list[Finding]:
        return [f for f in self.findings if f.verdict == verdict]

    @property
    def regressions(self) -> list[Finding]:
        return self.by_verdict("regression")

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0

    def render(self, fmt: str = "text", show_unchanged: bool = True) -> str:
        return render_comparison(self, fmt, show_unchanged)


# ------------------------------------------------------------------------------------ environment
def env_differences(base_env: dict[str, Any], new_env: dict[str, Any],
                    keys: Iterable[str] = ENV_KEYS) -> dict[str, tuple[Any, Any]]:
    """Fields of ``keys`` whose values differ between the two env.json dicts."""
    return {k: (base_env.get(k), new_env.get(k)) for k in keys if base_env.get(k) != new_env.get(k)}


def peak_drift(base_env: dict[str, Any], new_env: dict[str, Any], limit: float = PEAK_DRIFT) -> list[str]:
    """Warnings for dtypes whose measured matmul peak differs by more than ``limit`` between the runs."""
    a, b = base_env.get("matmul_peak_gflops") or {}, new_env.get("matmul_peak_gflops") or {}
    out = []
    for dtype in sorted(set(a) & set(b)):
        try:
            x, y = float(a[dtype]), float(b[dtype])
        except (TypeError, ValueError):
            continue
        if x > 0 and y > 0 and max(x, y) / min(x, y) > 1 + limit:
            out.append(f"measured {dtype} matmul peak differs ({x:,.0f} vs {y:,.0f} GFLOP/s): the machine was "
                       "under different load; latency verdicts are unreliable, re-run both on a quiet machine")
    return out


# Env fields that the machine fingerprint covers (a difference there is a different machine).
MACHINE_ENV_KEYS = ("device_name", "torch", "threads")


def machine_check(base_env: dict[str, Any], new_env: dict[str, Any],
                  across_machines: bool) -> tuple[dict[str, tuple[Any, Any]], list[str]]:
    """(fingerprint differences, warnings); ``UserError`` naming them unless ``across_machines``."""
    from . import fingerprint

    diffs = fingerprint.differences(base_env, new_env)
    if not diffs:
        return {}, []
    what = fingerprint.describe(diffs)
    bf16 = _bf16_note(base_env, new_env)
    if not across_machines:
        raise UserError(f"the runs come from different machines ({what}){bf16}; their timings and memory differ "
                        "for reasons no code change explains. Compare runs from one machine, or pass "
                        "--across-machines to compare anyway")
    return diffs, [f"runs from different machines ({what}){bf16}: every latency and memory verdict below "
                   "mixes the code change with the machine change"]


def _bf16_note(base_env: dict[str, Any], new_env: dict[str, Any]) -> str:
    """The measured bf16:fp32 matmul peak ratio of both runs, when it tells the machines apart."""
    ratios = []
    for env in (base_env, new_env):
        peaks = env.get("matmul_peak_gflops") or {}
        try:
            ratios.append(float(peaks["bfloat16"]) / float(peaks["float32"]))
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return ""
    if max(ratios) / max(min(ratios), 1e-9) < 2:
        return ""
    return (f"; measured bf16/fp32 matmul peak {ratios[0]:.2f} (baseline) vs {ratios[1]:.2f} (new): "
            "native bf16 on one side only")


# -------------------------------------------------------------------------------------- matching
def case_name(row: pd.Series) -> str:
    """Short human name of a case: ``swin 56x56 float32 forward`` (+ batch/task when not default)."""
    parts = [str(row.get("label")), f"{_int(row.get('height'))}x{_int(row.get('width'))}",
             str(row.get("dtype")), str(row.get("mode"))]
    if _int(row.get("batch_size"), 1) != 1:
        parts.append(f"b{_int(row.get('batch_size'))}")
    if _present(row.get("task")):
        parts.append(str(row.get("task")))
    return " ".join(parts)


def _int(value: Any, default: int | None = None) -> Any:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default if default is not None else value


def _present(value: Any) -> bool:
    return not is_missing(value) and value != ""


def _fallback_key(row: pd.Series) -> tuple:
    return tuple(str(row.get(c)) if _present(row.get(c)) else "" for c in FALLBACK_KEY)


def match_cases(base: pd.DataFrame, new: pd.DataFrame) -> tuple[list[tuple[pd.Series, pd.Series]], list[int], list[int]]:
    """Pairs of (baseline row, new row), and the indices left unmatched on each side."""
    pairs: list[tuple[pd.Series, pd.Series]] = []
    used_b: set[int] = set()
    used_n: set[int] = set()
    if "case_key" in base.columns and "case_key" in new.columns:
        new_by_key = {k: i for i, k in new["case_key"].items() if _present(k)}
        for i, k in base["case_key"].items():
            j = new_by_key.get(k) if _present(k) else None
            if j is not None and j not in used_n:
                pairs.append((base.loc[i], new.loc[j]))
                used_b.add(i)
                used_n.add(j)
    rest_new: dict[tuple, list[int]] = {}
    for j, row in new.iterrows():
        if j not in used_n:
            rest_new.setdefault(_fallback_key(row), []).append(j)
    for i, row in base.iterrows():
        if i in used_b:
            continue
        candidates = rest_new.get(_fallback_key(row), [])
        if len(candidates) == 1:  # ambiguous identities are not guessed at
            j = candidates.pop()
            pairs.append((row, new.loc[j]))
            used_b.add(i)
            used_n.add(j)
    return pairs, [i for i in base.index if i not in used_b], [j for j in new.index if j not in used_n]


# ------------------------------------------------------------------------------------ comparison
def _num(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return v


def _compare_exact(name: str, metric: str, b: float, n: float, key: str) -> Finding | None:
    if math.isnan(b) or math.isnan(n):
        return None
    if b == n:
        verdict = "unchanged"
    else:
        verdict = "regression" if n > b else "improvement"
    ratio = n / b if b else math.nan
    return Finding(name, metric, b, n, verdict, ratio=ratio, case_key=key,
                   note="" if verdict == "unchanged" else "deterministic metric changed")


def _compare_memory(name: str, b: float, n: float, key: str, rtol: float, atol: float,
                    methods: tuple[Any, Any]) -> Finding | None:
    if math.isnan(b) or math.isnan(n):
        return None
    if methods[0] != methods[1]:
        return Finding(name, "peak_memory_mib", b, n, "inconclusive", case_key=key,
                       note=f"memory measured differently ({methods[0]} vs {methods[1]})")
    tol = max(rtol * abs(b), atol)
    if abs(n - b) <= tol:
        verdict = "unchanged"
    else:
        verdict = "regression" if n > b else "improvement"
    return Finding(name, "peak_memory_mib", b, n, verdict, ratio=n / b if b else math.nan, case_key=key,
                   note=f"tolerance ±{tol:.2f} MiB")


def compare_costs(name: str, brow: pd.Series, nrow: pd.Series, key: str, memory_rtol: float = MEMORY_RTOL,
                  memory_atol_mib: float = MEMORY_ATOL_MIB) -> list[Finding]:
    """The deterministic costs (MACs, params: any change counts) and peak memory (within a tolerance)
    of one matched case; shared by ``compare`` of stored runs and by ``ab``."""
    out = [f for metric in EXACT_METRICS
           if (f := _compare_exact(name, metric, _num(brow.get(metric)), _num(nrow.get(metric)), key)) is not None]
    f = _compare_memory(name, _num(brow.get("peak_memory_mib")), _num(nrow.get("peak_memory_mib")), key,
                        memory_rtol, memory_atol_mib, (brow.get("memory_method"), nrow.get("memory_method")))
    return out + ([f] if f is not None else [])


def compare_pair(brow: pd.Series, nrow: pd.Series, baseline: Run, new: Run, *, threshold: float,
                 confidence: float, memory_rtol: float = MEMORY_RTOL,
                 memory_atol_mib: float = MEMORY_ATOL_MIB) -> list[Finding]:
    """Every comparison of one matched case."""
    name = case_name(nrow)
    key = str(nrow.get("case_key", ""))
    bstat, nstat = str(brow.get("status")), str(nrow.get("status"))
    note = ""
    if str(brow.get("options")) != str(nrow.get("options")) or brow.get("mechanism") != nrow.get("mechanism"):
        note = (f"matched by label: {brow.get('mechanism')} {brow.get('options')} -> "
                f"{nrow.get('mechanism')} {nrow.get('options')}")
    if bstat != "ok" or nstat != "ok":
        if bstat == nstat:
            verdict = "unchanged"
        else:
            verdict = "regression" if bstat == "ok" else "improvement" if nstat == "ok" else "inconclusive"
        err = str(nrow.get("error")) if nstat != "ok" and _present(nrow.get("error")) else ""
        return [Finding(name, "status", bstat, nstat, verdict, note="; ".join(x for x in (note, err) if x), case_key=key)]
    out: list[Finding] = []
    a = baseline.samples.get((str(brow.get("case_key")), "latency_ms"))
    b = new.samples.get((key, "latency_ms"))
    ra = baseline.samples.get((str(brow.get("case_key")), ROUND_SAMPLES)) or []
    rb = new.samples.get((key, ROUND_SAMPLES)) or []
    est = None
    if len(ra) >= MIN_ROUNDS and len(rb) >= MIN_ROUNDS:  # timing.rounds: judged by between-round variance
        est = compare_rounds(ra, rb, threshold=threshold, confidence=confidence)
        basis = f"rounds={est.n_base}/{est.n_new}, Welch p={est.p_value:.2g}"
    elif a is not None and b is not None:
        est = compare_samples(a, b, threshold=threshold, confidence=confidence)
        basis = f"n={est.n_base}/{est.n_new}, within-run samples, Mann-Whitney p={est.p_value:.2g}"
    if est is not None:
        detail = est.reason if est.verdict == "inconclusive" else basis
        out.append(Finding(name, "latency_ms", _num(brow.get("latency_ms")), _num(nrow.get("latency_ms")),
                           est.verdict, est.ratio, est.ci_low, est.ci_high, est.p_value,
                           "; ".join(x for x in (note, detail) if x), key))
    elif _present(brow.get("latency_ms")) and _present(nrow.get("latency_ms")):
        bl, nl = _num(brow.get("latency_ms")), _num(nrow.get("latency_ms"))
        out.append(Finding(name, "latency_ms", bl, nl, "inconclusive", ratio=nl / bl if bl else math.nan,
                           note="; ".join(x for x in (note, "no raw samples in samples.jsonl") if x), case_key=key))
    out += compare_costs(name, brow, nrow, key, memory_rtol, memory_atol_mib)
    if not out and note:
        out.append(Finding(name, "status", bstat, nstat, "unchanged", note=note, case_key=key))
    return out


def compare_runs(baseline: Run, new: Run, *, threshold: float = DEFAULT_THRESHOLD,
                 confidence: float = DEFAULT_CONFIDENCE, allow_env_mismatch: bool = False,
                 memory_rtol: float = MEMORY_RTOL, memory_atol_mib: float = MEMORY_ATOL_MIB,
                 across_machines: bool = False) -> Comparison:
    """Compare ``new`` against ``baseline``; ``UserError`` when the machines (``attnbench.fingerprint``)
    differ unless ``across_machines``, or the other environment fields differ unless allowed."""
    machine_diffs, machine_warnings = machine_check(baseline.env, new.env, across_machines)
    diffs = env_differences(baseline.env, new.env)
    if machine_diffs:  # the fingerprint already names these; they are not an "environment" problem
        diffs = {k: v for k, v in diffs.items() if k not in MACHINE_ENV_KEYS}
    if diffs and not allow_env_mismatch:
        what = ", ".join(f"{k}: {a!r} vs {b!r}" for k, a, b in ((k, *v) for k, v in diffs.items()))
        raise UserError(f"environments differ ({what}); timings are not comparable. Re-run both on the same "
                        "machine and settings, or pass --allow-env-mismatch to compare anyway")
    pairs, only_b, only_n = match_cases(baseline.results, new.results)
    if not pairs:
        raise UserError(f"{baseline.path} and {new.path} have no case in common; compare two runs of the same suite")
    clocks = {(str(b.get("timing_clock", "wall")), str(n.get("timing_clock", "wall"))) for b, n in pairs
              if isinstance(b.get("timing_clock"), str) and isinstance(n.get("timing_clock"), str)}
    mixed = sorted(f"{a} vs {b}" for a, b in clocks if a != b)
    if mixed:
        raise UserError(f"latencies were measured with different timing clocks ({', '.join(mixed)}); re-run one "
                        "suite with the other's timing.clock so both use the same clock")
    findings: list[Finding] = []
    for brow, nrow in pairs:
        findings += compare_pair(brow, nrow, baseline, new, threshold=threshold, confidence=confidence,
                                 memory_rtol=memory_rtol, memory_atol_mib=memory_atol_mib)
    return Comparison(
        baseline_name=baseline.name, new_name=new.name, findings=findings, env_differences=diffs,
        only_baseline=[case_name(baseline.results.loc[i]) for i in only_b],
        only_new=[case_name(new.results.loc[j]) for j in only_n],
        threshold=threshold, confidence=confidence,
        # Across machines a peak gap is the machine, not load: never call it "different load".
        load_warnings=machine_warnings or peak_drift(baseline.env, new.env),
        basis=latency_basis(pairs, baseline, new),
    )


def latency_basis(pairs: list[tuple[pd.Series, pd.Series]], baseline: Run, new: Run) -> str:
    """One plain sentence on what the latency verdicts rest on (between-round or within-run noise)."""
    timed = [(b, n) for b, n in pairs if (str(b.get("case_key")), "latency_ms") in baseline.samples
             and (str(n.get("case_key")), "latency_ms") in new.samples]
    if not timed:
        return ""
    by_rounds = sum(len(baseline.samples.get((str(b.get("case_key")), ROUND_SAMPLES)) or []) >= MIN_ROUNDS
                    and len(new.samples.get((str(n.get("case_key")), ROUND_SAMPLES)) or []) >= MIN_ROUNDS
                    for b, n in timed)
    if by_rounds == len(timed):
        return (f"Latency judged by between-round variance (both runs have timing.rounds >= {MIN_ROUNDS}); drift "
                "between the two runs themselves is still not seen: `attnbench ab` pairs them.")
    return (f"Latency of {len(timed) - by_rounds} of {len(timed)} case(s) judged from within-run samples only: drift "
            "between runs is not seen, so expect false alarms on a shared machine. Set timing.rounds: 5 in the suite "
            "(both runs), or use `attnbench ab` (docs/regression.md).")


# -------------------------------------------------------------------------------------- rendering
def _fmt_value(metric: str, v: Any) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if metric in EXACT_METRICS:
        return f"{int(v):,}"
    return f"{v:.4g}"


def _fmt_change(f: Finding) -> str:
    if math.isnan(f.ratio):
        return "-"
    return f"{f.ratio - 1:+.1%}"


def _fmt_ci(f: Finding) -> str:
    if math.isnan(f.ci_low):
        return "-"
    return f"[{f.ci_low - 1:+.1%}, {f.ci_high - 1:+.1%}]"


def render_comparison(comp: Comparison, fmt: str = "text", show_unchanged: bool = True) -> str:
    """The verdict, the env warnings and a table; ``fmt`` is 'text' or 'md' (GitHub markdown)."""
    from tabulate import tabulate

    md = fmt == "md"
    lines: list[str] = []
    counts = {v: len(comp.by_verdict(v)) for v in ORDER}
    verdict = "REGRESSION" if comp.regressions else "OK"
    ncases = len({f.case_key or f.case for f in comp.findings})
    head = (f"{verdict}: {counts['regression']} regression(s), {counts['improvement']} improvement(s), "
            f"{counts['inconclusive']} inconclusive, {counts['unchanged']} unchanged in {ncases} matched cases "
            f"({comp.baseline_name} -> {comp.new_name}; latency threshold {comp.threshold:.0%}, "
            f"{comp.confidence:.0%} confidence)")
    lines.append(f"**{head}**" if md else head)
    if comp.env_differences:
        for k, (a, b) in comp.env_differences.items():
            w = f"WARNING: environment differs: {k} = {a!r} (baseline) vs {b!r} (new); timings are not comparable"
            lines.append(f"> {w}" if md else w)
    for w in comp.load_warnings:
        lines.append(f"> WARNING: {w}" if md else f"WARNING: {w}")
    if comp.basis:
        lines.append(f"> {comp.basis}" if md else comp.basis)
    lines.append("")
    shown = [f for f in sorted(comp.findings, key=_order)
             if show_unchanged or f.verdict != "unchanged"]
    # Deterministic metrics that did not change add nothing but length.
    shown = [f for f in shown if f.verdict != "unchanged" or f.metric in ("latency_ms", "status")]
    ci_head = f"{comp.confidence:.0%} CI"
    table = [[f.verdict, f.case, f.metric, _fmt_value(f.metric, f.baseline), _fmt_value(f.metric, f.new),
              _fmt_change(f), _fmt_ci(f), f.note] for f in shown]
    if table:
        lines.append(tabulate(table, headers=["verdict", "case", "metric", "baseline", "new", "change", ci_head, "note"],
                              tablefmt="github" if md else "simple", disable_numparse=True))
    for title, cases in (("only in baseline", comp.only_baseline), ("only in new run", comp.only_new)):
        if cases:
            lines += ["", f"{title} ({len(cases)}): " + ", ".join(cases)]
    return "\n".join(lines) + "\n"

