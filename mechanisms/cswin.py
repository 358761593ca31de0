"""CSWin cross-shaped window attention: vertical stripes on half the heads, horizontal on the other
half, each with its stripe-local LePE (a depthwise 3x3 conv on V that never crosses a stripe border).

Any H, W: q/k/v are zero-padded after the projection to a multiple of the stripe width (CSWin-Seg
pads there too, but symmetrically and without a mask); padded keys are masked, and the zero V on the
padding makes LePE see exactly the zero padding it would see at the real map border.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .base import (
    positive_int,
    AttentionBase,
    AttentionPattern,
    MaskRule,
    attend,
    ceil_div,
    pad_to_multiple,
    split_branches,
    total,
    valid_token_map,
    window_partition,
    window_reverse,
)
from .flex import FlexSpec
from .registry import register


def _same_stripe(q_index: Tensor, k_index: Tensor, split_size: int) -> Tensor:
    return torch.div(q_index, split_size, rounding_mode="floor") == torch.div(k_index, split_size, rounding_mode="floor")


def cswin_rule(split_size: int, num_heads: int) -> MaskRule:
    """The CSWin pattern for stripe width sw as a vectorised predicate."""
    half = num_heads // 2

    def rule(head: Tensor, q_row: Tensor, q_col: Tensor, k_row: Tensor, k_col: Tensor) -> Tensor:
        """Note: heads [0, heads/2) allow key (r', c') for query (r, c) iff c // sw == c' // sw (vertical
        stripe of sw columns, full height); heads [heads/2, heads) iff r // sw == r' // sw (horizontal
        stripe of sw rows, full width). sw >= H and sw >= W makes both global.
        """
        vertical = _same_stripe(q_col, k_col, split_size)
        horizontal = _same_stripe(q_row, k_row, split_size)
        return torch.where(head < half, vertical, horizontal)

    rule.__name__ = f"cswin_sw{split_size}_h{num_heads}"
    return rule


@register("cswin")
class CSWinAttention(AttentionBase):
    """CSWin attention: stripes of width sw, vertical (H x sw) on the first half of the heads and channels,
    horizontal (sw x W) on the second, with stripe-local LePE added before ``proj``.

    Ω (native) = 4NC² + C/2·(2·H·sw·H·Wp + 2·sw·W·Hp·W) + 9·C/2·(H·Wp + Hp·W), with Wp (Hp) = W (H)
    rounded up to a multiple of min(sw, W) (min(sw, H)): padded stripes are computed (and counted) in
    full; on sizes sw divides this is the paper's 4NC² + sw·NC(H + W), plus 9NC for LePE.

    Args:
        split_size: stripe width sw in tokens.
        backend: 'native' (stripes + SDPA) or 'masked' (global SDPA with the pattern as a dense mask).
    """

    two_branch = True

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        split_size: int = 7,
        backend: str = "native",
        device: Any = None,
        dtype: Any = None,
        **common: Any,
    ) -> None:
        super().__init__(dim, num_heads, backend=backend, device=device, dtype=dtype, **common)
        self.split_size = positive_int(split_size, "cswin: split_size")
        half = dim // 2
        # One LePE per branch: [0] vertical stripes, [1] horizontal stripes (official `get_v`).
        self.lepe = nn.ModuleList(
            nn.Conv2d(half, half, 3, padding=1, groups=half, device=device, dtype=dtype) for _ in range(2)
        )

    def stripe_shapes(self, H: int, W: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """(rows, cols) of one stripe per branch; sw is cut to the map side so a wide stripe needs no padding."""
        return (H, min(self.split_size, W)), (min(self.split_size, H), W)

    def _forward_native(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        qkv = self.qkv(x).view(B, H, W, 3, self.num_heads, self.head_dim)
        (vh, vw), (hh, hw) = self.stripe_shapes(H, W)
        first, second = split_branches(qkv, -2)  # B, H, W, 3, heads/2, d each
        vertical = self._stripes(first, self.lepe[0], vh, vw)  # B, H, W, C/2
        horizontal = self._stripes(second, self.lepe[1], hh, hw)  # B, H, W, C/2
        return torch.cat([vertical, horizontal], dim=-1)

    def _stripes(self, qkv: Tensor, lepe: nn.Conv2d, sh: int, sw: int) -> Tensor:
        """Attention + LePE inside sh x sw stripes for one branch; qkv: (B, H, W, 3, h, d)."""
        B, H, W, _, h, d = qkv.shape
        T = sh * sw
        if H % sh or W % sw:
            x, pad_h, pad_w = pad_to_multiple(qkv.reshape(B, H, W, 3 * h * d), sh, sw)  # zeros on the padding
            stripes = window_partition(x, sh, sw).view(-1, T, 3, h, d)
        else:  # cut this branch's heads out of the projection in the same copy as the stripes (no copy at all
            pad_h = pad_w = 0  # for full-width horizontal stripes, which are already contiguous rows)
            stripes = (qkv.view(B, H // sh, sh, W // sw, sw, 3, h, d).permute(0, 1, 3, 2, 4, 5, 6, 7)
                       .reshape(-1, T, 3, h, d))
        Hp, Wp = H + pad_h, W + pad_w
        q, k, v = stripes.permute(2, 0, 3, 1, 4).unbind(0)  # B*nS, h, T, d
        mask = None
        if pad_h or pad_w:
            real = window_partition(valid_token_map(H, W, Hp, Wp, x.device)[None, :, :, None], sh, sw)  # nS, T, 1
            mask = real.view(1, -1, 1, 1, T).expand(B, -1, 1, 1, T).reshape(-1, 1, 1, T)  # keys only
        out = attend(q, k, v, mask, scale=self.scale, dropout_p=self._dropout_p())  # B*nS, h, T, d
        # LePE on V cut into stripes: the conv's zero padding is the stripe border.
        pos = lepe(v.transpose(-1, -2).reshape(-1, h * d, sh, sw))  # B*nS, h*d, sh, sw
        out = out + pos.view(-1, h, d, T).transpose(-1, -2)
        out = window_reverse(out.transpose(1, 2).reshape(-1, T, h * d), sh, sw, Hp, Wp)  # B, Hp, Wp, h*d
        return out[:, :H, :W]

    def flex_output_term(self, q: Tensor, k: Tensor, v: Tensor, H: int, W: int) -> Tensor:
        """LePE as the native path computes it (depthwise conv on V cut into stripes) for flex; the dense
        ``output_term`` below stays the reference's independent form (measured 560 ms vs ~10 ms at 112²)."""
        B, heads, N, d = v.shape
        half = heads // 2
        out = []
        for branch, (sh, sw) in enumerate(self.stripe_shapes(H, W)):
            maps = v[:, branch * half:(branch + 1) * half].permute(0, 2, 1, 3).reshape(B, H, W, half * d)
            maps, pad_h, pad_w = pad_to_multiple(maps, sh, sw)  # zeros: the conv's padding at the map border
            stripes = window_partition(maps, sh, sw)  # B*nS, T, half*d
            pos = self.lepe[branch](stripes.transpose(1, 2).reshape(-1, half * d, sh, sw))  # B*nS, half*d, sh, sw
            pos = window_reverse(pos.flatten(2).transpose(1, 2), sh, sw, H + pad_h, W + pad_w)[:, :H, :W]
            out.append(pos.reshape(B, N, half, d).permute(0, 2, 1, 3))  # B, half, N, d
        return torch.cat(out, dim=1)

    def output_term(self, q: Tensor, k: Tensor, v: Tensor, H: int, W: int) -> Tensor:
        """LePE without stripes or conv2d, for the `masked` backend and the reference: the nine 3x3
        neighbours are taken as shifts of the whole zero-ringed map, kept only when the neighbour lies
        in the query's stripe, and mixed by the conv weights. O(9NC), like the conv it checks."""
        B, heads, N, d = v.shape
        half, sw = heads // 2, self.split_size
        ringed = F.pad(v.view(B, heads, H, W, d), (0, 0, 1, 1, 1, 1))  # zero ring = off the map
        row = torch.arange(H, device=v.device)[:, None].expand(H, W)
        col = torch.arange(W, device=v.device)[None, :].expand(H, W)
        taps, keep = [], []
        for i in range(3):
            for j in range(3):
                taps.append(ringed[:, :, i : i + H, j : j + W])  # neighbour (r + i - 1, c + j - 1)
                in_column_stripe = _same_stripe(col, col + j - 1, sw)  # vertical branch
                in_row_stripe = _same_stripe(row, row + i - 1, sw)  # horizontal branch
                keep.append(torch.stack([in_column_stripe] * half + [in_row_stripe] * half))  # heads, H, W
        taps = torch.stack(taps, dim=-1) * torch.stack(keep, dim=-1)[None, :, :, :, None, :].to(v.dtype)
        weight = torch.cat([conv.weight for conv in self.lepe]).view(heads, d, 9)
        bias = torch.cat([conv.bias for conv in self.lepe]).view(1, heads, 1, d)
        return torch.einsum("bhrcdk,hdk->bhrcd", taps, weight).reshape(B, heads, N, d) + bias

    def flex_spec(self, H: int, W: int) -> FlexSpec:
        """Vertical stripes (column // sw) for branch A, horizontal (row // sw) for branch B: exact."""
        rows = torch.arange(H)[:, None].expand(H, W)
        cols = torch.arange(W)[None, :].expand(H, W)
        sw = self.split_size
        return FlexSpec(groups=torch.stack([torch.div(cols, sw, rounding_mode="floor"), torch.div(rows, sw, rounding_mode="floor")]), exact=True)

    def pattern(self, H: int, W: int) -> AttentionPattern:
        self.check_size(H, W)
        rule = cswin_rule(self.split_size, self.num_heads)
        return AttentionPattern(H, W, self.num_heads, rule, rule.__name__)

    def flops(self, H: int, W: int) -> dict[str, int]:
        """MACs of what the selected backend computes: ``native`` counts its padded stripes in full,
        ``masked`` pays 2N²C for attention; LePE costs 9 MACs per channel and (padded) token."""
        self.check_size(H, W)
        half = self.dim // 2
        (vh, vw), (hh, hw) = self.stripe_shapes(H, W)
        if self.backend == "masked":
            tokens = H * W
            parts = {"attention": 2 * tokens * tokens * self.dim, "lepe": 9 * tokens * self.dim}
        else:
            vertical_tokens = H * ceil_div(W, vw) * vw  # padded map of the vertical branch
            horizontal_tokens = ceil_div(H, hh) * hh * W
            parts = {
                "attention": 2 * half * (vertical_tokens * vh * vw + horizontal_tokens * hh * hw),
                "lepe": 9 * half * (vertical_tokens + horizontal_tokens),
            }
        return total({"linear": self.linear_macs(H, W), **parts})

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, split_size={self.split_size}"
