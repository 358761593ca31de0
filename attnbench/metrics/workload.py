"""The one thing memory and timing measure: a forward (``mode=forward``) or a training step.

Why shared: memory and latency must describe the same work, or their ratio (and every report that
puts them side by side) is meaningless. ``forward`` is inference (``eval()`` + ``no_grad``);
``train`` is forward + backward with gradients to the input and every parameter, as inside a
network being trained; gradients are dropped after each step (``set_to_none``) so steps don't
accumulate into ``.grad`` and each step allocates what a real training step allocates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..devices import sync_fn
from . import MetricContext


@dataclass
class Workload:
    """A ready-to-call step plus what it holds (for memory baselines)."""

    step: Callable[[], None]
    sync: Callable[[], None]
    module: torch.nn.Module
    tensors: tuple[torch.Tensor, ...]  # inputs (and the upstream gradient in train mode)


def make_workload(ctx: MetricContext) -> Workload:
    """Build the module and inputs once, outside the step, so the step is pure computation."""
    module = ctx.build_module()
    sync = sync_fn(ctx.device)
    if ctx.case.mode == "forward":
        module.eval()
        x = ctx.make_input()

        def step() -> None:
            with torch.no_grad():
                module(x)

        return Workload(step, sync, module, (x,))

    module.train()
    x = ctx.make_input(requires_grad=True)
    with torch.no_grad():
        grad_out = torch.randn_like(module(x))

    def train_step() -> None:
        x.grad = None
        module.zero_grad(set_to_none=True)
        module(x).backward(grad_out)

    return Workload(train_step, sync, module, (x, grad_out))


def step_macs_factor(mode: str) -> int:
    """Work of one step in forward-MACs: a backward costs about twice a forward (dX and dW)."""
    return 3 if mode == "train" else 1
