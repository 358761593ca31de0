"""What ``--resume`` trusts: the rows that are finished cases, and the ones it runs again.

Why: a row only proves a case finished if the row is whole and says what the case itself did. These
are run again instead of counted as done:
- rows ``rowcheck`` rejects (half-written, damaged, edited): they are not in the frame at all;
- ``ok`` rows whose raw samples (``sample_series``) are missing from samples.jsonl (a torn line);
- skips inferred from another row (``Calibration``: "the same configuration at 14x14 already ended
  in timeout"): the evidence may have changed, so the inference is made again from the rows kept;
- workers killed by SIGKILL with no sign of the kernel's OOM killer: someone else killed them, the
  case never ended by itself.
Nothing is repaired: a damaged results.csv is copied aside (``results.csv.damaged``) before the
resumed run rewrites it, so the rows it left out stay on disk for whoever wants to look.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

# Error texts that mark rows --resume re-tries (written by runner.Calibration and executor._death).
INFERRED = "not run: "  # a skip decided from another row's measurement
KILLED = "worker killed (signal 9)"  # a SIGKILL without OOM-killer evidence
# How versions before the evidence check wrote every SIGKILL (as status oom): not evidence either.
KILLED_BEFORE = "worker killed by SIGKILL (most likely the kernel OOM killer)"


def rerun_reason(row: dict[str, Any], samples: dict[tuple[str, str], list[float]]) -> str | None:
    """Why a stored (trusted) row is not a finished case, or None when it is."""
    from .results_schema import ERROR, SAMPLE_SERIES, STATUS

    error = str(row.get(ERROR) or "")
    if error.startswith(INFERRED):
        return "its skip was inferred from another row"
    if error.startswith((KILLED, KILLED_BEFORE)):
        return "its worker was killed by a signal, not by the case"
    if row.get(STATUS) == "ok" and row.get(SAMPLE_SERIES):
        try:
            names = json.loads(str(row[SAMPLE_SERIES]))
        except ValueError:
            return "its sample_series cell is not JSON"
        missing = [n for n in names if not samples.get((str(row["case_key"]), n))]
        if missing:
            return f"its raw samples ({', '.join(missing)}) are missing from samples.jsonl"
    return None


def _keep_damaged_copy(run_dir: Path) -> Path:
    """Copy results.csv aside (never overwriting an earlier copy) before it is rewritten."""
    src = run_dir / "results.csv"
    for n in range(1, 1000):
        dst = run_dir / ("results.csv.damaged" if n == 1 else f"results.csv.damaged-{n}")
        if not dst.exists():
            shutil.copy2(src, dst)
            return dst
    raise RuntimeError("too many damaged copies")  # pragma: no cover


def resumable_rows(run_dir: Path, say: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """case_key -> row of every stored row that counts as a finished case; ``say`` the others."""
    from . import store

    rejected = store.check_results(run_dir)
    frame = store.read_results(run_dir)  # warns about each rejected row
    if rejected:
        copy = _keep_damaged_copy(run_dir)
        say(f"{len(rejected)} damaged row(s) of results.csv will be run again; the file as it was is kept in {copy}")
    if frame.empty:
        return {}
    frame = frame.astype(object).where(frame.notna(), None)
    samples = store.read_samples(run_dir)
    rows: dict[str, dict[str, Any]] = {}
    for row in frame.to_dict("records"):
        reason = rerun_reason(row, samples)
        if reason:
            say(f"run again: {row.get('label')} {row.get('height')}x{row.get('width')} ({row['case_key']}): {reason}")
            continue
        rows[str(row["case_key"])] = row
    return rows


def seed_calibration(calib: Any, cases: list[Any], rows: dict[str, dict[str, Any]]) -> None:
    """Feed the kept rows to the runner's Calibration, so its inferences use the earlier evidence."""
    from .executor import Outcome

    for case in cases:
        row = rows.get(case.key())
        if row is not None:
            calib.record(case, Outcome(str(row.get("status")), row.get("error"), dict(row), {}, 0.0))
