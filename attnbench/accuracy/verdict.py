"""Is an accuracy run trustworthy? Expectations derived from each pattern, and the run's verdict.

Sanity check (``acc_valid``), derived from the pattern, not from the mechanism's name: on pairmatch,
a stack whose *first* layer already reaches every token (global attention) must reach ``learn_min``
(0.95); a stack in which no token's receptive field ever spans two image quadrants (non-shifted
windows aligned with the quadrants) is provably at chance and must stay at or below ``chance_max``
(0.55). Other rows carry no check (empty). A run is valid when every checked row passes and both
checks were made (``run_validity``). The report and the run summary read the verdict from here.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..results_schema import stored_bool


def sanity_expectation(case_mechanism: str, options: dict[str, Any], dim: int, heads: int, H: int, W: int,
                       depth: int) -> str | None:
    """'learn' (reaches every token in one layer), 'chance' (no token ever spans two quadrants), or None."""
    from ..metrics.receptive_field import layer_masks, reach_after

    masks = layer_masks(case_mechanism, options, dim, heads, H, W)
    if masks[0].all():
        return "learn"
    if H % 2 or W % 2:
        return None
    rows, cols = np.divmod(np.arange(H * W), W)
    quadrant = (rows >= H // 2) * 2 + (cols >= W // 2)
    reach = reach_after(masks, depth).sets()
    spans = [(quadrant[r] != quadrant[q]).any() for q, r in enumerate(reach)]
    return "chance" if not any(spans) else None


def run_validity(results: Any) -> tuple[str, list[str]]:
    """('valid' | 'invalid' | 'unchecked', reasons) for a run's results DataFrame.

    Valid: every checked pairmatch row passed, and both a 'learn' row and a 'chance' row were
    checked (otherwise nothing proves the task separates at this budget: 'unchecked').
    """
    if "acc_expect" not in getattr(results, "columns", []):
        return "unchecked", ["no accuracy rows"]
    rows = results[results["acc_expect"].notna() & (results["acc_expect"].astype(str) != "")]
    reasons = []
    for _, r in rows.iterrows():
        ok = stored_bool(r.get("acc_valid")) is True
        if not ok:
            bound = "≥ learn_min" if r["acc_expect"] == "learn" else "≤ chance_max"
            reasons.append(f"{r['label']} on {r['task']} at {r['height']}x{r['width']}: accuracy "
                           f"{float(r['acc_mean']):.3f}, expected {bound} ({r['acc_expect']})")
    expects = set(rows["acc_expect"].astype(str))
    if reasons:
        return "invalid", reasons
    missing = [e for e in ("learn", "chance") if e not in expects]
    if missing:
        return "unchecked", [f"no pairmatch row with expectation {m!r} (add global attention and non-shifted "
                             "windows to the suite)" for m in missing]
    return "valid", []
