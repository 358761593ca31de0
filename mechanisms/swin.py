"""Swin window attention (W-MSA) and shifted-window attention (SW-MSA), with the relative position bias.

Any H, W: q/k/v are zero-padded bottom/right to multiples of M *after* the qkv projection (cheaper
than padding the input, and the padding never matters: padded keys are masked, padded queries are
cropped). With a shift the padded map is rolled, so padding can land inside the wrapped-around strip;
the region mask is therefore built on the padded grid and combined with the key mask, which makes
the fast path equal the pattern below, defined on the real grid.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
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
from .flex import FlexSpec
from .registry import register

# The attention path per (device type, dtype): True = explicit q·kᵀ + bias + mask, softmax, ·v (the
# released code's form); False = SDPA with the bias and mask as one additive float mask. Measured with
# benchmarks/swin_paths.py (table: results/kernels/swin_paths.md): on CPU, 1 thread, explicit takes
# 0.71-1.00x SDPA's time in float32 and 0.40-0.83x in bfloat16 (medians over the configurations
# and 112², forward and train, plain and shifted). float64 is the tests' dtype and takes the CPU path.
# Not measured here (no GPU in that session): CUDA and MPS keep SDPA, whose fused kernels take a mask.
EXPLICIT: dict[tuple[str, torch.dtype], bool] = {
    ("cpu", torch.float32): True,
    ("cpu", torch.bfloat16): True,
    ("cpu", torch.float64): True,
}
EXPLICIT_DEFAULT = False


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


class _PermuteTokens(torch.autograd.Function):
    """x[:, order] whose backward gathers with the inverse permutation.

    Why: ``index_select``'s backward scatters with ``index_add_``, which on CPUs is slower than a
    gather, although a permutation's gradient is simply the inverse permutation of the gradient.
    """

    @staticmethod
    def forward(ctx, x: Tensor, order: Tensor, inverse: Tensor) -> Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(1, order)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(1, inverse), None, None


def permute_tokens(x: Tensor, order: Tensor, inverse: Tensor) -> Tensor:
    """(B, N, C) tokens in ``order`` (``inverse`` is its inverse permutation)."""
    if torch.is_grad_enabled() and x.requires_grad and not torch.compiler.is_compiling():
        return _PermuteTokens.apply(x, order, inverse)
    return x.index_select(1, order)


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
        self._mask_cache: dict[tuple, Any] = {}
        self.served = False  # True on the copy ``deploy()`` returns

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
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]  # a gather: gradients reach the table
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

    def additive_mask(self, H: int, W: int, shift: int, device: Any, dtype: torch.dtype) -> Tensor | None:
        """(nW, 1, M², M²) additive mask (0 or -inf) for the padded, rolled windows, or None when every
        pair in every window is allowed. Cached per (H, W, shift, device, dtype): it depends on nothing
        else, and rebuilding it every call cost swin-shifted 1.7x swin's latency (issue 11). The cache
        is a plain dict, not a buffer: never saved, and keyed by size so no mask outlives its (H, W)."""
        M = self.window_size
        if not (shift or H % M or W % M):
            return None
        key = (H, W, shift, torch.device(device) if device is not None else None, dtype)
        mask = self._mask_cache.get(key)
        if mask is None:
            allowed = self.window_mask(H, W, shift, device)
            mask = torch.zeros(allowed.shape, device=device, dtype=dtype).masked_fill_(~allowed, float("-inf"))[:, None]
            self._cache(key, mask)
        return mask

    def _forward_native(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        M, s, heads, d = self.window_size, self.effective_shift(H, W), self.num_heads, self.head_dim
        if H % M or W % M:
            qkv, pad_h, pad_w = pad_to_multiple(self.qkv(x), M, M)  # B, Hp, Wp, 3C (zeros on the padding)
            if s:
                qkv = torch.roll(qkv, shifts=(-s, -s), dims=(1, 2))  # content moves up/left by s
            win = window_partition(qkv, M, M)  # B*nW, M², 3C
        elif s:  # no padding: roll and cut the C-channel input, not the 3C-channel projection (a third
            pad_h = pad_w = 0  # of the copy), in one gather: see ``window_order``
            win = self.qkv(permute_tokens(x.reshape(B, H * W, C), *self.window_order(H, W, s, x.device)))
        else:
            pad_h = pad_w = 0
            win = self.qkv(window_partition(x, M, M))
        Hp, Wp = H + pad_h, W + pad_w
        nW = (Hp // M) * (Wp // M)
        mask = self.additive_mask(H, W, s, x.device, x.dtype)  # nW, 1, M², M² or None
        if self._explicit(x):
            out = self._attend_explicit(win, mask, B, (Hp // M, Wp // M))  # B*nW, M², C
        else:
            q, k, v = win.view(B, nW, M * M, 3, heads, d).permute(3, 0, 1, 4, 2, 5).unbind(0)  # B, nW, heads, M², d
            if mask is not None and self.served and not torch.is_grad_enabled():
                bias = self._bias_and_mask(mask)
            else:
                bias = self.window_bias()  # heads, M², M²
                bias = bias if mask is None else bias + mask  # nW, heads, M², M²: broadcast over the batch
            out = attend(q, k, v, bias, scale=self.scale, dropout_p=self._dropout_p())
            out = out.transpose(2, 3).reshape(B * nW, M * M, C)
        if s and not (pad_h or pad_w):  # window order back to the map, the reverse roll included
            out = permute_tokens(out.reshape(B, H * W, C), *self.window_order(H, W, s, x.device)[::-1])
            return out.view(B, H, W, C)
        out = window_reverse(out, M, M, Hp, Wp)  # B, Hp, Wp, C
        if s:
            out = torch.roll(out, shifts=(s, s), dims=(1, 2))
        return out[:, :H, :W]

    def window_order(self, H: int, W: int, shift: int, device: Any) -> tuple[Tensor, Tensor]:
        """(order, inverse): the map's tokens (row-major) in the order of the rolled map's windows, and
        the permutation back. Cached per (H, W, shift, device).

        Why: the released code rolls the map, cuts it into windows and, after attention, pastes and
        rolls back: four copies of the activations where W-MSA makes two. One ``index_select`` each way
        does roll and cut together, so SW-MSA moves the activations as often as W-MSA (issue 11: it
        took 1.14-1.22x W-MSA's time at 56² and 224²).
        """
        key = ("order", H, W, shift, torch.device(device) if device is not None else None)
        found = self._mask_cache.get(key)
        if found is None:
            tokens = torch.arange(H * W, device=device).view(1, H, W, 1)
            order = window_partition(torch.roll(tokens, shifts=(-shift, -shift), dims=(1, 2)), self.window_size,
                                     self.window_size).reshape(-1)
            found = (order, torch.argsort(order))
            self._cache(key, found)
        return found

    def _cache(self, key: tuple, value: Any) -> None:
        if len(self._mask_cache) >= 16:  # a few sizes at a time (train + eval, shifted or not)
            self._mask_cache.pop(next(iter(self._mask_cache)))
        self._mask_cache[key] = value

    def _attend_explicit(self, win: Tensor, mask: Tensor | None, batch: int, grid: tuple[int, int]) -> Tensor:
        """softmax(q·kᵀ·scale + bias + mask)·v per window and head, from the (B·nW, M², 3C) projection of
        the windows: (B·nW, M², C), heads side by side.

        Why per head, on views: one head's q, k and v are (B·nW, M², d) matrices with row stride 3C inside
        the projection, which batched GEMM reads in place. The released form permutes them to (B, nW,
        heads, M², d) first, and matmul then copies q, k, v and the output again: at 112² those copies
        were 30 % of W-MSA's time (profiled: nine per call). ``baddbmm`` also folds the scale and the
        bias into the GEMM. Bias and mask are broadcast, never expanded over the batch, as in the
        released code. The shifted-window mask is added only where it is not zero (``_mask_edges``).
        """
        M2, heads = self.window_size**2, self.num_heads
        qs, ks, vs = (t.unbind(2) for t in win.view(-1, M2, 3, heads, self.head_dim).unbind(2))
        grad = torch.is_grad_enabled()
        bias = self.window_bias()  # heads, M², M²
        edges = self._mask_edges(mask, grid) if mask is not None else None
        folded = (self._bias_and_mask(mask) if mask is not None and edges is None and self.served and not grad
                  and batch == 1 else None)
        outs = []
        for h in range(heads):
            add = bias[h] if folded is None else folded[:, h]  # (M², M²) or (nW, M², M²) = the batch
            logits = torch.baddbmm(add, qs[h], ks[h].transpose(1, 2), alpha=self.scale)  # B·nW, M², M²
            if edges is not None:  # in place on two slices: autograd needs baddbmm's inputs, not its output
                by_window = logits.view(batch, grid[0], grid[1], M2, M2)
                by_window[:, :, -1].add_(edges[0])
                by_window[:, -1, :-1].add_(edges[1])
            elif mask is not None and folded is None:
                per_image = logits.view(batch, -1, M2, M2)
                logits = (per_image + mask[:, 0] if grad else per_image.add_(mask[:, 0])).view_as(logits)
            attn = logits.softmax(dim=-1)
            if self._dropout_p():
                attn = F.dropout(attn, p=self._dropout_p())
            outs.append(torch.bmm(attn, vs[h]))
        return torch.cat(outs, dim=-1)

    def _mask_edges(self, mask: Tensor, grid: tuple[int, int]) -> tuple[Tensor, Tensor] | None:
        """The mask of the last column of windows (nWy, M², M²) and of the rest of the last row (nWx-1,
        M², M²), when every other window's mask is zero; else None (padding moved by the shift).

        Why: in shifted windows without padding only the windows that wrap around the map's
        bottom or right edge mix regions, 2·16-1 of 256 at 112². Adding the full (nW, M², M²) mask was a
        pass over every head's logits, the main part of swin-shifted's extra time over swin (1.13x at
        112² and 224² forward); the two slices are an eighth of it there. Cached with the mask.
        """
        if torch.compiler.is_compiling():  # the test below is data-dependent; the compiler fuses the add anyway
            return None

        def edges() -> tuple[Tensor, Tensor] | None:
            M2 = self.window_size**2
            by_window = mask[:, 0].reshape(grid[0], grid[1], M2, M2)
            used = by_window.ne(0).flatten(2).any(-1)  # nWy, nWx
            return None if used[:-1, :-1].any() else (by_window[:, -1].contiguous(), by_window[-1, :-1].contiguous())

        return self._derived(("edges", grid), mask, edges)

    def _derived(self, tag: tuple, mask: Tensor, build: Any) -> Any:
        """``build()``, cached for as long as ``mask`` (itself cached per size) is the same tensor."""
        key = (*tag, id(mask))
        found = self._mask_cache.get(key)
        if found is None or found[0] is not mask:
            found = (mask, build())
            self._cache(key, found)
        return found[1]

    def deploy(self) -> "SwinAttention":
        """The served form: a copy whose relative bias and shifted-window mask are folded into one
        constant per map size, built on first use (this module is unchanged).

        Why only here: the fold is a function of the weights, so it is valid while they do not change,
        which is what serving means (as Slide's merged conv). Training keeps the differentiable gather
        and adds bias and mask separately. Change the weights of a served copy and deploy again.
        """
        if self.served:
            return self
        served = copy.deepcopy(self)
        served.served = True
        served._mask_cache = {}
        return served

    def _bias_and_mask(self, mask: Tensor) -> Tensor:
        """bias + mask, (nW, heads, M², M²), for the served form: one pass over the logits, not two."""
        return self._derived(("bias+mask",), mask, lambda: self.window_bias() + mask)

    def _explicit(self, x: Tensor) -> bool:
        """Which attention path runs on this device and dtype, chosen by measurement (``EXPLICIT``)."""
        return EXPLICIT.get((x.device.type, x.dtype), EXPLICIT_DEFAULT)

    def logit_bias(self, H: int, W: int, rows: slice | None = None) -> Tensor:
        """(heads, N, N) relative bias from real-grid offsets (clamped where the pattern forbids the pair);
        with ``rows``, only the queries of those image rows: (heads, rows·W, N).

        The table is read as (heads, 2M-1, 2M-1) and indexed by row offset, then by column offset with
        one gather written straight in (q_row, q_col, k_row, k_col) order: a single pass over N².
        """
        M, heads, D = self.window_size, self.num_heads, 2 * self.window_size - 1
        table = self.relative_position_bias_table.t().reshape(heads, D, D)
        start, stop, _ = (rows or slice(0, H)).indices(H)
        Hq = stop - start
        q_rows = torch.arange(start, stop, device=table.device)
        rows_k = torch.arange(H, device=table.device)
        cols = torch.arange(W, device=table.device)
        dr = (q_rows[:, None] - rows_k[None, :]).clamp(1 - M, M - 1) + M - 1  # H(q), H(k)
        dc = (cols[:, None] - cols[None, :]).clamp(1 - M, M - 1) + M - 1  # W(q), W(k)
        by_row = table.index_select(1, dr.flatten()).view(heads, Hq, 1, H, D).expand(heads, Hq, W, H, D)
        bias = torch.gather(by_row, 4, dc.view(1, 1, W, 1, W).expand(heads, Hq, W, H, W))
        return bias.reshape(heads, Hq * W, H * W)

    def flex_spec(self, H: int, W: int) -> FlexSpec:
        """Windows of the rolled, padded map (what the native path attends in): one block each; the
        rule separates the regions a shifted window mixes, so fullness is evaluated, not assumed."""
        M, s = self.window_size, self.effective_shift(H, W)
        Hp, Wp = ceil_div(H, M) * M, ceil_div(W, M) * M
        rows, cols = torch.arange(H)[:, None], torch.arange(W)[None, :]
        window = torch.div((rows - s) % Hp, M, rounding_mode="floor") * (Wp // M) + torch.div((cols - s) % Wp, M, rounding_mode="floor")
        return FlexSpec(groups=window[None], exact=s == 0)

    def flex_logit_term(self):
        """The relative position bias as a function of (head, q_row, q_col, k_row, k_col), for score_mod."""
        M = self.window_size
        table = self.relative_position_bias_table.t().reshape(self.num_heads, 2 * M - 1, 2 * M - 1)

        def bias(head: Tensor, q_row: Tensor, q_col: Tensor, k_row: Tensor, k_col: Tensor) -> Tensor:
            return table[head, (q_row - k_row).clamp(1 - M, M - 1) + M - 1, (q_col - k_col).clamp(1 - M, M - 1) + M - 1]

        return bias

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
