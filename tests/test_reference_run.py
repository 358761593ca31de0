"""Today's code must reproduce the MACs, params and case keys of the committed reference runs, exactly.

Why: MACs and params are deterministic, so unlike timings they can gate CI without flaking. A
change to a mechanism's formula, its parameters or the case identity shows up here as a list of
(case, column, stored, now). The check reads ``results/reference-macs.csv``, a small file generated
from the reference runs (``attnbench.reference_macs``); a second test regenerates that file from the
runs it names and requires the same text, so it cannot drift from them. If a change is intended, run
the suite again, commit the new run, ``git rm`` the old one and regenerate the file (docs/development.md).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from attnbench.case import Case
from attnbench.cost import case_cost
from attnbench.reference_macs import COST_COLUMNS, main, render, run_name, runs_named_in
from attnbench.store import RESULTS_CSV

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "results" / "reference-macs.csv"


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


def reference_rows(path: Path = REFERENCE) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def case_from_row(row: dict[str, str]) -> Case:
    if row.get("model"):  # a whole backbone (models: in a suite)
        from attnbench.model_case import model_case_from_row

        return model_case_from_row(row)
    return Case(mechanism=row["mechanism"], label=row["label"], options=tuple(sorted(json.loads(row["options"] or "{}").items())),
                height=int(row["height"]), width=int(row["width"]), batch_size=int(row["batch_size"]),
                dim=int(row["dim"]), num_heads=int(row["num_heads"]), dtype=row["dtype"], device=row["device"],
                mode=row["mode"], task=row["task"] or None, form=row.get("form") or None)


def differences(rows: list[dict[str, str]]) -> list[str]:
    """One line per difference between the stored rows and today's code."""
    lines: list[str] = []
    for row in rows:
        case = case_from_row(row)
        name = f"{row['run']} {row['case_key']} ({case.describe()})"
        if case.key() != row["case_key"]:
            lines.append(f"{name}: case_key stored {row['case_key']} now {case.key()}")
        if not row.get("form"):  # a run from before the form column: every mode ran the training form
            case = dataclasses.replace(case, form="train")
        try:
            cost = case_cost(case)
            now = {"macs": cost.macs, "params": cost.params, "params_trainable": cost.params_trainable}
        except Exception as exc:  # a case that no longer builds is a difference, not a crash
            lines.append(f"{name}: no longer builds: {type(exc).__name__}: {exc}")
            continue
        for col in COST_COLUMNS:
            if row[col] and int(row[col]) != int(now[col]):
                lines.append(f"{name}: {col} stored {int(row[col]):,} now {int(now[col]):,}")
    return lines


ROWS = reference_rows()
RUNS = list(dict.fromkeys(r["run"] for r in ROWS))


def test_the_highres_reference_run_is_in_the_file():
    assert any(r.startswith("highres/") for r in RUNS), (
        "results/reference-macs.csv has no highres run: run `attnbench run suites/highres.yaml` on the reference "
        "machine, commit results/highres/<run-id>/ and regenerate the file (docs/development.md)")


@pytest.mark.parametrize("run", RUNS)
def test_macs_and_params_match_reference(run):
    rows = [r for r in ROWS if r["run"] == run]
    assert rows, f"{run}: no ok rows to check"
    assert any(r["macs"] for r in ROWS), "no row of the reference file carries MACs"
    diffs = differences(rows)
    assert not diffs, f"{run}: {len(diffs)} difference(s) from today's code:\n" + "\n".join(diffs)


def test_reference_file_is_generated_from_the_runs_it_names():
    """Regenerating from the committed runs gives the committed file, byte for byte."""
    named = [REPO / "results" / r for r in runs_named_in(REFERENCE)]
    assert render(named) == REFERENCE.read_text(encoding="utf-8"), (
        "results/reference-macs.csv is stale: python -m attnbench.reference_macs " + " ".join(
            str(p.relative_to(REPO)) for p in named))


def test_every_committed_run_is_a_reference_run():
    """A run committed without regenerating the file would escape the check; one run per suite."""
    committed = [run_name(p) for p in committed_runs()]
    assert sorted(committed) == sorted(RUNS), (
        f"committed runs {sorted(committed)} but results/reference-macs.csv names {sorted(RUNS)}: keep one "
        "reference run per suite and regenerate the file (docs/development.md)")
    suites = [r.split("/")[0] for r in committed]
    assert len(suites) == len(set(suites)), f"more than one committed run for a suite: {sorted(committed)}"


def test_differences_are_reported(tmp_path):
    """The check itself can fail: a tampered copy of a run reports case, column, stored and now."""
    from synthetic_runs import case, ok_row, write_run

    c = case("global", 8)
    cost = case_cost(c)
    good = {"macs": cost.macs, "params": cost.params, "params_trainable": cost.params_trainable}
    run = write_run(tmp_path / "s" / "r", [ok_row(c, 1.0, **good)])
    out = tmp_path / "ref.csv"
    assert main([str(run), "--out", str(out)]) == 0
    assert differences(reference_rows(out)) == []
    write_run(run, [ok_row(c, 1.0, **{**good, "macs": good["macs"] + 1})])
    assert main([str(run), "--out", str(out)]) == 0
    diffs = differences(reference_rows(out))
    assert len(diffs) == 1
    assert f"macs stored {good['macs'] + 1:,} now {good['macs']:,}" in diffs[0] and c.key() in diffs[0]


def test_generator_keeps_ok_rows_and_rejects_a_non_run(tmp_path, capsys):
    from synthetic_runs import case, failed_row, ok_row, write_run

    ok, failed = case("global", 8), case("swin", 8, window_size=4)
    run = write_run(tmp_path / "s" / "r", [ok_row(ok, 1.0, macs=5, params=7), failed_row(failed, "oom")])
    rows = list(csv.DictReader(render([run]).splitlines()))
    assert [(r["run"], r["case_key"], r["macs"], r["params"], r["params_trainable"]) for r in rows] == [
        ("s/r", ok.key(), "5", "7", "")]
    assert main([str(tmp_path / "nothing"), "--out", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"attnbench: error: {tmp_path / 'nothing'}: no results.csv; pass a run directory, results/<suite>/<run-id>"
    assert not (tmp_path / "x.csv").exists()
