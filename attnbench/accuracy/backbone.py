"""The small fixed backbone the accuracy and receptive-field metrics train or probe.

    patch embedding -> L pre-norm blocks [x + attn(LN(x)); x + MLP(LN(x))] -> mean pool -> linear

Why this shape: every model differs *only* in its attention module, so differences in accuracy can
be put on the attention. The patch embedding is non-overlapping and positions are added as a table (learned,
or a fixed 2-D sine-cosine code; no convolutional position encoding), so attention is the only path
between tokens; the readout is mean-pool -> linear
with **no final norm**, which keeps it additive over tokens: if no token's receptive field ever
holds two given image regions, the logit is a sum of functions of each region alone (the PairMatch
chance argument). A mechanism's own positional terms (Swin's bias, CSWin's LePE, Pale's conv
projections, Slide's shift convs) are part of the mechanism and stay in.

Blocks alternate the way the mechanism's own backbone does, as the mechanism declares it
(``layer_options`` of the mechanism contract): a Swin entry with a shift uses plain windows in even
blocks and the shifted windows in odd ones.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

import mechanisms


def layer_options(mechanism: str, options: dict[str, Any], layer: int) -> dict[str, Any]:
    """Options of block ``layer`` (0-based), as the mechanism alternates them."""
    return mechanisms.get(mechanism).layer_options(options, layer)


def attention_macs(mechanism: str, options: dict[str, Any], dim: int, num_heads: int, grid: tuple[int, int],
                   depth: int) -> int:
    """MACs of the ``depth`` attention layers for one image, block by block, through ``case_cost``
    (the one place costs are derived from the mechanism contract)."""
    from ..case import Case, freeze_options
    from ..cost import case_cost

    H, W = grid
    total = 0
    for i in range(depth):
        opts = layer_options(mechanism, options, i)
        case = Case(mechanism, mechanism, freeze_options(opts), H, W, 1, dim,
                    num_heads, "float32", "cpu", "forward")
        total += case_cost(case).macs
    return total


def build_attention_stack(mechanism: str, options: dict[str, Any], dim: int, num_heads: int, depth: int) -> list[nn.Module]:
    return [mechanisms.build(mechanism, dim, num_heads, **layer_options(mechanism, options, i)) for i in range(depth)]


def sincos_position_embedding(grid: tuple[int, int], dim: int) -> Tensor:
    """Fixed 2-D sine-cosine position embedding (H, W, dim), as in MAE and MoCo v3.

    Why offer it: dot products of sine-cosine codes already fall off with distance, so attention can
    compare positions from the first step. On Pathfinder a learned table (trunc-normal, std 0.02)
    let the small backbone memorise the training set instead (train 0.82, test 0.58, against test
    0.76 with this code). Why not the default: at unit scale the code swamps the patch features of
    a freshly initialised model, and global attention stayed at chance on PairMatch in 250 steps.
    Half the channels encode the row, half the column.
    """
    if dim % 4:
        raise ValueError(f"a sincos position embedding needs dim divisible by 4, got dim={dim}; "
                         "use a dim like 32 or 64, or accuracy.pos_embed: learned")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)

    def axis(n: int) -> Tensor:  # n, dim/2
        angle = torch.arange(n, dtype=torch.float64)[:, None] * omega[None]
        return torch.cat([angle.sin(), angle.cos()], dim=1)

    H, W = grid
    rows = axis(H)[:, None, :].expand(H, W, 2 * quarter)
    cols = axis(W)[None, :, :].expand(H, W, 2 * quarter)
    return torch.cat([rows, cols], dim=-1).float()


class Block(nn.Module):
    def __init__(self, attn: nn.Module, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:  # B, H, W, C
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Backbone(nn.Module):
    """Images (B, channels, H·p, W·p) -> logits (B, classes), over an H x W token grid."""

    def __init__(self, mechanism: str, options: dict[str, Any], *, grid: tuple[int, int], patch_size: int,
                 in_channels: int, num_classes: int, dim: int, num_heads: int, depth: int, mlp_ratio: float = 2.0,
                 pos_embed: str = "learned") -> None:
        super().__init__()
        self.grid, self.patch_size, self.dim = grid, patch_size, dim
        self.mechanism, self.options = mechanism, dict(options)
        self.mlp_ratio, self.in_channels, self.num_classes = mlp_ratio, in_channels, num_classes
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.pos_embed_kind = pos_embed
        if pos_embed == "sincos":
            self.register_buffer("pos_embed", sincos_position_embedding(grid, dim)[None])
        elif pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, grid[0], grid[1], dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            raise ValueError(f"pos_embed must be 'sincos' or 'learned', got {pos_embed!r}")
        self.blocks = nn.ModuleList(Block(a, dim, mlp_ratio) for a in build_attention_stack(mechanism, options, dim, num_heads, depth))
        self.head = nn.Linear(dim, num_classes)

    def tokens(self, images: Tensor) -> Tensor:
        x = self.patch_embed(images).permute(0, 2, 3, 1)  # B, H, W, C
        if x.shape[1:3] != self.pos_embed.shape[1:3]:
            raise ValueError(f"images give a {tuple(x.shape[1:3])} token grid, the backbone was built for {self.grid}")
        return x + self.pos_embed

    def forward(self, images: Tensor) -> Tensor:
        x = self.tokens(images)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(dim=(1, 2)))  # no final norm: the readout stays additive over tokens

    def macs(self) -> int:
        """Analytic MACs of one forward for one image (the mechanisms' own formulas + linear layers)."""
        H, W = self.grid
        N, C, p = H * W, self.dim, self.patch_size
        total = N * C * self.in_channels * p * p  # patch embedding
        total += attention_macs(self.mechanism, self.options, C, self.blocks[0].attn.num_heads, self.grid, len(self.blocks))
        total += len(self.blocks) * 2 * N * C * int(C * self.mlp_ratio)  # MLPs
        return total + C * self.num_classes
