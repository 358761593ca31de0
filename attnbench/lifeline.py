"""Tie a worker's life to its parent's, and tell a kernel OOM kill from any other ``kill -9``.

Why: when the parent of a sweep is killed (``kill -9``, a lost terminal, a CI job cancelled), its
worker must not keep computing a case nobody will record; it would also share the cores with a
``--resume`` started at once and skew its timings. Linux offers a parent-death signal
(``prctl(PR_SET_PDEATHSIG)``); where that is missing or races with the parent's death, a watchdog
thread waits on the parent's sentinel pipe and checks the parent pid.

A worker that dies of SIGKILL was killed by *someone*: the kernel's OOM killer leaves evidence (the
``oom_kill`` counters of the memory cgroup and of ``/proc/vmstat``, readable without root), anyone
else does not. Only a counter that rose while the case ran makes the row ``oom``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import threading
from pathlib import Path

PR_SET_PDEATHSIG = 1


def tie_to_parent(poll_s: float = 1.0) -> None:
    """Make this process die with its parent: parent-death signal, plus a watchdog thread."""
    import multiprocessing as mp

    parent = mp.parent_process()
    # The process that started this worker (multiprocessing's parent) and the one the OS reports:
    # they differ for a ``forkserver`` child (``attnbench ab``), whose OS parent is the fork server.
    # The fork server exits with the harness, so watching either parent covers both.
    ppid = parent.pid if parent is not None and parent.pid else os.getppid()
    os_ppid = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the watchdog alone
        pass
    if os.getppid() != os_ppid or not _alive(ppid):  # a parent died before the signal was armed
        os._exit(1)
    sentinel = getattr(parent, "sentinel", None) if parent is not None else None

    def watch() -> None:
        from multiprocessing.connection import wait

        while True:
            if sentinel is not None:
                if wait([sentinel], timeout=poll_s):
                    os._exit(1)
            else:
                threading.Event().wait(poll_s)
            if os.getppid() != os_ppid:
                os._exit(1)

    threading.Thread(target=watch, name="attnbench-lifeline", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


# ------------------------------------------------------------------------------- OOM evidence
def _cgroup_counter_files() -> list[Path]:
    """The memory cgroup files of this process that count OOM kills (v2 memory.events, v1 oom_control)."""
    out: list[Path] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        rel = rel.lstrip("/")
        if controllers == "":
            root, name = Path("/sys/fs/cgroup"), "memory.events"
        elif "memory" in controllers.split(","):
            root, name = Path("/sys/fs/cgroup/memory"), "memory.oom_control"
        else:
            continue
        here = root / rel
        while True:  # inside a container the hierarchy may be mounted at our own cgroup
            if (here / name).is_file():
                out.append(here / name)
                break
            if here == root:
                break
            here = here.parent
    return out


def _read_counter(path: Path) -> int | None:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def oom_counters() -> dict[str, int]:
    """``{file: oom_kill count}`` for every OOM-kill counter this process can read."""
    files = [*_cgroup_counter_files(), Path("/proc/vmstat")]
    counts = {str(p): _read_counter(p) for p in files}
    return {k: v for k, v in counts.items() if v is not None}


def oom_evidence(before: dict[str, int]) -> str | None:
    """Which counter rose since ``before`` (one line), or None: no evidence of an OOM kill."""
    now = oom_counters()
    rose = [f"{k} oom_kill {before[k]} -> {v}" for k, v in now.items() if k in before and v > before[k]]
    return "; ".join(rose) or None
