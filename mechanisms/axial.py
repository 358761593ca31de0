"""Axial attention: row attention on half the heads and column attention on the other half, in parallel.

This is the parallel, half-channels-per-axis form (CSWin with sw = 1 and no LePE, with the branches
in the other order), not Axial-DeepLab's two sequential full-channel layers: it keeps one qkv/proj
pair, so its cost compares one-to-one with the other mechanisms. Rows and columns need no padding.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import AttentionBase, AttentionPattern, MaskRule, attend, split_branches, total
from .flex import FlexSpec
from .registry import register


def axial_rule(num_heads: int) -> MaskRule:
    """The axial pattern as a vectorised predicate."""
    half = num_heads // 2

    def rule(head: Tensor, q_row: Tensor, q_col: Tensor, k_row: Tensor, k_col: Tensor) -> Tensor:
        """Note: heads [0, heads/2) allow key (r', c') for query (r, c) iff r == r' (its row);
        heads [heads/2, heads) iff c == c' (its column).
        """
        return torch.where(head < half, q_row == k_row, q_col == k_col)

    rule.__name__ = f"axial_h{num_heads}"
    return rule


@register("axial")
class AxialAttention(AttentionBase):
    """Axial attention: each query attends along its row (first half of heads) and its column (second half).

    Ω (native) = 4NC² + NC(H + W); no positional term.

    Args:
        backend: 'native' (rows/columns folded into the batch + SDPA) or 'masked' (global SDPA with a dense mask).
    """

    two_branch = True

    def __init__(self, dim: int, num_heads: int, *, backend: str = "native", **common: Any) -> None:
        super().__init__(dim, num_heads, backend=backend, **common)

    def _forward_native(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        half, d = self.num_heads // 2, self.head_dim
        first, second = split_branches(self.qkv(x).view(B, H, W, 3, self.num_heads, d), -2)
        # Rows: (B*H) sequences of W tokens on heads [0, half).
        q, k, v = first.permute(3, 0, 1, 4, 2, 5).reshape(3, B * H, half, W, d).unbind(0)
        rows = attend(q, k, v, scale=self.scale, dropout_p=self._dropout_p())  # B*H, half, W, d
        rows = rows.view(B, H, half, W, d).permute(0, 1, 3, 2, 4).reshape(B, H, W, C // 2)
        # Columns: (B*W) sequences of H tokens on heads [half, heads).
        q, k, v = second.permute(3, 0, 2, 4, 1, 5).reshape(3, B * W, half, H, d).unbind(0)
        cols = attend(q, k, v, scale=self.scale, dropout_p=self._dropout_p())  # B*W, half, H, d
        cols = cols.view(B, W, half, H, d).permute(0, 3, 1, 2, 4).reshape(B, H, W, C // 2)
        return torch.cat([rows, cols], dim=-1)

    def flex_spec(self, H: int, W: int) -> FlexSpec:
        """Rows for branch A, columns for branch B: exact."""
        rows = torch.arange(H)[:, None].expand(H, W)
        cols = torch.arange(W)[None, :].expand(H, W)
        return FlexSpec(groups=torch.stack([rows, cols]), exact=True)

    def pattern(self, H: int, W: int) -> AttentionPattern:
        self.check_size(H, W)
        rule = axial_rule(self.num_heads)
        return AttentionPattern(H, W, self.num_heads, rule, rule.__name__)

    def flops(self, H: int, W: int) -> dict[str, int]:
        """MACs of what the selected backend computes: ``native`` NC(H + W), ``masked`` 2N²C for attention."""
        self.check_size(H, W)
        N, C = H * W, self.dim
        attention = 2 * N * N * C if self.backend == "masked" else N * C * (H + W)
        return total({"linear": self.linear_macs(H, W), "attention": attention})
