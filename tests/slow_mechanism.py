"""A test-only mechanism: global attention plus a configurable amount of extra, discarded work.

Why: the end-to-end test of ``attnbench compare`` and the measurement of the gate's sensitivity
need a kernel that computes the same output as ``global`` but is slower by an adjustable amount,
and it must be importable by the runner's spawned workers (the runner imports the module that
defines each non-builtin mechanism; ``tests/`` is on the workers' ``sys.path`` because spawn copies
the parent's). Import it lazily and call ``unregister`` when done, so registry-wide tests elsewhere
do not see it.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mechanisms.global_attention import GlobalAttention
from mechanisms.registry import _REGISTRY, register, unregister

NAME = "slowed_global"


class SlowedGlobal(GlobalAttention):
    """Global attention that also does throw-away work (test only).

    Args:
        extra_forwards: extra full forward passes per call (2 makes a call about 3x slower).
        extra_matmuls: extra (N x C) @ (C x C) matmuls per call, for small, graded slowdowns.
    """

    def __init__(self, dim: int, num_heads: int, *, extra_forwards: int = 0, extra_matmuls: int = 0,
                 backend: str = "native", **common: Any) -> None:
        if extra_forwards < 0 or extra_matmuls < 0:
            raise ValueError(f"{NAME}: extra_forwards and extra_matmuls must be >= 0")
        super().__init__(dim, num_heads, backend=backend, **common)
        self.extra_forwards = extra_forwards
        self.extra_matmuls = extra_matmuls

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            for _ in range(self.extra_forwards):
                super().forward(x)
            tokens = x.reshape(-1, self.dim)
            for _ in range(self.extra_matmuls):
                torch.matmul(tokens, self.proj.weight)
        return super().forward(x)


def ensure_registered() -> None:
    if _REGISTRY.get(NAME) is not SlowedGlobal:
        register(NAME)(SlowedGlobal)


def remove() -> None:
    unregister(NAME)


ensure_registered()
