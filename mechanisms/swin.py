"""Swin window attention (W-MSA) and shifted-window attention (SW-MSA), with the relative position bias.

Any H, W: q/k/v are zero-padded bottom/right to multiples of M *after* the qkv projection (cheaper
than padding the input, and the padding never matters: padded keys are masked, padded queries are
cropped). With a shift the padded map is rolled, so padding can land inside the wrapped-around strip;
the region mask is therefore built on the padded grid and combined with the key mask, which makes
the fast path equal the pattern below, defined on the real grid.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from .base import (
    is_int,
    positive_int,
    AttentionBase,
    AttentionPattern,
    MaskRule,
    attend,
    ceil_div,
    pad_to_multiple,
    total,
    trunc_normal_,
    valid_token_map,
    window_partition,
    window_reverse,
)
from .registry import register


def _group(index: Tensor, window_size: int, shift: int) -> Tensor:
    """Shifted-window group of a row (or column) index: floor((i - shift) / M)."""
    return torch.div(index - shift, window_size, rounding_mode="floor")


def swin_rule(window_size: int, shift: int) -> MaskRule:
    """The Swin pattern for window M and shift s (0 <= s < M) as a vectorised predicate."""

    def rule(head: Tensor, q_row: Tensor, q_col: Tensor, k_row: Tensor, k_col: Tensor) -> Tensor:
        """Note: query (r, c) may attend key (r', c') iff floor((r-s)/M) == floor((r'-s)/M) and
        floor((c-s)/M) == floor((c'-s)/M); the same for every head. With s = 0 these are the M x M
        windows; with s > 0 the windows move by s and the strip of rows (columns) < s that the roll
        wraps to the far side is its own group, which is what the official roll + region mask does.
        """
        same_row = _group(q_row, window_size, shift) == _group(k_row, window_size, shift)
        same_col = _group(q_col, window_size, shift) == _group(k_col, window_size, shift)
        return same_row & same_col

    rule.__name__ = f"swin_w{window_size}_s{shift}"
    return rule


def relative_position_index(window_size: int, device: Any = None) -> Tensor:
    """(M², M²) long: for query i and key j of an M x M window (row-major), the bias-table row
    (yi - yj + M - 1) * (2M - 1) + (xi - xj + M - 1)."""
    M = window_size
    r = torch.arange(M, device=device)
    coords = torch.stack(torch.meshgrid(r, r, indexing="ij")).flatten(1)  # 2, M²
    rel = coords[:, :, None] - coords[:, None, :] + (M - 1)  # 2, M², M²
    return rel[0] * (2 * M - 1) + rel[1]


@register("swin")
class SwinAttention(AttentionBase):
    """Swin window attention: M x M windows with a learned relative position bias; optionally shifted.

    Ω (native) = 4NC² + 2M²·Hp·Wp·C, with Hp, Wp = H, W rounded up to multiples of M: the padded windows are
    computed (and counted) in full; on sizes M divides this is the paper's 4NC² + 2M²NC.
    When the map fits in one window (H <= M and W <= M) the shift is disabled, as in the official code
    (which also shrinks M to min(H, W) when only one side fits; here M stays, the spec's rule).

    Args:
        window_size: window side M in tokens.
        shift: 0 = W-MSA; s in [1, M) = SW-MSA shifted by s; None = M // 2, the shift of Swin's odd blocks.
        backend: 'native' (windows + SDPA) or 'masked' (global SDPA with the pattern as a dense mask).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        window_size: int = 7,
        shift: int | None = 0,
        backend: str = "native",
        device: Any = None,
        dtype: Any = None,
        **common: Any,
    ) -> None:
        super().__init__(dim, num_heads, backend=backend, device=device, dtype=dtype, **common)
        positive_int(window_size, "swin: window_size")
        if shift is None:
            shift = window_size // 2
        if not is_int(shift) or not 0 <= shift < window_size:
            raise ValueError(
                f"swin: shift must be an int in [0, window_size={window_size}) or None (= window_size // 2), "
                f"got {shift!r}"
            )
        self.window_size = window_size
        self.shift = shift
        table = torch.empty((2 * window_size - 1) ** 2, num_heads, device=device, dtype=dtype)
        self.relative_position_bias_table = nn.Parameter(trunc_normal_(table, std=0.02))
        self.register_buffer("relative_position_index", relative_position_index(window_size, device), persistent=False)

    @classmethod
    def layer_options(cls, options: dict[str, Any], index: int) -> dict[str, Any]:
        """Swin's alternation: a shifted configuration runs plain windows (W-MSA) in even blocks and
        the shifted ones (SW-MSA) in odd blocks; an unshifted one is the same in every block."""
        opts = dict(options)
        if opts.get("shift", 0) != 0 and index % 2 == 0:
            opts["shift"] = 0
        return opts

    def effective_shift(self, H: int, W: int) -> int:
        """The shift used at H x W: none when the whole map fits in one window."""
        return 0 if H <= self.window_size and W <= self.window_size else self.shift

    def window_bias(self) -> Tensor:
        """(heads, M², M²) relative position bias of one window."""
        M2 = self.window_size**2
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(M2, M2, self.num_heads).permute(2, 0, 1)

    def window_mask(self, H: int, W: int, shift: int, device: Any = None) -> Tensor:
        """Bool (nW, M², M²) over the padded, rolled windows: same shifted group, and a real key
        (a padded query, cropped later, may see anything in its group so no row is fully masked)."""
        M = self.window_size
        Hp, Wp = ceil_div(H, M) * M, ceil_div(W, M) * M
        rows, cols = torch.arange(Hp, device=device), torch.arange(Wp, device=device)
        group = (_group(rows, M, shift)[:, None] + 1) * (Wp // M + 1) + _group(cols, M, shift)[None, :] + 1
        tiles = torch.stack([group, valid_token_map(H, W, Hp, Wp, device).long()], -1)  # Hp, Wp, 2
        if shift:
            tiles = torch.roll(tiles, shifts=(-shift, -shift), dims=(0, 1))
        tiles = window_partition(tiles[None], M, M)  # nW, M², 2
        g, real = tiles[..., 0], tiles[..., 1].bool()
        return (g[:, :, None] == g[:, None, :]) & (real[:, None, :] | ~real[:, :, None])

    def _forward_native(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        M, s, heads, d = self.window_size, self.effective_shift(H, W), self.num_heads, self.head_dim
        qkv, pad_h, pad_w = pad_to_multiple(self.qkv(x), M, M)  # B, Hp, Wp, 3C (zeros on the padding)
        Hp, Wp = H + pad_h, W + pad_w
        nW = (Hp // M) * (Wp // M)
        if s:
            qkv = torch.roll(qkv, shifts=(-s, -s), dims=(1, 2))  # content moves up/left by s
        win = window_partition(qkv, M, M)  # B*nW, M², 3C
        # Windows go next to heads so one (nW*heads, M², M²) mask broadcasts over the batch.
        q, k, v = win.view(B, nW, M * M, 3, heads, d).permute(3, 0, 1, 4, 2, 5).reshape(3, B, nW * heads, M * M, d)
        mask = self.window_bias().expand(nW, heads, M * M, M * M)
        if s or pad_h or pad_w:
            allowed = self.window_mask(H, W, s, x.device)  # nW, M², M²
            mask = mask.masked_fill(~allowed[:, None], float("-inf"))
        mask = mask.reshape(nW * heads, M * M, M * M)
        out = attend(q, k, v, mask, scale=self.scale, dropout_p=self._dropout_p())  # B, nW*heads, M², d
        out = out.view(B * nW, heads, M * M, d).transpose(1, 2).reshape(B * nW, M * M, C)
        out = window_reverse(out, M, M, Hp, Wp)  # B, Hp, Wp, C
        if s:
            out = torch.roll(out, shifts=(s, s), dims=(1, 2))
        return out[:, :H, :W]

    def logit_bias(self, H: int, W: int) -> Tensor:
        """(heads, N, N) relative bias from real-grid offsets (clamped where the pattern forbids the pair).

        The table is read as (heads, 2M-1, 2M-1) and indexed by row offset, then by column offset with
        one gather written straight in (q_row, q_col, k_row, k_col) order: a single pass over N².
        """
        M, heads, D = self.window_size, self.num_heads, 2 * self.window_size - 1
        table = self.relative_position_bias_table.t().reshape(heads, D, D)
        rows = torch.arange(H, device=table.device)
        cols = torch.arange(W, device=table.device)
        dr = (rows[:, None] - rows[None, :]).clamp(1 - M, M - 1) + M - 1  # H(q), H(k)
        dc = (cols[:, None] - cols[None, :]).clamp(1 - M, M - 1) + M - 1  # W(q), W(k)
        by_row = table.index_select(1, dr.flatten()).view(heads, H, 1, H, D).expand(heads, H, W, H, D)
        bias = torch.gather(by_row, 4, dc.view(1, 1, W, 1, W).expand(heads, H, W, H, W))
        return bias.reshape(heads, H * W, H * W)

    def pattern(self, H: int, W: int) -> AttentionPattern:
        self.check_size(H, W)
        rule = swin_rule(self.window_size, self.effective_shift(H, W))
        return AttentionPattern(H, W, self.num_heads, rule, rule.__name__)

    def flops(self, H: int, W: int) -> dict[str, int]:
        """MACs of what the selected backend computes: ``native`` its padded windows in full,
        ``masked`` 2N²C for attention (the bias and masks are additions, not counted)."""
        self.check_size(H, W)
        M, C = self.window_size, self.dim
        if self.backend == "masked":
            attention = 2 * (H * W) ** 2 * C
        else:
            attention = 2 * M * M * ceil_div(H, M) * M * ceil_div(W, M) * M * C
        return total({"linear": self.linear_macs(H, W), "attention": attention})

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, window_size={self.window_size}, shift={self.shift}"
