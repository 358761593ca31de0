"""The two model shapes every backbone spec builds into: four-stage hierarchical, and isotropic ViT.

Attention modules come only from the mechanism registry (``mechanisms.build``), one per block, with
the options the mechanism's own contract gives that block (``layer_options``: Swin shifts its odd
blocks). The skeleton never looks inside a mechanism, so any registered mechanism fits any skeleton.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .. import registry
from .layers import Block, ConvMerging, ConvStem, PatchMerging, PatchStem, init_weights
from .specs import ModelSpec


def attention_heads(mechanism: str, dim: int, heads: int) -> int:
    """The head count a stage gives ``mechanism``: the skeleton's, made even for two-branch mechanisms.

    Two-branch mechanisms (CSWin, axial, Pale) split heads in half, so an odd count (Swin-T's 3 in
    stage 1) becomes the nearest even count dividing ``dim``, upward first (96 channels: 3 -> 4). Heads
    change neither the parameters (except a per-head bias table) nor the MACs of these mechanisms.
    """
    if heads % 2 == 0 or not getattr(registry.get(mechanism), "two_branch", False):
        return heads
    for candidate in (heads + 1, heads - 1):
        if candidate >= 2 and dim % candidate == 0:
            return candidate
    raise ValueError(
        f"{mechanism} needs an even head count dividing dim={dim}; the skeleton gives {heads}: pass heads=(...) "
        "with even counts"
    )


def build_attention(mechanism: str, dim: int, heads: int, options: dict[str, Any], index: int) -> nn.Module:
    """One block's attention: the stage's options through the mechanism's ``layer_options`` contract."""
    cls = registry.get(mechanism)
    layer_options = getattr(cls, "layer_options", None)
    opts = layer_options(options, index) if layer_options is not None else dict(options)
    return registry.build(mechanism, dim, attention_heads(mechanism, dim, heads), **opts)


def _drop_path_rates(depths: Sequence[int], rate: float) -> list[float]:
    """Stochastic depth rising linearly from 0 to ``rate`` over all blocks (Swin, CSWin, DeiT)."""
    total = sum(depths)
    return [rate * i / max(total - 1, 1) for i in range(total)]


class BackboneBase(nn.Module):
    """What both model shapes share: the spec, the analytic MAC count, deploy and the input check."""

    spec: ModelSpec

    def check_input(self, x: Tensor) -> tuple[int, int]:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"{self.spec.name}: expected images (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        H, W = x.shape[-2:]
        p = self.spec.patch_size
        if H % p or W % p or H < p or W < p:
            fix_h, fix_w = max(p, -(-H // p) * p), max(p, -(-W // p) * p)
            raise ValueError(
                f"{self.spec.name}: input {H}x{W} is not a multiple of the patch size {p}; resize or pad it, "
                f"e.g. to {fix_h}x{fix_w}"
            )
        return H, W

    def flops(self, H: int, W: int) -> dict[str, int]:  # pragma: no cover - both subclasses override
        raise NotImplementedError

    @torch.no_grad()
    def deploy(self) -> "BackboneBase":
        """The model as served for inference: every attention module replaced by its ``deploy()`` form
        (Slide merges its two shift convs); in place, returns self."""
        for module in self.modules():
            if isinstance(module, Block) and hasattr(module.attn, "deploy"):
                module.attn = module.attn.deploy()
        return self

    def attention_modules(self) -> list[nn.Module]:
        return [m.attn for m in self.modules() if isinstance(m, Block)]

    def linear_macs(self, H: int, W: int) -> int:
        """MACs of everything but the mechanisms' own work (``flops(H, W)["attention"]``), for the
        harness's cost model, where the two parts of a layer are ``linear_macs`` and the rest."""
        parts = self.flops(H, W)
        return parts["total"] - parts["attention"]

    def block_maps(self, H: int, W: int) -> list[tuple[Block, int, int]]:
        """Every block with the token map it runs on for an H x W image."""
        raise NotImplementedError  # pragma: no cover - both subclasses override

    def attention_memory_bytes(self, batch: int, H: int, W: int, element_size: int, train: bool,
                               device: str = "cpu") -> int:
        """Predicted activation bytes of one step beyond the first block's token activations, for the
        harness's memory predictor (``attnbench.cost``, which adds parameters and 12·B·N·C for the
        first stage's tokens, as for one attention layer).

        Conservative by design: a forward holds at most one block's intermediates at a time (the largest
        one: its attention's own extra, 12·B·N·C of token tensors and the MLP's 2·B·N·rC); a training
        step keeps every block's for backward, and their gradients (x2).
        """
        per_block = []
        for block, h, w in self.block_maps(H, W):
            attn = block.attn
            extra = attn.attention_memory_bytes(batch, h, w, element_size, train, device) if hasattr(
                attn, "attention_memory_bytes") else 0
            tokens = batch * h * w
            per_block.append(extra + (tokens * attn.dim * 12 + tokens * block.mlp.hidden * 2) * element_size)
        return int(sum(per_block) * 2) if train else int(max(per_block))


class HierarchicalBackbone(BackboneBase):
    """Four stages at strides 4, 8, 16, 32: stem -> [blocks, merge] x 3 -> blocks -> LN -> mean -> head.

    Input (B, 3, H, W) with H, W multiples of the patch size (4); output logits (B, num_classes), or with
    ``features_only`` the four stage maps (B, C_i, H_i, W_i), channels-first as detection necks take them.
    """

    def __init__(self, spec: ModelSpec, *, num_classes: int = 1000, features_only: bool = False, in_chans: int = 3) -> None:
        super().__init__()
        self.spec, self.in_chans, self.num_classes, self.features_only = spec, in_chans, num_classes, features_only
        dims, eps = spec.embed_dims, spec.norm_eps
        if spec.stem == "patch":
            self.stem: nn.Module = PatchStem(in_chans, dims[0], spec.patch_size, norm=True, eps=eps)
        else:
            self.stem = ConvStem(in_chans, dims[0], padding=spec.stem_padding, eps=eps)
        rates = iter(_drop_path_rates(spec.depths, spec.drop_path_rate))
        merge = PatchMerging if spec.merge == "patch-merging" else ConvMerging
        self.stages = nn.ModuleList()
        self.merges = nn.ModuleList()
        for s, (dim, depth, heads) in enumerate(zip(dims, spec.depths, spec.heads)):
            self.stages.append(nn.Sequential(*(
                Block(dim, build_attention(spec.attention[s], dim, heads, spec.attention_options[s], i),
                      mlp_ratio=spec.mlp_ratio, drop_path=next(rates), cpe=spec.cpe, eps=eps)
                for i in range(depth)
            )))
            if s + 1 < len(dims):
                self.merges.append(merge(dim, dims[s + 1], eps=eps))
        self.norm = nn.LayerNorm(dims[-1], eps=eps)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes else nn.Identity()
        self.apply(init_weights)

    def forward_features(self, x: Tensor) -> list[Tensor]:
        """The four stage outputs, channels-last (B, H_i, W_i, C_i), before any merging."""
        self.check_input(x)
        x = self.stem(x)
        maps = []
        for s, stage in enumerate(self.stages):
            if s:
                x = self.merges[s - 1](x)
            x = stage(x)
            maps.append(x)
        return maps

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        maps = self.forward_features(x)
        if self.features_only:
            return [m.permute(0, 3, 1, 2) for m in maps]
        return self.head(self.norm(maps[-1]).mean(dim=(1, 2)))

    def block_maps(self, H: int, W: int) -> list[tuple[Block, int, int]]:
        return [(block, *size) for stage, size in zip(self.stages, self.stage_sizes(H, W)) for block in stage]

    def stage_sizes(self, H: int, W: int) -> list[tuple[int, int]]:
        """The token map of each stage for an H x W input."""
        sizes = [self.stem.out_size(H, W)]
        for merge in self.merges:
            sizes.append(merge.out_size(*sizes[-1]))
        return sizes

    def flops(self, H: int, W: int) -> dict[str, int]:
        """Analytic MACs of one image at H x W, by part: the mechanisms' ``flops()`` summed over blocks
        (``attention_linear``: their qkv and output projections; ``attention``: the rest, their own convs
        included), MLPs, CPE, stem, merging and head. Norms, GELU, softmax and bias adds are not counted
        (the papers' convention)."""
        sizes = self.stage_sizes(H, W)
        parts = {"stem": self.stem.macs(H, W), "attention_linear": 0, "attention": 0, "mlp": 0, "merge": 0}
        for s, stage in enumerate(self.stages):
            if s:
                parts["merge"] += self.merges[s - 1].macs(*sizes[s - 1])
            for block in stage:
                for key, value in block.macs(*sizes[s]).items():
                    parts[key] = parts.get(key, 0) + value
        if not self.features_only and self.num_classes:
            parts["head"] = self.head.in_features * self.head.out_features
        parts["total"] = sum(parts.values())
        return parts


class VisionTransformer(BackboneBase):
    """DeiT/ViT: 16x16 patchify -> (+ class token) + position table -> blocks -> LN -> class token / mean -> head.

    The tokens go to the mechanism as a (B, 1, N+1, C) map when there is a class token (only a mechanism
    that ignores the layout, global attention, can take it), else as the (B, H/16, W/16, C) grid. With
    ``features_only`` the maps after blocks 3, 6, 9 and 12 (evenly spaced, stride 16, as ViT necks take
    them), channels-first, without the class token.
    """

    def __init__(self, spec: ModelSpec, *, num_classes: int = 1000, features_only: bool = False, in_chans: int = 3) -> None:
        super().__init__()
        self.spec, self.in_chans, self.num_classes, self.features_only = spec, in_chans, num_classes, features_only
        dim, depth, heads, p = spec.embed_dims[0], spec.depths[0], spec.heads[0], spec.patch_size
        if spec.class_token and spec.attention[0] != "global":
            raise ValueError(
                f"{spec.name}: a class token has no place on the token grid {spec.attention[0]!r} attends over; "
                "pass class_token=False (mean of the tokens) or attention='global'"
            )
        self.stem = PatchStem(in_chans, dim, p, norm=False, eps=spec.norm_eps)
        self.grid = (224 // p, 224 // p)  # the position table's grid (DeiT trains at 224²)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if spec.class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1] + int(spec.class_token), dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        rates = _drop_path_rates(spec.depths, spec.drop_path_rate)
        self.blocks = nn.Sequential(*(
            Block(dim, build_attention(spec.attention[0], dim, heads, spec.attention_options[0], i),
                  mlp_ratio=spec.mlp_ratio, drop_path=rates[i], cpe=spec.cpe, eps=spec.norm_eps)
            for i in range(depth)
        ))
        self.feature_blocks = tuple(-(-depth * (i + 1) // 4) - 1 for i in range(4))  # 2, 5, 8, 11 for depth 12
        self.norm = nn.LayerNorm(dim, eps=spec.norm_eps)
        self.head = nn.Linear(dim, num_classes) if num_classes else nn.Identity()
        self.apply(init_weights)

    def grid_pos_embed(self, Gh: int, Gw: int) -> Tensor:
        """(1, Gh, Gw, C) grid part of the position table, resized bicubically when the grid differs."""
        n_cls = int(self.cls_token is not None)
        table = self.pos_embed[:, n_cls:].reshape(1, *self.grid, -1)
        if (Gh, Gw) != self.grid:
            table = F.interpolate(table.permute(0, 3, 1, 2), size=(Gh, Gw), mode="bicubic", align_corners=False)
            table = table.permute(0, 2, 3, 1)
        return table

    def _tokens(self, x: Tensor) -> tuple[Tensor, int, int]:
        self.check_input(x)
        x = self.stem(x)  # B, Gh, Gw, C
        B, Gh, Gw, C = x.shape
        x = x + self.grid_pos_embed(Gh, Gw)
        if self.cls_token is not None:
            cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, 1, C)
            x = torch.cat([cls, x.reshape(B, Gh * Gw, C)], dim=1).unsqueeze(1)  # B, 1, N+1, C
        return x, Gh, Gw

    def _as_map(self, x: Tensor, Gh: int, Gw: int) -> Tensor:
        """Channels-first (B, C, Gh, Gw) grid of the tokens, class token dropped."""
        if self.cls_token is not None:
            x = x[:, 0, 1:].reshape(x.shape[0], Gh, Gw, -1)
        return x.permute(0, 3, 1, 2)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        x, Gh, Gw = self._tokens(x)
        maps: dict[int, Tensor] = {}
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.features_only and i in self.feature_blocks:
                maps[i] = self._as_map(x, Gh, Gw)
        if self.features_only:
            return [maps[i] for i in self.feature_blocks]
        x = self.norm(x)
        pooled = x[:, 0, 0] if self.cls_token is not None else x.mean(dim=(1, 2))
        return self.head(pooled)

    def block_maps(self, H: int, W: int) -> list[tuple[Block, int, int]]:
        return [(block, *self.token_map(H, W)) for block in self.blocks]

    def token_map(self, H: int, W: int) -> tuple[int, int]:
        """The (rows, cols) map the mechanism sees for an H x W input."""
        Gh, Gw = self.stem.out_size(H, W)
        return (1, Gh * Gw + 1) if self.cls_token is not None else (Gh, Gw)

    def flops(self, H: int, W: int) -> dict[str, int]:
        """Analytic MACs of one image at H x W: patchify, blocks (mechanism ``flops()`` + MLP), head."""
        Th, Tw = self.token_map(H, W)
        parts = {"stem": self.stem.macs(H, W), "attention_linear": 0, "attention": 0, "mlp": 0}
        blocks = self.blocks[: self.feature_blocks[-1] + 1] if self.features_only else self.blocks
        for block in blocks:
            for key, value in block.macs(Th, Tw).items():
                parts[key] = parts.get(key, 0) + value
        if not self.features_only and self.num_classes:
            parts["head"] = self.head.in_features * self.head.out_features
        parts["total"] = sum(parts.values())
        return parts


def count_params(model: nn.Module) -> int:
    """All parameters, frozen ones included (Slide's one-hot shift kernels), as the papers count."""
    return sum(p.numel() for p in model.parameters())


__all__ = ["BackboneBase", "HierarchicalBackbone", "VisionTransformer", "attention_heads", "build_attention", "count_params"]
