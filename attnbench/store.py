"""Results on disk: one directory per run, written so that a crash never leaves a half-written file.

Why: a sweep can run for hours and be killed at any moment (OOM killer, Ctrl-C, a lost node). Every
row is rewritten atomically (temp file + ``os.replace``) after each case, raw samples are appended
line by line, and a run directory is never reused, so the numbers on disk are always a consistent,
resumable subset of the sweep. Readers (report, compare, history) go through ``load_run``.

Layout: ``results/<suite>/<run-id>/{results.csv, samples.jsonl, env.json, suite.yaml}`` with
run-id ``YYYYmmdd-HHMMSS-<device>-<git short sha | nogit>`` (plus ``-2``, ``-3``… if it exists).
"""
from __future__ import annotations

import io
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
from .faults import is_write_fault, warn, write_failure
from .results_schema import LEADING_COLUMNS, coerce, schema
from .runguard import note_created
from .rowcheck import DamagedFile, Rejected, read_checked, seal

RESULTS_CSV = "results.csv"
SAMPLES_JSONL = "samples.jsonl"
ENV_JSON = "env.json"
SUITE_YAML = "suite.yaml"



# --------------------------------------------------------------------------------------- writing
def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the new one, never a torn one.

    The file gets the usual permissions (0644 under the common umask), not mkstemp's 0600. A write
    fault (full disk, read-only place...) is a one-line ``WriteError``; the old file stays as it was.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        if is_write_fault(exc):
            raise write_failure(exc, path) from None
        raise
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


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
    """Rewrite results.csv atomically with ``rows`` (one per case), each sealed with its checksum
    (``rowcheck``). Integer cells stay integers: an int column with empty cells is written as ``Int64``."""
    cols = ordered_columns(rows)
    frame = pd.DataFrame([{c: _cell(r.get(c)) for c in cols} for r in rows], columns=cols)
    declared = schema()
    for name in frame.columns:
        col = declared.get(name)
        if col is not None and col.kind == "int":
            values = pd.to_numeric(frame[name], errors="coerce")
            if values.notna().any() and (values.dropna() % 1 == 0).all():
                frame[name] = values.astype("Int64")
    path = Path(run_dir) / RESULTS_CSV
    atomic_write_text(path, seal(frame.to_csv(index=False)))
    return path


def append_samples(run_dir: Path, case_key: str, label: str, samples: dict[str, list[float]]) -> None:
    """Append raw samples of one case to samples.jsonl, one line per named series.

    A line is written with a single ``write`` call and flushed, so a crash can at worst tear the
    last line; the next append starts on a fresh line (never glued onto a torn one) and readers skip
    a torn line with a warning.
    """
    if not samples:
        return
    path = Path(run_dir) / SAMPLES_JSONL
    lines = "".join(
        json.dumps({"case_key": case_key, "label": label, "name": name, "values": [float(v) for v in values]}) + "\n"
        for name, values in samples.items()
    )
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                lines = "\n" + lines
            data = memoryview(lines.encode("utf-8"))
            while data:  # a short write (disk filling up) goes on until the kernel says why it stops
                data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if is_write_fault(exc):
            raise write_failure(exc, path) from None
        raise


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
    run_id = make_run_id(device, when, sha if sha is not None else git_short_sha())
    try:
        base.mkdir(parents=True, exist_ok=True)
        for n in range(1, 10_000):
            path = base / (run_id if n == 1 else f"{run_id}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            note_created(path)
            return path
    except OSError as exc:  # --out names a file, a read-only place, a name too long...: all the user's to fix
        raise write_failure(exc, exc.filename or base, action=f"create the run folder under --out {out_root}:") from None
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


_WARNED: set[tuple[str, str]] = set()


def _warn_once(path: Path, message: str) -> None:
    """Each problem of a file is said once per process, however often the file is read."""
    if (str(path), message) not in _WARNED:
        _WARNED.add((str(path), message))
        warn(f"{path}: {message}")


def check_results(run_dir: Path) -> list[Rejected]:
    """The rows of results.csv that are not trusted (``rowcheck``); ``DamagedFile`` when none can be read."""
    path = Path(run_dir) / RESULTS_CSV
    return read_checked(path)[1] if path.exists() else []


def read_results(run_dir: Path) -> pd.DataFrame:
    """results.csv with every declared column in its declared type (``results_schema``): text
    columns are read as text (a label "7" stays "7"), integers as nullable ints, booleans as
    nullable booleans, whatever other cells of the column are empty.

    Only trusted rows are returned (``rowcheck``): a half-written, damaged or edited row is left
    out with a warning naming it, so it never counts as a finished case (``--resume`` re-runs it).
    """
    path = Path(run_dir) / RESULTS_CSV
    columns = schema()
    if not path.exists():
        return pd.DataFrame(columns=list(LEADING_COLUMNS))
    csv_text, rejected = read_checked(path)
    for bad in rejected:
        _warn_once(path, f"{bad.describe()}; row left out (attnbench run SUITE --resume {path.parent} runs it again)")
    if not csv_text:
        _warn_once(path, "empty file (no header, no rows); read as a run with no results")
        return pd.DataFrame(columns=list(LEADING_COLUMNS))
    text = {name: object for name, col in columns.items() if col.kind in ("str", "json", "bool")}
    frame = pd.read_csv(io.StringIO(csv_text), keep_default_na=True, dtype=text)
    return coerce(frame, columns)


def read_samples(run_dir: Path) -> dict[tuple[str, str], list[float]]:
    """(case_key, name) -> values; a later line for the same key replaces an earlier one (re-runs).

    A torn or damaged line (a crash mid-append, a full disk) is skipped with a warning naming it; a
    case whose samples it held is re-run by ``--resume`` (``attnbench.resume``)."""
    path = Path(run_dir) / SAMPLES_JSONL
    out: dict[tuple[str, str], list[float]] = {}
    if not path.exists():
        return out
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
                key = (str(rec["case_key"]), str(rec["name"]))
                values = [float(v) for v in rec["values"]]
            except (ValueError, KeyError, TypeError):
                _warn_once(path, f"line {number} is torn or damaged; skipped")
                continue
            out[key] = values
    return out


def read_env(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / ENV_JSON
    if not path.exists():
        return {}
    try:
        env = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(env, dict):
            raise ValueError(f"a JSON {type(env).__name__}, not an object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise DamagedFile(f"{path}: damaged ({' '.join(str(exc).split())[:120]}); it records the run's environment "
                          "and cannot be rebuilt: restore it from a copy, or start a new run") from None
    version = env.get("schema_version")
    if isinstance(version, int) and version > RESULTS_SCHEMA_VERSION:
        raise UserError(
            f"{path}: results schema version {version} is newer than this attnbench understands "
            f"({RESULTS_SCHEMA_VERSION}); upgrade attnbench to read it"
        )
    return env


def read_suite_copy(run_dir: Path) -> dict[str, Any]:
    """suite.yaml of a run (what it ran, every default filled in); ``DamagedFile`` when unreadable."""
    path = Path(run_dir) / SUITE_YAML
    if not path.exists():
        return {}
    try:
        suite = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        suite = None
    if (suite is not None and not isinstance(suite, dict)) or (suite is None and path.stat().st_size):
        raise DamagedFile(f"{path}: damaged (not the YAML mapping a run stores); restore it from a copy, or "
                          "copy the suite file you ran to that path")
    return suite or {}


def load_run(run_dir: Path | str) -> Run:
    """Load a run directory; ``UserError`` when it is not one or one of its files is damaged."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"{path}: no such run directory")
    if not (path / RESULTS_CSV).exists() and not (path / ENV_JSON).exists():
        raise UserError(f"{path}: not a run directory (no {RESULTS_CSV} or {ENV_JSON}); pass results/<suite>/<run-id>")
    return Run(path=path, results=read_results(path), samples=read_samples(path), env=read_env(path),
               suite=read_suite_copy(path))


def list_runs(suite_dir: Path | str) -> list[Path]:
    """Run directories under ``results/<suite>/``, oldest first (by env.json created_at, then name).

    A run is a folder with a results.csv: one holding only env.json and suite.yaml is a run that
    failed before its first case, not a run."""
    suite_dir = Path(suite_dir)
    if not suite_dir.is_dir():
        return []
    runs = [p for p in suite_dir.iterdir() if p.is_dir() and (p / RESULTS_CSV).exists()]

    def created(p: Path) -> tuple[str, str]:
        try:
            stamp = json.loads((p / ENV_JSON).read_text(encoding="utf-8")).get("created_at") or ""
        except (OSError, json.JSONDecodeError):
            stamp = ""
        if not stamp:
            stamp = datetime.fromtimestamp(p.stat().st_mtime, timezone.utc).isoformat()
        return (stamp, p.name)

    return sorted(runs, key=created)
