"""Global multi-head self-attention (ViT/DeiT): every query attends to all N tokens."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .base import AttentionBase, AttentionPattern, attend, total
from .flex import FlexSpec
from .registry import register


def _all_pairs(head: Tensor, qr: Tensor, qc: Tensor, kr: Tensor, kc: Tensor) -> Tensor:
    """Note: every (query, key) pair is allowed."""
    return torch.ones((), dtype=torch.bool, device=qr.device).expand(
        torch.broadcast_shapes(head.shape, qr.shape, kr.shape)
    )


def _xformers_unavailable_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why xformers cannot run here, or None when it can (CUDA, fp16/bf16/fp32, importable)."""
    if device.type != "cuda":
        return f"xformers has no {device.type} kernels (CUDA only); use backend='native' or 'math'"
    if dtype == torch.float64:
        return "xformers has no float64 kernels; use backend='native' or 'math' for float64"
    try:
        import xformers.ops  # noqa: F401
    except Exception as exc:  # ImportError, or a broken binary build
        return f"xformers is not importable ({type(exc).__name__}: {exc}); pip install xformers or use backend='native'"
    return None


@register("global")
class GlobalAttention(AttentionBase):
    """Global attention: each query attends to every token of the map (ViT/DeiT). Ω = 4NC² + 2N²C.

    Args:
        backend: 'native' (SDPA), 'math' (explicit matmul/softmax), 'xformers' (memory_efficient_attention, CUDA only) or 'masked'.
    """

    backends = ("native", "math", "xformers", "masked", "flex")

    def flex_spec(self, H: int, W: int) -> FlexSpec:
        """One group holding every token: exact (all pairs allowed), so no rule evaluation."""
        return FlexSpec(groups=torch.zeros(1, H, W, dtype=torch.long), exact=True)

    def __init__(self, dim: int, num_heads: int, *, backend: str = "native", **common: Any) -> None:
        super().__init__(dim, num_heads, backend=backend, **common)

    @classmethod
    def unavailable_reason(cls, backend: str, device: str, dtype: torch.dtype, mode: str = "forward") -> str | None:
        reason = super().unavailable_reason(backend, device, dtype, mode)
        if reason is None and backend == "xformers":
            reason = _xformers_unavailable_reason(torch.device(device), dtype)
        return reason

    def attention_memory_bytes(self, batch: int, H: int, W: int, element_size: int, train: bool,
                               device: str = "cpu") -> int:
        """``math`` materialises (B, h, N, N) logits and probabilities; xformers is O(N·d) like SDPA."""
        if self.backend == "math":
            return batch * self.num_heads * (H * W) ** 2 * element_size * (4 if train else 2)
        return super().attention_memory_bytes(batch, H, W, element_size, train, device)

    def _forward_native(self, x: Tensor) -> Tensor:
        B, H, W, _ = x.shape
        q, k, v = self.token_qkv(x)
        out = attend(q, k, v, scale=self.scale, dropout_p=self._dropout_p())
        return self.merge_heads(out, H, W)

    def _forward_math(self, x: Tensor) -> Tensor:
        B, H, W, _ = x.shape
        q, k, v = self.token_qkv(x)
        out = attend(q, k, v, scale=self.scale, backend="math", dropout_p=self._dropout_p())
        return self.merge_heads(out, H, W)

    def _forward_xformers(self, x: Tensor) -> Tensor:
        reason = _xformers_unavailable_reason(x.device, x.dtype)
        if reason is not None:
            raise RuntimeError(reason)
        import xformers.ops as xops

        B, H, W, _ = x.shape
        q, k, v = self.token_qkv(x)
        # xformers wants (B, N, heads, d).
        out = xops.memory_efficient_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), p=self._dropout_p(), scale=self.scale
        )
        return out.reshape(B, H, W, self.dim)

    def pattern(self, H: int, W: int) -> AttentionPattern:
        self.check_size(H, W)
        return AttentionPattern(H, W, self.num_heads, _all_pairs, "global")

    def flops(self, H: int, W: int) -> dict[str, int]:
        self.check_size(H, W)
        N, C = H * W, self.dim
        return total({"linear": self.linear_macs(H, W), "attention": 2 * N * N * C})
