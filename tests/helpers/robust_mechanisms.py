"""Test-only mechanisms for the robustness tests (tests/test_robustness.py), importable by name so
spawned workers register them too.

``test_nap`` naps at its smallest size (8x8) while the file named by ``$ATTNBENCH_TEST_NAP`` exists,
after writing its worker's pid (and parent-death signal) next to it: a case a test can kill in the middle, knowing which process
to kill. ``test_unplannable`` has a bug in ``unavailable_reason`` (while ``$ATTNBENCH_TEST_UNPLANNABLE`` is set), so a
run fails before its first case.
``test_flag_hog`` runs out of memory at its smallest size while a flag file exists.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import mechanisms
from mechanisms.global_attention import GlobalAttention


def _parent_death_signal() -> int:
    """The signal this process gets when its parent dies (prctl PR_GET_PDEATHSIG; 0: none, -1: unknown)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        sig = ctypes.c_int(0)
        return sig.value if libc.prctl(2, ctypes.byref(sig), 0, 0, 0) == 0 else -1
    except (OSError, AttributeError):
        return -1


@mechanisms.register("test_nap")
class Nap(GlobalAttention):
    def forward(self, x):
        flag = os.environ.get("ATTNBENCH_TEST_NAP")
        if flag and x.shape[1] == 8 and os.path.exists(flag):
            Path(flag + ".pid").write_text(f"{os.getpid()} {_parent_death_signal()}")
            deadline = time.monotonic() + 60
            while os.path.exists(flag) and time.monotonic() < deadline:
                time.sleep(0.05)
        return super().forward(x)


@mechanisms.register("test_unplannable")
class Unplannable(GlobalAttention):
    """Its bug shows only while ``$ATTNBENCH_TEST_UNPLANNABLE`` is set, so other tests that walk every
    registered mechanism (the equivalence tests) see a well-behaved one."""

    @classmethod
    def unavailable_reason(cls, backend, device, dtype, mode="forward"):
        if os.environ.get("ATTNBENCH_TEST_UNPLANNABLE"):
            raise RuntimeError("deliberate bug in unavailable_reason")
        return super().unavailable_reason(backend, device, dtype, mode)


@mechanisms.register("test_flag_hog")
class FlagHog(GlobalAttention):
    """At 8x8, while the file named by ``$ATTNBENCH_TEST_HOG`` exists, allocates 1 GiB: past a small
    ``limits.max_memory_gb``, so the case ends in ``oom`` and larger sizes are skipped from it."""

    def forward(self, x):
        import torch

        flag = os.environ.get("ATTNBENCH_TEST_HOG")
        if flag and x.shape[1] == 8 and os.path.exists(flag):
            hog = torch.ones(2**28, dtype=torch.float32, device=x.device)
            return super().forward(x) + hog[0]
        return super().forward(x)
