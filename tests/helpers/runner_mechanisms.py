"""Test-only mechanisms that misbehave on purpose (raise, hog memory, hang, allocate a known size).

They live in an importable module, not in a test file, because the runner measures cases in
``spawn``-ed workers: a worker registers them by importing this module (the runner passes the
module names of non-builtin mechanisms to every worker; ``sys.path`` travels with spawn).
Importing twice is harmless: ``register`` accepts the same class again.
"""
from __future__ import annotations

import time

import torch

import mechanisms
from mechanisms.global_attention import GlobalAttention


@mechanisms.register("test_raises")
class Raises(GlobalAttention):
    """Fails in forward, like a mechanism with a bug."""

    def forward(self, x):
        raise ValueError("deliberate failure in test_raises")


@mechanisms.register("test_hog")
class Hog(GlobalAttention):
    """Allocates 1 GiB in forward: past any small ``limits.max_memory_gb``."""

    def forward(self, x):
        hog = torch.ones(2**28, dtype=torch.float32, device=x.device)  # 1 GiB
        return super().forward(x) + hog[0]


@mechanisms.register("test_sleeper")
class Sleeper(GlobalAttention):
    """Hangs for a minute in forward, like a deadlocked kernel."""

    def forward(self, x):
        time.sleep(60)
        return super().forward(x)


@mechanisms.register("test_slow")
class Slow(GlobalAttention):
    """Takes a second per forward: slow enough to kill a run in the middle."""

    def forward(self, x):
        time.sleep(1.0)
        return super().forward(x)


KNOWN_BYTES = 32 * 2**20


@mechanisms.register("test_alloc")
class Alloc(GlobalAttention):
    """Holds one tensor of exactly KNOWN_BYTES while computing: the memory metric must see it."""

    def forward(self, x):
        buf = torch.ones(KNOWN_BYTES // 4, dtype=torch.float32, device=x.device)
        out = super().forward(x)
        return out + buf[:1]


@mechanisms.register("test_wrong_flops")
class WrongFlops(GlobalAttention):
    """Its analytic formula forgets the attention matmuls: the counters must catch it."""

    def flops(self, H, W):
        return {"linear": self.linear_macs(H, W), "total": self.linear_macs(H, W)}
