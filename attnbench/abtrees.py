"""Git plumbing for ``attnbench ab``: resolve two refs and materialise what is compared at each.

Why ``git archive`` of a few paths rather than ``git worktree add``: only the compared code
(``mechanisms/`` and the repository's plugin packages) may come from the refs; the harness is the
running one. Exporting just those paths into a temporary folder leaves no worktree registered in
the user's repository if the process is killed, and takes milliseconds.
"""
from __future__ import annotations

import io
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

from . import UserError


@dataclass(frozen=True)
class Ref:
    name: str  # as the user wrote it
    commit: str  # full sha

    @property
    def short(self) -> str:
        return self.commit[:7]

    @property
    def title(self) -> str:
        """``main (abc1234)``, or just ``abc1234`` when the ref was a sha."""
        return self.short if self.commit.startswith(self.name) else f"{self.name} ({self.short})"


def _git(repo: Path, *args: str, binary: bool = False) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=not binary, timeout=60)
    except FileNotFoundError:
        raise UserError("git is not installed; attnbench ab checks out refs with git") from None


def repo_root(start: Path | str = ".") -> Path:
    out = _git(Path(start), "rev-parse", "--show-toplevel")
    if out.returncode != 0:
        raise UserError(f"{Path(start).resolve()} is not inside a git repository; run attnbench ab from a clone of "
                        "the repository whose mechanisms you compare")
    return Path(out.stdout.strip())


def resolve(repo: Path, ref: str) -> Ref:
    """The commit ``ref`` names; a one-line UserError when it names none."""
    out = _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if out.returncode != 0 or not out.stdout.strip():
        raise UserError(f"ref {ref!r} is not a commit in {repo} (see `git branch -a` / `git log`); "
                        "fetch it first or check the spelling")
    return Ref(ref, out.stdout.strip())


def head_commit(repo: Path) -> str | None:
    out = _git(repo, "rev-parse", "--verify", "--quiet", "HEAD")
    return out.stdout.strip() or None if out.returncode == 0 else None


def exists_at(repo: Path, commit: str, path: str) -> bool:
    return _git(repo, "cat-file", "-e", f"{commit}:{path}").returncode == 0


def uncommitted(repo: Path, paths: list[str]) -> list[str]:
    """Files under ``paths`` that differ from HEAD (modified, staged or untracked)."""
    if not paths:
        return []
    out = _git(repo, "status", "--porcelain", "--untracked-files=all", "--", *paths)
    if out.returncode != 0:
        return []
    files = [line[3:] for line in out.stdout.splitlines() if line.strip()]
    return [f for f in files if "__pycache__" not in f and not f.endswith((".pyc", ".pyo"))]  # bytecode is not code


def check_not_ignoring_changes(repo: Path, refs: list[Ref], paths: list[str]) -> None:
    """A ref at HEAD with uncommitted changes to the compared code would silently measure the commit."""
    head = head_commit(repo)
    at_head = [r for r in refs if r.commit == head]
    if not at_head:
        return
    dirty = uncommitted(repo, paths)
    if dirty:
        more = f" (and {len(dirty) - 1} more)" if len(dirty) > 1 else ""
        raise UserError(f"uncommitted changes to {dirty[0]}{more} would be ignored: ab measures committed code and "
                        f"{at_head[0].name!r} is HEAD ({head[:7]}); commit or stash them first")


def export(repo: Path, commit: str, paths: list[str], dest: Path) -> list[str]:
    """Write the files of ``paths`` (those that exist at ``commit``) under ``dest``; returns the paths written."""
    present = [p for p in paths if exists_at(repo, commit, p)]
    dest.mkdir(parents=True, exist_ok=True)
    if not present:
        return []
    out = _git(repo, "archive", "--format=tar", commit, "--", *present, binary=True)
    if out.returncode != 0:
        raise UserError(f"git archive of {commit[:7]} failed: {out.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        try:
            tar.extractall(dest, filter="data")
        except TypeError:  # Python < 3.10.12 has no extraction filters; git archive output is trusted
            tar.extractall(dest)
    return present
