"""The edge of a run: what is left on disk, and what the user is told, when a run ends early.

Why: a run that fails before its first case (a crash while measuring the matmul peak, a full disk
while writing env.json) used to leave a folder with only env.json and suite.yaml, which later
looked like a run. And a write fault in the middle of a sweep (full disk, read-only remount) must
end it with one line that says what happened and how to go on, keeping every row already written.
"""
from __future__ import annotations

import contextlib
import shutil
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

from .faults import WriteError, is_write_fault, write_failure

_CREATED: ContextVar[Path | None] = ContextVar("attnbench_created_run_dir", default=None)
# What a run folder holds before its first row: anything else there means it is not ours to remove.
_EARLY_FILES = {"env.json", "suite.yaml", "worker.log"}


def note_created(run_dir: Path) -> None:
    """Called by ``store.create_run_dir``: this invocation made ``run_dir``."""
    _CREATED.set(Path(run_dir))


def _remove_if_empty(run_dir: Path) -> bool:
    """Remove a fresh run folder that holds no results.csv yet (nothing measured); True if removed."""
    if not run_dir.is_dir() or (run_dir / "results.csv").exists():
        return False
    names = {p.name for p in run_dir.iterdir()}
    if any(n not in _EARLY_FILES and not (n.startswith(".") and n.endswith(".tmp")) for n in names):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return not run_dir.exists()


@contextlib.contextmanager
def guarded_run(suite_path: Path | str | None, resume: Path | str | None) -> Iterator[None]:
    """Wrap a run: clean up a fresh folder that never got a row, and add the resume hint to a write fault."""
    token = _CREATED.set(None)
    try:
        yield
    except BaseException as exc:
        created = _CREATED.get()
        run_dir = Path(resume) if resume else created
        removed = created is not None and not resume and _remove_if_empty(created)
        if isinstance(exc, WriteError) or is_write_fault(exc):
            err = exc if isinstance(exc, WriteError) else write_failure(exc)  # type: ignore[arg-type]
            if run_dir is None or removed:
                raise WriteError(f"{err}; nothing was measured yet, run again once that is fixed", err.path,
                                 err.errno) from None
            raise WriteError(f"{err}. Rows already written stay in {run_dir / 'results.csv'}; once that is fixed, "
                             f"continue with: attnbench run {suite_path or 'SUITE'} --resume {run_dir}",
                             err.path, err.errno) from None
        raise
    finally:
        _CREATED.reset(token)
