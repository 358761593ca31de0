"""The non-attention layers of the backbones: stems, merging, MLP, stochastic depth and the block.

Everything runs channels-last (B, H, W, C), the mechanisms' layout, so a stage is a plain loop over
blocks. Each layer that costs MACs says how many in ``macs(H, W)`` (H, W = its input map), counting
every matmul and conv and nothing else (norms, GELU, softmax, bias adds are free, as in the papers and
fvcore); the backbone's analytic count is the sum of these and the mechanisms' ``flops()``.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al.): in training, drop a residual branch with probability p."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {p!r}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    """Linear(C, rC) -> GELU -> Linear(rC, C)."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        self.hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, self.hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(self.hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def macs(self, tokens: int) -> int:
        return 2 * tokens * self.fc1.in_features * self.hidden


class ConvPositionEncoding(nn.Module):
    """Conditional position encoding x + DWConv3x3(x) (Chu et al.; Pale's blocks), zero padding, with bias."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: Tensor) -> Tensor:  # B, H, W, C
        return x + self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    def macs(self, H: int, W: int) -> int:
        return 9 * H * W * self.conv.out_channels


class Block(nn.Module):
    """Pre-norm transformer block: [x + CPE(x)]; x + DropPath(attn(LN(x))); x + DropPath(MLP(LN(x)))."""

    def __init__(self, dim: int, attn: nn.Module, *, mlp_ratio: float, drop_path: float, cpe: bool, eps: float) -> None:
        super().__init__()
        self.cpe = ConvPositionEncoding(dim) if cpe else None
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = attn
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:  # B, H, W, C
        if self.cpe is not None:
            x = self.cpe(x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def macs(self, H: int, W: int) -> dict[str, int]:
        """MACs by part: the mechanism's q/k/v/output projections (``attention_linear``), the rest of
        the mechanism (``attention``: what differs between mechanisms, its own convs included), the
        MLP, and the CPE when present."""
        total = int(self.attn.flops(H, W)["total"])
        linear = int(self.attn.linear_macs(H, W))
        parts = {"attention_linear": linear, "attention": total - linear, "mlp": self.mlp.macs(H * W)}
        if self.cpe is not None:
            parts["cpe"] = self.cpe.macs(H, W)
        return parts


class PatchStem(nn.Module):
    """Non-overlapping patchify Conv2d(3, C, p, stride p), optionally + LayerNorm (Swin; DeiT has none)."""

    def __init__(self, in_chans: int, dim: int, patch_size: int, *, norm: bool, eps: float) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim, eps=eps) if norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:  # B, 3, H, W -> B, H/p, W/p, C
        return self.norm(self.proj(x).permute(0, 2, 3, 1))

    def out_size(self, H: int, W: int) -> tuple[int, int]:
        p = self.proj.stride[0]
        return H // p, W // p

    def macs(self, H: int, W: int) -> int:
        Ho, Wo = self.out_size(H, W)
        k = self.proj.kernel_size[0]
        return Ho * Wo * self.proj.out_channels * self.proj.in_channels * k * k


class ConvStem(nn.Module):
    """Overlapping Conv2d(3, C, 7, stride 4) + LayerNorm (CSWin; Pale)."""

    def __init__(self, in_chans: int, dim: int, *, padding: int, eps: float) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, 7, stride=4, padding=padding)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))

    def out_size(self, H: int, W: int) -> tuple[int, int]:
        p = self.proj.padding[0]
        return (H + 2 * p - 7) // 4 + 1, (W + 2 * p - 7) // 4 + 1

    def macs(self, H: int, W: int) -> int:
        Ho, Wo = self.out_size(H, W)
        return Ho * Wo * self.proj.out_channels * self.proj.in_channels * 49


class PatchMerging(nn.Module):
    """Swin's 2x2 merge: concat the four sub-grids -> LayerNorm(4C) -> Linear(4C, 2C, bias=False).

    Odd maps are zero-padded bottom/right by one token first (Swin's detection code).
    """

    def __init__(self, dim: int, out_dim: int, *, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim, eps=eps)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # B, H, W, C -> B, ceil(H/2), ceil(W/2), 2C
        H, W = x.shape[1], x.shape[2]
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        # Official order: (even row, even col), (odd row, even col), (even row, odd col), (odd row, odd col).
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))

    @staticmethod
    def out_size(H: int, W: int) -> tuple[int, int]:
        return -(-H // 2), -(-W // 2)

    def macs(self, H: int, W: int) -> int:
        Ho, Wo = self.out_size(H, W)
        return Ho * Wo * self.reduction.in_features * self.reduction.out_features


class ConvMerging(nn.Module):
    """CSWin's merge: Conv2d(C, 2C, 3, stride 2, padding 1) + LayerNorm; odd maps need no padding."""

    def __init__(self, dim: int, out_dim: int, *, eps: float) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, out_dim, 3, stride=2, padding=1)
        self.norm = nn.LayerNorm(out_dim, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))

    @staticmethod
    def out_size(H: int, W: int) -> tuple[int, int]:
        return -(-H // 2), -(-W // 2)

    def macs(self, H: int, W: int) -> int:
        Ho, Wo = self.out_size(H, W)
        return Ho * Wo * self.proj.out_channels * self.proj.in_channels * 9


def init_weights(module: nn.Module) -> None:
    """timm/Swin initialisation: Linear weights trunc-normal std 0.02, biases 0; LayerNorm 1, 0.

    Applied to the whole model, mechanisms included, as Swin, CSWin and DeiT do; convs keep their own
    initialisation (the mechanisms' shift and projection convs depend on it).
    """
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
