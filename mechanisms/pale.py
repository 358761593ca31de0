"""Pale-shaped self-attention (PS-Attention, Pale Transformer, Wu et al., AAAI 2022).

Why this file looks the way it does: the paper's point is that attention over s_r *interlaced* rows
plus s_c interlaced columns reaches the whole map in one layer at the cost of a stripe. The
interlacing is a plain reshape (rows i·N_r + g for i < s_r form group g), so the fast path is two
views and a permute per branch, with no gather and no loop over groups. Pale's official code was never
released; the semantics follow the paper, and the choices the paper leaves open are listed in
``docs/mechanisms.md`` (Pale and Slide).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .base import AttentionBase, AttentionPattern, attend, ceil_div, split_branches, to_2tuple, total, trunc_normal_
from .flex import FlexSpec
from .projection import linear
from .registry import register


def interlaced_groups(length: int, size: int) -> tuple[int, int]:
    """(number of groups, lines per group) for ``length`` lines and pale size ``size``.

    The number of groups is ceil(length / size) (the spec's N_r). Group g holds the lines
    {g, g + N_r, g + 2 N_r, ...} that exist. Each group then needs only ceil(length / N_r) <= size
    slots, so we pad to N_r * ceil(length / N_r) lines rather than N_r * size: the same groups, the
    same pattern, less padding (e.g. H=8, s_r=7: N_r=2, groups of 4 rows, no padding at all).
    """
    groups = ceil_div(length, size)
    return groups, ceil_div(length, groups)


@torch.no_grad()
def init_near_identity_(weight: Tensor, std: float = 0.02) -> Tensor:
    """Depthwise 3x3 weights = identity (centre tap 1) + trunc-normal noise (std 0.02).

    Pale has no official code, so the conv projections' initialisation is ours. PyTorch's default
    (zero-mean random taps) starts every q/k/v channel as a random blur in which the token's own
    feature is one tap in nine; on the PairMatch task that kept Pale at chance (0.500 on 4 seeds at
    250 steps) while identity-started convs learned it (1.0/0.76/1.0/1.0). Near-identity makes the
    module start as attention with plain linear projections and learn the spatial taps; the small
    noise keeps every tap alive (the dependency test sees the full 3x3 reach from step 0).
    """
    trunc_normal_(weight, std=std)
    weight[:, :, weight.shape[2] // 2, weight.shape[3] // 2] += 1.0
    return weight


def pale_rule(groups_r: int, groups_c: int, heads_a: int):
    """Mask rule: heads < heads_a see their interlaced row group, the others their column group."""

    def rule(head: Tensor, qr: Tensor, qc: Tensor, kr: Tensor, kc: Tensor) -> Tensor:
        same_rows = (qr % groups_r) == (kr % groups_r)
        same_cols = (qc % groups_c) == (kc % groups_c)
        return torch.where(head < heads_a, same_rows, same_cols)

    rule.__name__ = f"pale_rows{groups_r}_cols{groups_c}"
    rule.__doc__ = (
        f"Note: heads [0, {heads_a}) allow k when row(q) = row(k) mod {groups_r}; the other heads when "
        f"col(q) = col(k) mod {groups_c}."
    )
    return rule


def _attend_interlaced(qkv: list[Tensor], size: int, scale: float, dropout_p: float) -> Tensor:
    """Attention inside interlaced groups along dim 1.

    qkv: q, k, v, (B, L, T, h, d) each — L is the grouped axis (rows for branch A), T the other axis.
    Returns (B, L, T, h, d). Padded lines (beyond L) are masked as keys and cropped as queries.
    """
    B, L, T, h, d = qkv[0].shape
    groups, per_group = interlaced_groups(L, size)
    Lp = groups * per_group
    if Lp != L:
        qkv = [F.pad(t, (0, 0, 0, 0, 0, 0, 0, Lp - L)) for t in qkv]
    # line i*groups + g -> (i, g): group g is the interlaced set {g, g+groups, ...}
    q, k, v = (t.view(B, per_group, groups, T, h, d).permute(0, 2, 4, 1, 3, 5).reshape(B * groups, h, per_group * T, d)
               for t in qkv)  # B*groups, h, per_group*T, d
    mask = None
    if Lp != L:
        line = torch.arange(per_group, device=q.device)[:, None] * groups + torch.arange(groups, device=q.device)
        real = (line < L).t()[:, :, None].expand(groups, per_group, T).reshape(groups, 1, 1, per_group * T)
        mask = real[None].expand(B, groups, 1, 1, per_group * T).reshape(B * groups, 1, 1, per_group * T)
    out = attend(q, k, v, mask, scale=scale, dropout_p=dropout_p)  # B*groups, h, per_group*T, d
    out = out.view(B, groups, h, per_group, T, d).permute(0, 3, 1, 4, 2, 5).reshape(B, Lp, T, h, d)
    return out[:, :L]


@register("pale")
class PaleAttention(AttentionBase):
    """Pale-shaped attention: half the heads attend within s_r interlaced rows, half within s_c interlaced columns.

    Branch A (heads [0, heads/2), channels [0, C/2)) attends inside its row group: N_r = ceil(H/s_r)
    groups, group g = rows {g, g+N_r, ...}; branch B likewise on columns with N_c = ceil(W/s_c).
    Q, K, V each come from a depthwise 3x3 conv over the full C-channel map (zero padding at the map
    border, no bias: a bias there is absorbed by the pointwise bias) followed by the pointwise part,
    the usual ``qkv`` Linear(C, 3C). The block-level conditional position encoding (x + DWConv(x))
    belongs to the block, not to this module, and is not included. Sizes that do not divide are
    padded per branch along the grouped axis only; padded keys are masked, padded queries cropped.
    Ω = 4NC² + NC(s_r·W + s_c·H + 27) when s_r | H and s_c | W.

    Args:
        pale_size: pale size s_r = s_c (int) or (s_r, s_c): interlaced rows / columns per group.
        conv_proj: depthwise 3x3 conv before the q/k/v projections (the paper); False gives plain linear projections.
        backend: 'native' (reshapes + SDPA per group) or 'masked' (global SDPA with the dense pattern mask).
    """

    backends = ("native", "masked", "flex")
    two_branch = True

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        pale_size: int | tuple[int, int] = 7,
        conv_proj: bool = True,
        backend: str = "native",
        **common: Any,
    ) -> None:
        super().__init__(dim, num_heads, backend=backend, **common)
        self.pale_size = to_2tuple(pale_size, "pale: pale_size")
        if not isinstance(conv_proj, bool):
            raise ValueError(f"pale: conv_proj must be True or False, got {conv_proj!r}")
        self.conv_proj = conv_proj
        self.dependency_radius = 1 if conv_proj else 0  # the 3x3 convs reach one token beyond each key
        dd = {"device": common.get("device"), "dtype": common.get("dtype")}
        # Output channel 3c + j (j = q, k, v) filters input channel c: three depthwise 3x3 convs in one.
        self.dwconv = nn.Conv2d(dim, 3 * dim, 3, padding=1, groups=dim, bias=False, **dd) if conv_proj else None
        if self.dwconv is not None:
            init_near_identity_(self.dwconv.weight)

    # ------------------------------------------------------------------------------ projections
    def _project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, H, W, C) -> q, k, v per token, (B, H, W, heads, d) each, from the conv + pointwise projections.

        The C -> 3C depthwise conv (output 3c + j filters input c) runs as three C -> C depthwise convs
        on the channels-last input, one per j: the same 27NC MACs, but oneDNN's channel-multiplier
        kernel took 5x as long as three plain depthwise ones (17 vs 3.5 ms at 112², C=64, 1 thread), and
        each output is already the (B, H, W, C) layout its pointwise Linear reads.
        """
        B, H, W, C = x.shape
        if self.dwconv is None:
            return self.qkv(x).view(B, H, W, 3, self.num_heads, self.head_dim).unbind(3)
        maps = x.permute(0, 3, 1, 2)  # NCHW view of channels-last memory: the conv stays channels-last
        conv = self.dwconv.weight.view(C, 3, 1, 3, 3)
        weight = self.qkv.weight.view(3, C, C)
        bias = self.qkv.bias.view(3, C) if self.qkv.bias is not None else [None] * 3
        # Not stacked: each branch copies q, k and v into its groups anyway, and a stack of the three was
        # one more pass over 3·N·C (7 % of the call at 112², C=64).
        return tuple(linear(F.conv2d(maps, conv[:, j].contiguous(), padding=1, groups=C).permute(0, 2, 3, 1),
                            weight[j], bias[j]).view(B, H, W, self.num_heads, self.head_dim) for j in range(3))

    def token_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-token q, k, v (B, heads, N, d) through the conv projections (for `masked` and the reference)."""
        B, H, W, _ = x.shape
        qkv = torch.stack(self._project(x)).reshape(3, B, H * W, self.num_heads, self.head_dim).transpose(2, 3)
        return qkv.unbind(0)

    # ---------------------------------------------------------------------------------- forward
    def _forward_native(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        s_r, s_c = self.pale_size
        p = self._dropout_p()
        halves = [split_branches(t, -2) for t in self._project(x)]  # (B, H, W, heads/2, d) x 2, for q, k, v
        rows = _attend_interlaced([t[0] for t in halves], s_r, self.scale, p)  # B, H, W, heads/2, d
        cols = _attend_interlaced([t[1].transpose(1, 2) for t in halves], s_c, self.scale, p).transpose(1, 2)
        return torch.cat([rows, cols], dim=3).reshape(B, H, W, C)

    # ------------------------------------------------------------------------- what it attends
    def pattern(self, H: int, W: int) -> AttentionPattern:
        self.check_size(H, W)
        groups_r, _ = interlaced_groups(H, self.pale_size[0])
        groups_c, _ = interlaced_groups(W, self.pale_size[1])
        return AttentionPattern(H, W, self.num_heads, pale_rule(groups_r, groups_c, self.num_heads // 2), "pale")

    def flex_spec(self, H: int, W: int) -> FlexSpec:
        """Interlaced row groups (row mod N_r) for branch A, column groups (col mod N_c) for B: exact.
        Laid out group by group, the interlaced lines become contiguous: no gather inside the kernel."""
        groups_r, _ = interlaced_groups(H, self.pale_size[0])
        groups_c, _ = interlaced_groups(W, self.pale_size[1])
        rows = torch.arange(H)[:, None].expand(H, W)
        cols = torch.arange(W)[None, :].expand(H, W)
        return FlexSpec(groups=torch.stack([rows % groups_r, cols % groups_c]), exact=True)

    def flops(self, H: int, W: int) -> dict[str, int]:
        """MACs of what the selected backend computes.

        native: q·kᵀ and attn·v inside each group, padded query lines included (each branch holds C/2
        channels): rows 2·(Hp·W)·(g_r·W)·C/2, columns 2·(H·Wp)·(g_c·H)·C/2, with g = lines per group
        and Hp, Wp the padded lengths; this is NC(s_r·W + s_c·H) when the sizes divide.
        masked: 2N²C. Both: 4NC² for the projections and 27NC for the three depthwise 3x3 convs.
        """
        self.check_size(H, W)
        N, C = H * W, self.dim
        parts = {"linear": self.linear_macs(H, W)}
        if self.conv_proj:
            parts["conv"] = 27 * N * C
        if self.backend == "masked":
            parts["attention"] = 2 * N * N * C
        else:
            g_r, per_r = interlaced_groups(H, self.pale_size[0])
            g_c, per_c = interlaced_groups(W, self.pale_size[1])
            rows = (g_r * per_r) * W * (per_r * W) * C  # 2 · tokens · keys · C/2
            cols = H * (g_c * per_c) * (per_c * H) * C
            parts["attention"] = rows + cols
        return total(parts)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pale_size={self.pale_size}, conv_proj={self.conv_proj}"
