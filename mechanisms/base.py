"""Pieces every mechanism shares: the attention pattern, the qkv/proj module base, attend(), padding
and partition helpers.

Why one base: each mechanism differs only in *which keys a query may see* and in its positional term.
Keeping qkv/proj, head splitting, the dense `masked` backend and the float64 reference hooks here
means a mechanism file holds only what is particular to it, and the `masked` backend, the reference,
receptive-field maps and the dependency test all read the same single pattern rule.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .projection import Projection
from .reference import DenseForm

# Memory one block of the ``masked`` backend may hold (see ``AttentionBase._forward_masked``).
MASKED_BLOCK_BYTES = 1 << 30

# (head, q_row, q_col, k_row, k_col) -> bool; all arguments are broadcastable integer tensors.
MaskRule = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class AttentionPattern:
    """Per head, which keys each query may attend, on the real ``height x width`` grid.

    The rule is a small vectorised predicate in the style of attention-gym mask_mods, so one
    definition serves the dense mask, the reference, receptive-field analysis and the dependency test.
    Tokens are numbered row-major: token ``t`` is at ``(t // width, t % width)``.
    """

    height: int
    width: int
    num_heads: int
    rule: MaskRule
    name: str

    @property
    def tokens(self) -> int:
        return self.height * self.width

    def coords(self, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """Row and column of every token, each of shape (N,)."""
        idx = torch.arange(self.tokens, device=device)
        return idx // self.width, idx % self.width

    def dense(self, device: torch.device | str | None = None, rows: slice | None = None) -> Tensor:
        """Boolean mask of shape (heads, N, N): ``[h, q, k]`` is True when query q may attend key k.

        ``rows`` (a slice of image rows) keeps only the queries in those rows: (heads, rows·width, N),
        so a caller can walk a map whose full mask would not fit in memory.
        """
        row, col = self.coords(device)
        if rows is not None:
            start, stop, _ = rows.indices(self.height)
            q_row, q_col = row[start * self.width: stop * self.width], col[start * self.width: stop * self.width]
        else:
            q_row, q_col = row, col
        head = torch.arange(self.num_heads, device=device)[:, None, None]
        allowed = self.rule(head, q_row[None, :, None], q_col[None, :, None], row[None, None, :], col[None, None, :])
        return allowed.expand(self.num_heads, q_row.numel(), self.tokens).contiguous()

    def keys_per_query(self) -> Tensor:
        """Number of keys each query sees, shape (heads, N)."""
        return self.dense().sum(-1)


def is_int(value: object) -> bool:
    """A real int option (``True`` is an int to Python, never a size to us)."""
    return isinstance(value, int) and not isinstance(value, bool)


def positive_int(value: object, option: str, example: int = 7) -> int:
    """Validate a size option, raising a ValueError that names the option and a valid example."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{option} must be an int >= 1, got {value!r}; e.g. {option.split(': ')[-1]}={example}")
    return value


def to_2tuple(value: int | tuple[int, int] | list[int], option: str) -> tuple[int, int]:
    """Normalise an int-or-pair option (``pale_size=7`` or ``(7, 5)``), rejecting bad values clearly."""
    if isinstance(value, bool):
        raise ValueError(f"{option} must be a positive int or a pair of them, got {value!r}")
    if isinstance(value, int):
        pair = (value, value)
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{option} must be a positive int or a pair of them, got {value!r}")
    if min(pair) < 1:
        raise ValueError(f"{option} must be >= 1, got {value!r}; use a positive size such as 7")
    return pair


def pad_to_multiple(x: Tensor, multiple_h: int, multiple_w: int) -> tuple[Tensor, int, int]:
    """Zero-pad (B, H, W, C) at the bottom/right so H, W become multiples; returns (x, pad_h, pad_w)."""
    H, W = x.shape[1], x.shape[2]
    pad_h = (-H) % multiple_h
    pad_w = (-W) % multiple_w
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return x, pad_h, pad_w


def valid_token_map(H: int, W: int, Hp: int, Wp: int, device: torch.device | str | None = None) -> Tensor:
    """Bool (Hp, Wp) map, True on real tokens and False on the bottom/right padding."""
    rows = torch.arange(Hp, device=device)[:, None] < H
    cols = torch.arange(Wp, device=device)[None, :] < W
    return rows & cols


def split_branches(x: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """The two halves of ``x`` along ``dim`` (the heads of a two-branch mechanism), as views.

    Why not two slices: a slice's backward allocates a zero tensor of the whole input and copies the
    gradient into its half, so two slices cost two full-size fills, two copies and a sum in training;
    ``unbind``'s backward stacks both halves' gradients into one tensor.
    """
    size = x.shape[dim]
    if size % 2:
        raise ValueError(f"split_branches: size {size} along dim {dim} is odd")
    dim = dim % x.dim()
    first, second = x.view(*x.shape[:dim], 2, size // 2, *x.shape[dim + 1:]).unbind(dim)
    return first, second


def window_partition(x: Tensor, wh: int, ww: int) -> Tensor:
    """(B, H, W, C) -> (B * H/wh * W/ww, wh * ww, C); windows row-major, tokens row-major inside."""
    B, H, W, C = x.shape
    x = x.view(B, H // wh, wh, W // ww, ww, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, wh * ww, C)


def window_reverse(windows: Tensor, wh: int, ww: int, H: int, W: int) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nW, wh * ww, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    B = windows.shape[0] // ((H // wh) * (W // ww))
    x = windows.view(B, H // wh, W // ww, wh, ww, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)


def attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    scale: float,
    backend: str = "native",
    dropout_p: float = 0.0,
) -> Tensor:
    """softmax(q kᵀ · scale + mask) v over the last two dims.

    ``mask`` is a bool (True = may attend) or an additive float tensor broadcastable to the logits.
    ``native`` uses SDPA (fused kernels where the device has them); ``math`` spells the maths out, so
    FLOP counters see every matmul and a reader can check it by eye.
    """
    if backend == "math":
        logits = (q * scale) @ k.transpose(-2, -1)
        if mask is not None:
            if mask.dtype == torch.bool:
                logits = logits.masked_fill(~mask, float("-inf"))
            else:
                logits = logits + mask
        attn = logits.softmax(dim=-1)
        if dropout_p:
            attn = F.dropout(attn, p=dropout_p)
        return attn @ v
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)


class AttentionBase(nn.Module):
    """Base of every mechanism: ``qkv = Linear(C, 3C)`` split as (3, heads, d), ``proj = Linear(C, C)``.

    Subclasses implement ``pattern``, ``flops`` and ``_forward_native`` (plus any extra backends as
    ``_forward_<backend>``), and override the positional hooks ``logit_bias`` / ``output_term`` /
    ``token_qkv`` when they have a positional term or non-linear projections. The generic
    ``masked`` backend and the float64 reference are built from those hooks. For the dependency test
    (input gradient of one output token), set ``dependency_radius`` when spatial convs feed q/k/v
    (Pale), or override ``dependency_mask`` when the pattern alone does not say which inputs reach an
    output (no built-in mechanism needs to).

    Args:
        backend: implementation to run; see the class attribute ``backends`` for the choices.
        qkv_bias: whether the qkv projection has a bias.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection (training only).
    """

    backends: ClassVar[tuple[str, ...]] = ("native", "masked", "flex")
    # Backends that compile on first call (their first-call time is reported as ``compile_s``).
    compiled_backends: ClassVar[tuple[str, ...]] = ("flex",)
    two_branch: ClassVar[bool] = False
    mechanism_name: ClassVar[str] = ""
    # Chebyshev radius of the spatial convs that feed q/k/v from the input map (Pale's depthwise 3x3
    # projections: 1). Convs that act inside the pattern (CSWin's stripe-local LePE) need none.
    dependency_radius: ClassVar[int] = 0

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        backend: str = "native",
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        name = self.mechanism_name or type(self).__name__
        for label, value in (("dim", dim), ("num_heads", num_heads)):
            if not is_int(value) or value < 1:
                raise ValueError(f"{name}: {label} must be a positive int, got {value!r}")
        if dim % num_heads:
            raise ValueError(
                f"{name}: dim={dim} is not divisible by num_heads={num_heads}; pick num_heads dividing dim "
                f"(e.g. {[h for h in range(1, min(dim, 16) + 1) if dim % h == 0]})"
            )
        if self.two_branch and num_heads % 2:
            raise ValueError(
                f"{name}: num_heads={num_heads} is odd, but {name} splits heads into two branches; use an even num_heads"
            )
        if backend not in self.backends:
            raise ValueError(f"{name}: unknown backend {backend!r}; choose one of {list(self.backends)}")
        for label, p in (("attn_drop", attn_drop), ("proj_drop", proj_drop)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name}: {label} must be in [0, 1), got {p!r}")
        dd = {"device": device, "dtype": dtype}
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.backend = backend
        self.attn_drop = attn_drop
        self.qkv = Projection(dim, 3 * dim, bias=qkv_bias, **dd)  # nn.Linear; oneDNN at inference on CPU
        self.proj = Projection(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    # ----------------------------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[-1] != self.dim:
            raise ValueError(
                f"{self.mechanism_name}: expected input (B, H, W, C={self.dim}) channels-last, got {tuple(x.shape)}"
            )
        if x.shape[0] < 1 or x.shape[1] < 1 or x.shape[2] < 1:
            raise ValueError(f"{self.mechanism_name}: input (B, H, W, C) needs B, H and W >= 1, got {tuple(x.shape)}")
        weight = self.qkv.weight
        if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(f"{self.mechanism_name}: input dtype {x.dtype} does not match the module's {weight.dtype}; "
                             f"convert one of them, e.g. x.to({weight.dtype}) or module.to({x.dtype})")
        out = getattr(self, f"_forward_{self.backend}")(x)
        return self.proj_drop(self.proj(out))

    def _forward_native(self, x: Tensor) -> Tensor:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def _forward_masked(self, x: Tensor) -> Tensor:
        """The naive baseline: global SDPA over all N tokens with the pattern as a dense mask.

        Queries go in blocks of whole image rows when the block's mask, bias and logits would pass
        ``MASKED_BLOCK_BYTES`` (``masked_block_rows``). Each block is the unblocked computation for its
        queries (every key, the same mask and bias), so the baseline does all O(N²) work the naive
        call does, but a 224² map needs about a GiB per block instead of the ~100 GiB of one (heads,
        N, N) mask, bias and logits: without blocks the comparison flex is for could not be made.
        """
        B, H, W, C = x.shape
        q, k, v = self.token_qkv(x)  # (B, heads, N, d) each
        pattern = self.pattern(H, W)
        step = self.masked_block_rows(B, H, W, q.element_size())
        outs = []
        for start in range(0, H, step):
            rows = slice(start, min(H, start + step))
            mask = pattern.dense(x.device, rows=rows)  # heads, rows·W, N
            bias = self._logit_bias_rows(H, W, rows)
            if bias is not None:
                mask = bias.masked_fill(~mask, float("-inf"))  # one pass over (heads, rows·W, N)
            queries = q[:, :, rows.start * W: rows.stop * W]
            outs.append(attend(queries, k, v, mask, scale=self.scale, dropout_p=self._dropout_p()))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
        extra = self.flex_output_term(q, k, v, H, W)
        if extra is not None:
            out = out + extra
        return self.merge_heads(out, H, W)

    def _forward_flex(self, x: Tensor) -> Tensor:
        """Compiled FlexAttention generated from the pattern rule (mechanisms/flex.py), block-sparse."""
        from .flex import flex_attend

        B, H, W, C = x.shape
        q, k, v = self.token_qkv(x)  # B, heads, N, d
        out = flex_attend(self, q, k, v, H, W)
        extra = self.output_term(q, k, v, H, W)
        if extra is not None:
            out = out + extra
        return self.merge_heads(out, H, W)

    # ----------------------------------------------------------------- hooks for the flex backend
    def flex_spec(self, H: int, W: int) -> "FlexSpec":
        """How tokens group for flex (mechanisms/flex.py ``FlexSpec``). Default: one group, row-major,
        blocks classified by evaluating the rule on every pair (correct for any rule; O(N²) setup)."""
        from .flex import FlexSpec

        return FlexSpec(groups=torch.zeros(1, H, W, dtype=torch.long), exact=False)

    def flex_output_term(self, q: Tensor, k: Tensor, v: Tensor, H: int, W: int) -> Tensor | None:
        """The non-logit output term for flex (default: ``output_term``, the reference's form). Override
        when the fast path computes it much faster than the dense hook (CSWin's LePE on stripes)."""
        return self.output_term(q, k, v, H, W)

    def flex_logit_term(self) -> Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor] | None:
        """Positional logit term as a vectorised fn(head, q_row, q_col, k_row, k_col) for score_mod, or None."""
        return None

    def flex_offset_bias(self) -> tuple[Tensor, Tensor] | None:
        """Per-offset (key bias, value bias), each (heads, d, k²), of a neighbourhood mechanism, or None."""
        return None

    def configured_unavailable_reason(self) -> str | None:
        """Why this *configured* module's backend cannot run, when that depends on its options (Slide's
        learnable branch has no exact flex form), or None. The class-level ``unavailable_reason`` covers
        device, dtype and mode; the harness asks this on a meta-device build before running a case."""
        return None

    # ----------------------------------------------------------------------- shared operations
    def _dropout_p(self) -> float:
        return self.attn_drop if self.training else 0.0

    def split_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., T, C) -> q, k, v of shape (..., heads, T, d), from the (3, heads, d) channel layout."""
        *lead, T, _ = x.shape
        qkv = self.qkv(x).reshape(*lead, T, 3, self.num_heads, self.head_dim)
        qkv = qkv.movedim(-3, 0).transpose(-3, -2)  # 3, ..., heads, T, d
        return qkv.unbind(0)

    def merge_heads(self, out: Tensor, H: int, W: int) -> Tensor:
        """(B, heads, N, d) -> (B, H, W, C) (before ``proj``)."""
        B = out.shape[0]
        return out.transpose(1, 2).reshape(B, H, W, self.dim)

    # ---------------------------------------------------- hooks for `masked` and the reference
    def token_qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-token q, k, v of shape (B, heads, N, d). Override for non-linear projections (Pale)."""
        B, H, W, C = x.shape
        return self.split_qkv(x.reshape(B, H * W, C))

    def logit_bias(self, H: int, W: int, rows: slice | None = None) -> Tensor | None:
        """Additive (heads, N, N) term on the scaled logits (Swin's relative bias), or None.

        With ``rows`` (a slice of image rows), only those rows' queries: (heads, rows·W, N). The
        blocked ``masked`` backend asks for that; an override without ``rows`` still works (its full
        bias is sliced), at the full bias's memory.
        """
        return None

    def _logit_bias_rows(self, H: int, W: int, rows: slice) -> Tensor | None:
        if "rows" in inspect.signature(self.logit_bias).parameters:
            return self.logit_bias(H, W, rows=rows)
        bias = self.logit_bias(H, W)
        return None if bias is None else bias[:, rows.start * W: rows.stop * W]

    def masked_block_rows(self, batch: int, H: int, W: int, element_size: int) -> int:
        """Image rows of queries per block of the ``masked`` backend (``H``: one block, no blocking).

        A query row of W tokens over N keys holds: forward logits and probabilities (batch·heads
        each), the rule's int64 coordinate broadcasts (~3 a pair), the boolean mask (heads) and, with a
        positional bias, its float copy and the masked copy.
        """
        return max(1, min(H, MASKED_BLOCK_BYTES // max(1, W * self._masked_bytes_per_query(batch, H * W, element_size))))

    def _masked_bytes_per_query(self, batch: int, N: int, element_size: int) -> int:
        h = self.num_heads
        per_key = batch * h * element_size * 2 + 3 * 8 + h
        if type(self).logit_bias is not AttentionBase.logit_bias:
            per_key += h * element_size * 2
        return N * per_key

    def output_term(self, q: Tensor, k: Tensor, v: Tensor, H: int, W: int) -> Tensor | None:
        """Additive (B, heads, N, d) term on the attention output before ``proj`` (CSWin's LePE), or None."""
        return None

    # ------------------------------------------------------------------------ what subclasses say
    def pattern(self, H: int, W: int) -> AttentionPattern:  # pragma: no cover - abstract
        raise NotImplementedError

    def flops(self, H: int, W: int) -> dict[str, int]:  # pragma: no cover - abstract
        """Analytic MACs of one forward at batch 1, by part, with the sum under ``"total"``."""
        raise NotImplementedError

    # ------------------------------------------------ the contract the harness relies on (no names)
    @classmethod
    def unavailable_reason(cls, backend: str, device: str, dtype: torch.dtype, mode: str = "forward") -> str | None:
        """Why ``backend`` cannot run on ``device`` in ``dtype`` and ``mode``, or None when it can.

        Why on the class: the harness asks before building anything, and a row that cannot run must
        say why in the mechanism's words (xformers on a CPU, flex training on CPU). Subclasses that
        add a device-bound backend extend this (call ``super()`` first).
        """
        if backend not in cls.backends:
            name = cls.mechanism_name or cls.__name__
            return f"{name} has no backend {backend!r}; choose one of {list(cls.backends)}"
        if backend == "flex":
            from .flex import flex_unavailable_reason

            return flex_unavailable_reason(device, dtype, mode)
        return None

    def deploy(self) -> nn.Module:
        """The module as it is served for inference. Identity unless a mechanism has a training-only
        structure that merges away (Slide's two shift convs); ``mode: forward`` measures this form."""
        return self

    @classmethod
    def layer_options(cls, options: dict[str, Any], index: int) -> dict[str, Any]:
        """Options of block ``index`` (0-based) of a backbone built from one configuration.

        Why here: alternation is part of a mechanism's design (Swin shifts every other block), so a
        backbone asks the mechanism instead of knowing its option names. Default: every block alike.
        """
        return dict(options)

    def dense_form(self, x: Tensor) -> DenseForm:
        """Everything the float64 reference needs as dense tensors, from the positional hooks.

        Override when attention is not over plain tokens (Slide: keys are per-offset conv outputs).
        """
        B, H, W, _ = x.shape
        q, k, v = self.token_qkv(x)
        return DenseForm(q=q, k=k, v=v, allowed=self.pattern(H, W).dense(x.device),
                         logit_bias=self.logit_bias(H, W), output_add=self.output_term(q, k, v, H, W))

    def attention_memory_bytes(self, batch: int, H: int, W: int, element_size: int, train: bool,
                               device: str = "cpu") -> int:
        """Bytes the attention of the selected backend holds beyond the token activations.

        The memory predictor adds this to parameters and activations to skip cases that cannot fit,
        so each backend states its own footprint here: ``masked`` builds, per block of query rows,
        dense (B, h, rows·W, N) logits and probabilities, the boolean mask from int64 coordinate
        broadcasts (~3·8 bytes a pair) and, with a positional bias, a float copy of it; training
        keeps every block's logits and probabilities for backward.
        ``native`` runs fused SDPA on CPU and CUDA (O(N·d): nothing extra); on MPS, whose SDPA
        materialises the logits, it costs B·h·N·K with K the keys per query from the attention MACs.
        """
        N, h = H * W, self.num_heads
        keep = 4 if train else 2
        if self.backend == "masked":  # one block of query rows (``masked_block_rows``) at a time ...
            block = self.masked_block_rows(batch, H, W, element_size) * W
            extra = block * self._masked_bytes_per_query(batch, N, element_size)
            if train:  # ... but training keeps every block's logits and probabilities for backward
                extra += batch * h * N * N * element_size * 2
            return extra
        if device == "mps":
            parts = self.flops(H, W)
            keys_per_query = parts.get("attention", 0) / max(2 * N * self.dim, 1)
            return int(batch * h * N * keys_per_query * element_size * keep)
        return 0

    def dependency_mask(self, H: int, W: int, token: int) -> Tensor:
        """Bool (H, W): the input tokens the output at ``token`` (row-major index) depends on.

        The dependency test backpropagates from one output token and requires the input gradient to be
        non-zero exactly here, which checks the fast path against the pattern. Default: the query itself
        plus the keys any head may attend, dilated by ``dependency_radius`` (zero padding: the dilation
        stops at the map border). Override when inputs reach the output otherwise. Slide does not need
        to: its conv-shifted keys come exactly from its k x k window clipped to the map, which is its
        pattern.
        """
        seen = self.pattern(H, W).dense()[:, token, :].any(0)
        seen[token] = True
        seen = seen.view(1, 1, H, W)
        r = self.dependency_radius
        if r:
            seen = F.max_pool2d(seen.float(), 2 * r + 1, stride=1, padding=r) > 0
        return seen.view(H, W)

    def linear_macs(self, H: int, W: int) -> int:
        """MACs of qkv + proj: 4 N C² (biases are not counted, as in the papers and fvcore)."""
        return 4 * H * W * self.dim * self.dim

    def check_size(self, H: int, W: int) -> None:
        if H < 1 or W < 1:
            raise ValueError(f"{self.mechanism_name}: map size must be >= 1x1, got {H}x{W}")

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, backend={self.backend!r}"


def total(parts: dict[str, int]) -> dict[str, int]:
    """Add the ``total`` key to a flops-by-part dict."""
    parts = {k: int(v) for k, v in parts.items() if k != "total"}
    parts["total"] = sum(parts.values())
    return parts


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def trunc_normal_(t: Tensor, std: float = 0.02) -> Tensor:
    """In-place truncated normal at +-2 std (the Swin/timm initialisation of bias tables)."""
    return nn.init.trunc_normal_(t, std=std, a=-2 * std, b=2 * std)


__all__ = [
    "AttentionBase",
    "AttentionPattern",
    "MaskRule",
    "attend",
    "ceil_div",
    "pad_to_multiple",
    "to_2tuple",
    "total",
    "trunc_normal_",
    "valid_token_map",
    "window_partition",
    "window_reverse",
]
