"""The counters see attention: closed-form MACs of a tiny attention block, fused and explicit."""
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnbench.metrics.flop_counting import attention_macs, flop_counter_macs, fvcore_macs


class TinyAttention(nn.Module):
    """qkv Linear -> attention (SDPA or explicit, optional mask) -> proj Linear, on (B, N, C)."""

    def __init__(self, dim: int, heads: int, fused: bool, mask: str | None) -> None:
        super().__init__()
        self.heads, self.fused, self.mask = heads, fused, mask
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        mask = None
        if self.mask == "bool":
            mask = torch.ones(N, N, dtype=torch.bool).tril()
        elif self.mask == "float":
            mask = torch.zeros(N, N).masked_fill(torch.ones(N, N, dtype=torch.bool).triu(1), float("-inf"))
        if self.fused:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            logits = q @ k.transpose(-2, -1)
            if mask is not None:
                logits = logits.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else logits + mask
            out = logits.softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


def closed_form(B: int, N: int, C: int) -> tuple[int, int]:
    """(linear MACs, attention MACs): 4·B·N·C² for qkv + proj, 2·B·N²·C for QKᵀ and AV."""
    return 4 * B * N * C * C, 2 * B * N * N * C


@pytest.mark.parametrize("fused", [True, False], ids=["sdpa", "explicit"])
@pytest.mark.parametrize("mask", [None, "bool", "float"])
def test_both_counters_match_closed_form(fused, mask):
    B, N, C, heads = 2, 37, 24, 3
    module = TinyAttention(C, heads, fused, mask)
    x = torch.randn(B, N, C)
    linear, attention = closed_form(B, N, C)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # fvcore's import warning must be filtered
        total, by_op, unsupported = fvcore_macs(module, x)
    assert total == linear + attention
    assert by_op["linear"] == linear
    assert (by_op.get("scaled_dot_product_attention") if fused else by_op.get("matmul")) == attention
    if fused:
        assert "aten::scaled_dot_product_attention" not in unsupported
    else:
        assert unsupported.get("aten::softmax") == 1
    fcm_total, fcm_by_op = flop_counter_macs(module, x)
    assert fcm_total == linear + attention
    assert sum(fcm_by_op.values()) == fcm_total


def test_flop_counter_backward_counts_attention_gradients():
    """Backward of SDPA on CPU: 5 matmuls (torch's rule for its flash kernels), 2.5x the forward."""
    B, N, C, heads = 1, 20, 16, 2
    module = TinyAttention(C, heads, fused=True, mask=None)
    x = torch.randn(B, N, C)
    linear, attention = closed_form(B, N, C)
    total, by_op = flop_counter_macs(module, x, backward=True)
    # Linear backward: grad wrt input and weight, 2x forward; the input gradient of qkv is needed too.
    assert by_op["aten._scaled_dot_product_flash_attention_for_cpu_backward"] == attention * 5 // 2
    assert total == linear * 3 + attention + attention * 5 // 2


def test_attention_macs_any_leading_dims():
    assert attention_macs((2, 5, 3, 7, 4), (2, 5, 3, 9, 4), (2, 5, 3, 9, 6)) == 2 * 5 * 3 * 7 * 9 * (4 + 6)
