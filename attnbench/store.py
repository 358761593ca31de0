"""Results on disk: one directory per run, written so that a crash never leaves a half-written file.

Why: a sweep can run for hours and be killed at any moment (OOM killer, Ctrl-C, a lost node). Every
row is rewritten atomically (temp file + ``os.replace``) after each case, raw samples are appended
line by line, and a run directory is never reused, so the numbers on disk are always a consistent,
resumable subset of the sweep. Readers (report, compare, history) go through ``load_run``.

Layout: ``results/<suite>/<run-id>/{results.csv, samples.jsonl, env.json, suite.yaml}`` with
run-id ``YYYYmmdd-HHMMSS-<device>-<git short sha | nogit>`` (plus ``-2``, ``-3``… if it exists).
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import yaml

from . import RESULTS_SCHEMA_VERSION, UserError
from .results_schema import LEADING_COLUMNS, STATUSES, coerce, schema

RESULTS_CSV = "results.csv"
SAMPLES_JSONL = "samples.jsonl"
ENV_JSON = "env.json"
SUITE_YAML = "suite.yaml"



# --------------------------------------------------------------------------------------- writing
def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def ordered_columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Leading columns first, then every other key in first-seen order (stable across rewrites)."""
    cols = list(LEADING_COLUMNS)
    seen = set(cols)
    for row in rows:
        for k in row:
            if k not in seen:
                seen.add(k)
                cols.append(k)
    return cols


def _cell(value: Any) -> Any:
    """CSV cell: None stays empty (a metric that does not apply is empty, never 0); dicts/lists as JSON."""
    if value is None:
        return None
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def write_results(run_dir: Path, rows: list[dict[str, Any]]) -> Path:
    """Rewrite results.csv atomically with ``rows`` (one per case)."""
    cols = ordered_columns(rows)
    frame = pd.DataFrame([{c: _cell(r.get(c)) for c in cols} for r in rows], columns=cols)
    path = Path(run_dir) / RESULTS_CSV
    atomic_write_text(path, frame.to_csv(index=False))
    return path


def append_samples(run_dir: Path, case_key: str, label: str, samples: dict[str, list[float]]) -> None:
    """Append raw samples of one case to samples.jsonl, one line per named series.

    A line is written with a single ``write`` call and flushed, so a crash can at worst lose the last
    line; ``load_run`` skips a torn trailing line.
    """
    if not samples:
        return
    path = Path(run_dir) / SAMPLES_JSONL
    lines = "".join(
        json.dumps({"case_key": case_key, "label": label, "name": name, "values": [float(v) for v in values]}) + "\n"
        for name, values in samples.items()
    )
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(lines)
        fh.flush()
        os.fsync(fh.fileno())


def write_env(run_dir: Path, env: dict[str, Any]) -> Path:
    env = {"schema_version": RESULTS_SCHEMA_VERSION, **{k: v for k, v in env.items() if k != "schema_version"}}
    path = Path(run_dir) / ENV_JSON
    atomic_write_text(path, json.dumps(env, indent=2, sort_keys=False, default=str) + "\n")
    return path


def write_suite(run_dir: Path, suite: dict[str, Any]) -> Path:
    path = Path(run_dir) / SUITE_YAML
    atomic_write_text(path, yaml.safe_dump(suite, sort_keys=False))
    return path


# ------------------------------------------------------------------------------------ run dirs
def git_short_sha(repo: Path | None = None) -> str | None:
    """Short commit of the checkout attnbench runs from, or None outside git."""
    cwd = repo or Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def git_dirty(repo: Path | None = None) -> bool | None:
    cwd = repo or Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip()) if out.returncode == 0 else None


def make_run_id(device: str, when: datetime | None = None, sha: str | None = None) -> str:
    when = when or datetime.now()
    return f"{when:%Y%m%d-%H%M%S}-{device}-{sha or 'nogit'}"


def create_run_dir(out_root: Path, suite_name: str, device: str, when: datetime | None = None,
                   sha: str | None = None) -> Path:
    """Make ``out_root/<suite>/<run-id>`` and return it; never reuses an existing directory.

    ``mkdir(exist_ok=False)`` is the atomic claim, so two runs started in the same second get
    ``<id>`` and ``<id>-2`` instead of writing into one directory.
    """
    base = Path(out_root) / suite_name
    base.mkdir(parents=True, exist_ok=True)
    run_id = make_run_id(device, when, sha if sha is not None else git_short_sha())
    for n in range(1, 10_000):
        path = base / (run_id if n == 1 else f"{run_id}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise UserError(f"{base}: too many runs named {run_id}*; clean up the directory")  # pragma: no cover


# ------------------------------------------------------------------------------------- reading
@dataclass
class Run:
    """One run directory, loaded: what report, compare and history read."""

    path: Path
    results: pd.DataFrame
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    suite: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name


def read_results(run_dir: Path) -> pd.DataFrame:
    """results.csv with every declared column in its declared type (``results_schema``): text
    columns are read as text (a label "7" stays "7"), integers as nullable ints, booleans as
    nullable booleans, whatever other cells of the column are empty."""
    path = Path(run_dir) / RESULTS_CSV
    columns = schema()
    if not path.exists():
        return pd.DataFrame(columns=list(LEADING_COLUMNS))
    text = {name: object for name, col in columns.items() if col.kind in ("str", "json", "bool")}
    try:
        frame = pd.read_csv(path, keep_default_na=True, dtype=text)
    except pd.errors.EmptyDataError:
        return pd.DataFrame(columns=list(LEADING_COLUMNS))
    return coerce(frame, columns)


def read_samples(run_dir: Path) -> dict[tuple[str, str], list[float]]:
    """(case_key, name) -> values; a later line for the same key replaces an earlier one (re-runs)."""
    path = Path(run_dir) / SAMPLES_JSONL
    out: dict[tuple[str, str], list[float]] = {}
    if not path.exists():
        return out
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a torn last line after a crash
                continue
            out[(rec["case_key"], rec["name"])] = [float(v) for v in rec["values"]]
    return out


def read_env(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / ENV_JSON
    if not path.exists():
        return {}
    env = json.loads(path.read_text(encoding="utf-8"))
    version = env.get("schema_version")
    if version is not None and version > RESULTS_SCHEMA_VERSION:
        raise UserError(
            f"{path}: results schema version {version} is newer than this attnbench understands "
            f"({RESULTS_SCHEMA_VERSION}); upgrade attnbench to read it"
        )
    return env


def load_run(run_dir: Path | str) -> Run:
    """Load a run directory; ``UserError`` when it is not one."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"{path}: no such run directory")
    if not (path / RESULTS_CSV).exists() and not (path / ENV_JSON).exists():
        raise UserError(f"{path}: not a run directory (no {RESULTS_CSV} or {ENV_JSON}); pass results/<suite>/<run-id>")
    suite_path = path / SUITE_YAML
    suite = yaml.safe_load(suite_path.read_text(encoding="utf-8")) if suite_path.exists() else {}
    return Run(path=path, results=read_results(path), samples=read_samples(path), env=read_env(path),
               suite=suite or {})


def list_runs(suite_dir: Path | str) -> list[Path]:
    """Run directories under ``results/<suite>/``, oldest first (by env.json created_at, then name)."""
    suite_dir = Path(suite_dir)
    if not suite_dir.is_dir():
        return []
    runs = [p for p in suite_dir.iterdir() if p.is_dir() and ((p / RESULTS_CSV).exists() or (p / ENV_JSON).exists())]

    def created(p: Path) -> tuple[str, str]:
        try:
            stamp = json.loads((p / ENV_JSON).read_text(encoding="utf-8")).get("created_at") or ""
        except (OSError, json.JSONDecodeError):
            stamp = ""
        if not stamp:
            stamp = datetime.fromtimestamp(p.stat().st_mtime, timezone.utc).isoformat()
        return (stamp, p.name)

    return sorted(runs, key=created)
