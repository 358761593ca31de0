"""Verdicts and the report of an ``attnbench ab`` session, in ``compare``'s words and exit codes.

Latency is judged from the per-round paired ratios (``attnbench.paired.paired_verdict``); MACs,
params, peak memory and status exactly as ``compare`` judges them, so a session fails a check for
the same reasons a comparison of two runs would. A session of a commit against itself (A/A) adds a
calibration: the false alarms it saw and, per case, the smallest slowdown the gate would catch with
95 % probability on this machine, which is what ``--threshold`` should be chosen from.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .ab import Session
from .compare import Comparison, Finding, _num, _order, case_name, compare_costs
from .paired import confirmed_verdict, detectable_slowdown, needs_confirmation, robust_sd
from .store import atomic_write_text


def _name(session: Session, i: int) -> str:
    p = session.pairs[i]
    row = p.head.id_row()
    if session.variant:
        row["label"] = f"{p.base.label} vs {p.head.label}"
    return case_name(pd.Series(row))


def _span(counts: list[int]) -> str:
    return f"{counts[0]}" if counts[0] == counts[-1] else f"{counts[0]}-{counts[-1]}"


def rounds_text(session: Session) -> str:
    """"16 rounds", or "16 rounds (8-12 for 5 cases whose call outlasts a round's budget)"."""
    fewer = sorted(n for i, n in session.rounds_of.items() if n < session.rounds and not session.pairs[i].failed)
    text = f"{session.rounds} rounds"
    if fewer:
        text += f" ({_span(fewer)} for {len(fewer)} cases whose call outlasts a round's budget)"
    return text


def confirmation_text(session: Session) -> str:
    """"16 confirmation rounds for 2 cases", or "" when none was confirmed."""
    confirmed = sorted(len(r) for r in session.confirm_ratios.values() if r)
    if not confirmed:
        return ""
    return f"{_span(confirmed)} confirmation rounds for {len(confirmed)} case{'s' * (len(confirmed) > 1)}"


def findings(session: Session, threshold: float, confidence: float) -> Comparison:
    out: list[Finding] = []
    for i, p in enumerate(session.pairs):
        name, key = _name(session, i), p.head_row.key()
        brow, hrow = session.rows[p.base_row.key()], session.rows[p.head_row.key()]
        bs, hs = str(brow["status"]), str(hrow["status"])
        if bs != "ok" or hs != "ok":
            verdict = ("unchanged" if bs == hs else "regression" if bs == "ok"
                       else "improvement" if hs == "ok" else "inconclusive")
            err = str(hrow.get("error") or brow.get("error") or "")
            out.append(Finding(name, "status", bs, hs, verdict, note=err, case_key=key))
            continue
        ratios, confirm = session.ratios[i], session.confirm_ratios.get(i, [])
        est = confirmed_verdict(ratios, confirm, threshold=threshold, confidence=confidence)
        confirmed = bool(confirm) and needs_confirmation(ratios, threshold=threshold, confidence=confidence)
        if est.verdict == "inconclusive" or confirmed:
            note = est.reason  # both looks, when there were two
        else:
            spread = robust_sd(np.log(ratios)) if len(ratios) >= 2 else math.nan
            note = f"{est.n_base} paired rounds, signed-rank p={est.p_value:.2g}, round spread ±{spread:.1%}"
        out.append(Finding(name, "latency_ms", _num(brow.get("latency_ms")), _num(hrow.get("latency_ms")), est.verdict,
                           est.ratio, est.ci_low, est.ci_high, est.p_value, note, key))
        out += compare_costs(name, brow, hrow, key)
    b, h = session.sides["base"].ref, session.sides["head"].ref
    confirmed_cases = confirmation_text(session)
    side_a = b.title + (f" {session.variant[0]}" if session.variant else "")
    side_b = h.title + (f" {session.variant[1]}" if session.variant else "")
    return Comparison(
        baseline_name=side_a, new_name=side_b, findings=out, env_differences={},
        only_baseline=[c.describe() for c in session.only_base], only_new=[c.describe() for c in session.only_head],
        threshold=threshold, confidence=confidence,
        basis=(f"Latency judged from {rounds_text(session)} of paired measurements per case (base and head measured alternately "
               f"in each round, seed {session.seed}); signed-rank interval of the head/base ratio"
               + (f"; {confirmed_cases} not unchanged after their rounds: an inconclusive one judged from its "
                  "confirmation rounds alone, a flagged one kept unless they contradict it." if confirmed_cases else ".")),
    )


def calibration(session: Session, comp: Comparison) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per case: round spread and smallest detectable slowdown; overall: false alarms and a suggested threshold."""
    lat = {f.case_key: f for f in comp.findings if f.metric == "latency_ms"}
    rows = []
    for i, p in enumerate(session.pairs):
        f = lat.get(p.head_row.key())
        if f is None:
            continue
        d = np.log(session.ratios[i])
        rows.append({"case": f.case, "rounds": len(d), "confirmation_rounds": len(session.confirm_ratios.get(i, [])),
                     "change": f.ratio - 1, "verdict": f.verdict,
                     "round_spread": robust_sd(d),
                     "detectable_at_threshold": detectable_slowdown(d, threshold=comp.threshold,
                                                                     confidence=comp.confidence),
                     "detectable_any_threshold": detectable_slowdown(d, threshold=0.0, confidence=comp.confidence)})
    frame = pd.DataFrame(rows)
    flagged = int(frame["verdict"].isin(["regression", "improvement"]).sum()) if len(frame) else 0
    worst = float(frame["change"].abs().max()) if len(frame) else math.nan
    suggested = max(0.01, math.ceil(worst * 200) / 200) if math.isfinite(worst) else math.nan
    summary = {"cases": len(frame), "flagged": flagged, "rate": flagged / len(frame) if len(frame) else math.nan,
               "largest_change": worst, "suggested_threshold": suggested,
               "median_detectable": float(frame["detectable_at_threshold"].median()) if len(frame) else math.nan}
    return frame, summary


def render(session: Session, comp: Comparison, fmt: str = "text") -> str:
    from tabulate import tabulate

    md = fmt == "md"
    b, h = session.sides["base"].ref, session.sides["head"].ref
    confirmed_cases = confirmation_text(session)
    head = (f"attnbench ab: base {b.title} vs head {h.title}"
            + (f", variant {session.variant[0]} vs {session.variant[1]}" if session.variant else "")
            + f"; {len(session.pairs)} cases x {rounds_text(session)}"
            + (f" (+ {confirmed_cases})" if confirmed_cases else "")
            + f" in {session.wall_s:.0f} s; run {session.run_dir}")
    lines = [f"_{head}_" if md else head, ""]
    for n in session.notes:
        lines.append(f"> {n}" if md else f"note: {n}")
    lines.append(comp.render(fmt))
    if session.same_code:
        frame, s = calibration(session, comp)
        title = "Calibration (A/A: the same commit on both sides)"
        lines += ["", f"### {title}" if md else title, ""]
        lines.append(
            f"False alarms: {s['flagged']} of {s['cases']} cases ({s['rate']:.1%}) flagged at threshold "
            f"{comp.threshold:.1%}. Largest A/A change: {s['largest_change']:+.1%}; a threshold of at least "
            f"{s['suggested_threshold']:.1%} keeps every case seen here quiet. Median smallest slowdown caught with 95% "
            f"probability at threshold {comp.threshold:.1%}: {s['median_detectable']:.1%} (per case below; "
            "docs/regression.md explains the choice).")
        table = [[r.case, f"{r.rounds}" + (f" + {r.confirmation_rounds}" if r.confirmation_rounds else ""),
                  f"{r.change:+.1%}", r.verdict, f"±{r.round_spread:.1%}",
                  f"{r.detectable_at_threshold:.1%}", f"{r.detectable_any_threshold:.1%}"] for r in frame.itertuples()]
        lines += ["", tabulate(table, headers=["case", "rounds (+ confirmation)", "A/A change", "verdict", "round spread",
                                               f"detectable at {comp.threshold:.0%}", "detectable (threshold 0)"],
                               tablefmt="github" if md else "simple", disable_numparse=True)]
    return "\n".join(lines).rstrip("\n") + "\n"


def write(session: Session, comp: Comparison) -> None:
    """ab.csv (verdicts), ab.md (the report) and, for an A/A, calibration.csv, into the run directory."""
    frame = pd.DataFrame([f.__dict__ for f in sorted(comp.findings, key=_order)])
    atomic_write_text(session.run_dir / "ab.csv", frame.to_csv(index=False))
    atomic_write_text(session.run_dir / "ab.md", render(session, comp, "md"))
    if session.same_code:
        frame, _ = calibration(session, comp)
        atomic_write_text(session.run_dir / "calibration.csv", frame.to_csv(index=False))
