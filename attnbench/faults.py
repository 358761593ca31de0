"""Faults of the machine, not of the suite: full disks, read-only places, paths that cannot be made.

Why one module: the same ``OSError`` can surface from a run, a report, a history plot or a task
preview, and the user needs the same thing from each: one line naming the file, what went wrong and
what to do about it, never a traceback. Every writer goes through :func:`write_failure` to turn an
``OSError`` into that line (a :class:`WriteError`, a ``UserError``: exit code 2).
"""
from __future__ import annotations

import errno
import sys
from pathlib import Path

from . import UserError

# errno -> what to do about it. These are faults of where we write, not bugs: each becomes one line.
WRITE_ERRNOS: dict[int, str] = {
    errno.ENOSPC: "free space on that file system",
    errno.EDQUOT: "free space (the disk quota is full)",
    errno.EFBIG: "the file grew past the size limit (ulimit -f); raise the limit or free space",
    errno.EROFS: "the file system is read-only; choose a writable place",
    errno.EACCES: "you may not write there; choose a place you can write to",
    errno.EPERM: "you may not write there; choose a place you can write to",
    errno.ENAMETOOLONG: "a name in the path is too long for the file system; choose a shorter one",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.EEXIST: "a file of that name is in the way; choose another path",
    errno.EISDIR: "a folder of that name is in the way; choose another path",
}


class WriteError(UserError):
    """A file could not be written; ``path`` is the file, ``errno`` why."""

    def __init__(self, message: str, path: Path | None = None, err: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = err


def is_write_fault(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS


def write_failure(exc: OSError, path: Path | str | None = None, action: str = "write") -> WriteError:
    """``exc`` as one line: ``cannot write <path>: <reason> (<ERRNO>); <what to do>``."""
    target = path if path is not None else (exc.filename or "?")
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    reason = exc.strerror or str(exc)
    hint = WRITE_ERRNOS.get(exc.errno or 0, "check the path and try again")
    return WriteError(f"cannot {action} {target}: {reason} ({code}); {hint}", Path(str(target)), exc.errno)


def warn(message: str) -> None:
    """A warning line on stderr, in the CLI's format (a warning never changes the exit code)."""
    print(f"attnbench: WARNING: {' '.join(message.split())}", file=sys.stderr)
