"""Params and MACs of whole backbones, analytic and counted, without running real arithmetic.

Why the meta device: FlopCounterMode only needs shapes, so a model built and run on ``meta`` is
counted in a fraction of a second with no memory; SDPA is forced to its math path so the counter sees
q·kᵀ and attn·v as matmuls (CPU's fused kernel is invisible to it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .models import BackboneBase, count_params


def counted_macs(model: BackboneBase, H: int, W: int, batch: int = 1) -> int:
    """MACs of one forward of ``model`` on (batch, 3, H, W) as torch's FlopCounterMode counts them.

    FlopCounterMode counts 2 flops per multiply-add; this returns multiply-adds. The input lives on the
    model's device (meta for a free count).
    """
    device = next(model.parameters()).device
    x = torch.empty(batch, model.in_chans, H, W, device=device)
    was_training = model.training
    model.eval()
    try:
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2


@dataclass(frozen=True)
class Count:
    """One model's cost at one resolution: params (all, frozen included) and MACs two ways."""

    name: str
    resolution: tuple[int, int]
    params: int
    macs_analytic: int
    macs_counted: int


def count(model: BackboneBase, H: int = 224, W: int = 224) -> Count:
    return Count(model.spec.name, (H, W), count_params(model), model.flops(H, W)["total"], counted_macs(model, H, W))


def meta_model(name: str, deploy: bool = False, **kwargs: Any) -> BackboneBase:
    """``build(name, **kwargs)`` on the meta device (optionally in its deploy form)."""
    from . import build

    with torch.device("meta"):
        model = build(name, **kwargs)
    return model.deploy() if deploy else model
