"""Vision attention mechanisms as plain ``nn.Module``s, independent of the attnbench harness.

    import mechanisms
    mechanisms.available()                       # names of every registered mechanism
    attn = mechanisms.build("pale", dim=128, num_heads=4, pale_size=7)
    y = attn(x)                                  # x, y: (B, H, W, C)
    attn.pattern(H, W).dense()                   # (heads, N, N) bool: who may attend whom
    attn.flops(H, W)                             # analytic MACs of one forward, batch 1
    mechanisms.backbones.build("pale-t")         # whole backbones from these mechanisms (Swin-T, Pale-T, ...)
"""
from .base import AttentionBase, AttentionPattern, attend
from .registry import available, build, describe, get, options, register, unregister

# Importing a mechanism module registers it.
from . import global_attention  # noqa: E402,F401
from . import axial, cswin, swin  # noqa: E402,F401
from . import pale, slide  # noqa: E402,F401
from . import backbones  # noqa: E402,F401  (after the mechanisms it builds from)

__all__ = [
    "AttentionBase",
    "AttentionPattern",
    "attend",
    "available",
    "build",
    "describe",
    "get",
    "options",
    "register",
    "unregister",
]
