"""Today's code must reproduce the MACs and params of the committed reference run(s), exactly.

Why: MACs and params are deterministic, so unlike timings they can gate CI without flaking. A
change to a mechanism's formula, its parameters or the case identity shows up here as a list of
(case, column, stored, now). If the change is intended, regenerate the reference run
(``attnbench run suites/highres.yaml`` and commit the new ``results/highres/<run-id>/``).
"""
from __future__ import annotations

import dataclasses
import json
import math
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch

from attnbench.case import Case
from attnbench.metrics import MetricContext, params
from attnbench.metrics.flops import analytic_macs
from attnbench.store import RESULTS_CSV, load_run

REPO = Path(__file__).resolve().parents[1]


def committed_runs(repo: Path = REPO) -> list[Path]:
    """Run directories under results/ whose results.csv is committed (all on disk outside git)."""
    try:
        out = subprocess.run(["git", "ls-files", "--", "results"], cwd=repo, capture_output=True, text=True,
                             timeout=30)
        files = out.stdout.splitlines() if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        files = None
    if files is None:
        return sorted(p.parent for p in (repo / "results").glob(f"*/*/{RESULTS_CSV}"))
    return sorted({(repo / f).parent for f in files if f.endswith(f"/{RESULTS_CSV}") and f.count("/") == 3})


def case_from_row(row: pd.Series) -> Case:
    def value(col: str):
        v = row.get(col)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    options = json.loads(value("options") or "{}")
    return Case(mechanism=str(row["mechanism"]), label=str(row["label"]), options=tuple(sorted(options.items())),
                height=int(row["height"]), width=int(row["width"]), batch_size=int(row["batch_size"]),
                dim=int(row["dim"]), num_heads=int(row["num_heads"]), dtype=str(row["dtype"]),
                device=str(row["device"]), mode=str(row["mode"]), task=value("task"), form=value("form"))


def differences(run_dir: Path) -> tuple[int, list[str]]:
    """(ok rows checked, one line per difference between the stored run and today's code)."""
    res = load_run(run_dir).results
    ok = res[res["status"].astype(str) == "ok"]
    # Runs from before the form column measured every mode in the training form (no deploy() yet);
    # their case keys are those of today's default-form cases.
    legacy = "form" not in res.columns
    lines: list[str] = []
    for _, row in ok.iterrows():
        case = case_from_row(row)
        name = f"{row['case_key']} ({case.describe()})"
        if case.key() != str(row["case_key"]):
            lines.append(f"{name}: case_key stored {row['case_key']} now {case.key()}")
        if legacy:
            case = dataclasses.replace(case, form="train")
        ctx = MetricContext(case=case, options=None, device=torch.device("meta"), dtype=case.torch_dtype)
        try:
            now = {"macs": analytic_macs(ctx)["total"], **params.measure(ctx)}
        except Exception as exc:  # a case that no longer builds is a difference, not a crash
            lines.append(f"{name}: no longer builds: {type(exc).__name__}: {exc}")
            continue
        for col in ("macs", "params", "params_trainable"):
            stored = row.get(col)
            if col not in res.columns or pd.isna(stored):
                continue
            if int(stored) != int(now[col]):
                lines.append(f"{name}: {col} stored {int(stored):,} now {int(now[col]):,}")
    return len(ok), lines


RUNS = committed_runs()


def test_a_reference_run_is_committed():
    assert any(p.parent.name == "highres" for p in RUNS), ("no committed reference run under results/: run `attnbench run suites/highres.yaml` on the "
                  "reference machine and commit results/highres/<run-id>/ (results.csv, env.json, suite.yaml, "
                  "samples.jsonl, report.md and plots)")


@pytest.mark.parametrize("run_dir", RUNS, ids=[f"{p.parent.name}/{p.name}" for p in RUNS])
def test_macs_and_params_match_reference(run_dir):
    checked, diffs = differences(run_dir)
    assert checked > 0, f"{run_dir}: no ok rows to check"
    assert not diffs, f"{run_dir}: {len(diffs)} difference(s) from today's code:\n" + "\n".join(diffs)


def test_differences_are_reported(tmp_path):
    """The check itself can fail: a tampered copy of a run reports case, column, stored and now."""
    from synthetic_runs import case, ok_row, write_run

    c = case("global", 8)
    ctx = MetricContext(case=c, options=None, device=torch.device("meta"), dtype=torch.float32)
    good = {"macs": analytic_macs(ctx)["total"], **params.measure(ctx)}
    run = write_run(tmp_path / "s" / "r", [ok_row(c, 1.0, **good)])
    assert differences(run) == (1, [])
    write_run(tmp_path / "s" / "r", [ok_row(c, 1.0, **{**good, "macs": good["macs"] + 1})])
    checked, diffs = differences(run)
    assert checked == 1 and len(diffs) == 1
    assert f"macs stored {good['macs'] + 1:,} now {good['macs']:,}" in diffs[0] and c.key() in diffs[0]
