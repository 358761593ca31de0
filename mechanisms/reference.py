"""Dense float64 reference: attention computed token by token from a mechanism's pattern.

Why it exists: every fast path (windows, stripes, interlaced groups, conv shifts) is checked against
one implementation that knows nothing about partitions. It builds the full (N, N) logits, keeps only
the pairs the pattern allows, normalises with an explicit exp/sum in float64 and adds the
mechanism's positional terms through the same hooks the `masked` backend uses. What it attends comes
from the mechanism's ``dense_form()`` (part of the contract in ``base.AttentionBase``): the default
reads the positional hooks, and a mechanism whose attention is not over plain tokens (Slide: keys
are per-offset conv outputs) overrides it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor
import torch.nn as nn


@dataclass
class DenseForm:
    """Everything the reference needs, as dense tensors.

    q: (B, heads, N, d); k, v: (B, heads, M, d) with M >= N (real tokens first, then any virtual keys
    such as Slide's zero-padded border offsets); allowed: (heads, N, M) bool; logit_bias: additive
    term broadcastable to (B, heads, N, M), applied after scaling; output_add: (B, heads, N, d) or None.
    """

    q: Tensor
    k: Tensor
    v: Tensor
    allowed: Tensor
    logit_bias: Tensor | None = None
    output_add: Tensor | None = None


def dense_attention(form: DenseForm, scale: float) -> Tensor:
    """Masked softmax attention spelled out: (B, heads, N, d)."""
    logits = torch.einsum("bhnd,bhmd->bhnm", form.q, form.k) * scale
    if form.logit_bias is not None:
        logits = logits + form.logit_bias
    allowed = form.allowed.expand_as(logits)
    logits = torch.where(allowed, logits, torch.full_like(logits, -torch.inf))
    top = logits.amax(dim=-1, keepdim=True)
    weights = torch.where(allowed, torch.exp(logits - top), torch.zeros_like(logits))
    weights = weights / weights.sum(dim=-1, keepdim=True)
    out = torch.einsum("bhnm,bhmd->bhnd", weights, form.v)
    if form.output_add is not None:
        out = out + form.output_add
    return out


def reference_forward(module: nn.Module, x: Tensor, dtype: torch.dtype | None = torch.float64) -> Tensor:
    """The mechanism's output computed densely; by default in float64 on a float64 copy of the module.

    With ``dtype=None`` the module and input are used as they are (so gradients reach the caller's
    parameters, which the gradient tests need).
    """
    if dtype is not None:
        module = copy.deepcopy(module).to(dtype)
        x = x.to(dtype)
    B, H, W, _ = x.shape
    out = dense_attention(module.dense_form(x), module.scale)
    return module.proj(module.merge_heads(out, H, W))
