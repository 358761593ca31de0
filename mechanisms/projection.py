"""The qkv and output projections: ``nn.Linear``, whose inference on CPU runs oneDNN's linear where that
was measured faster.

Why: ``F.linear`` on CPU is ``addmm``, which first copies the bias into every output row and then runs
the GEMM on top of it: one extra pass over an N x 3C output. At the widths of the highres suite (C = 64)
that pass is a fifth of the qkv projection's time, and every mechanism pays it twice a call. oneDNN's
linear (``torch.ops.mkldnn._linear_pointwise``, the op Inductor's CPU backend emits for ``nn.Linear``)
adds the bias in the GEMM's epilogue: the same MACs, and the same result bit for bit on the shapes
measured (``benchmarks/linear_paths.py``, table in ``results/kernels/linear_paths.md``).

It has no autograd formula, so it only runs where no gradient is wanted (inference: ``no_grad`` or
``inference_mode``), and never under a tracer or the compiler (fvcore's ``jit.trace`` and Inductor see
``aten::linear`` as before; ``FlopCounterMode`` is taught the op in ``attnbench.metrics.flop_counting``).
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

# (device type, dtype) -> the largest in_features for which oneDNN's linear runs at inference. Measured
# with benchmarks/linear_paths.py on the 2-core development Xeon (1 thread; results/kernels/linear_paths.md):
# float32 oneDNN / addmm took 0.79-0.99x the time at in_features 64-256 and 1.01-1.04x at 384-768 (the
# bias pass is one row of writes per K MACs, so it matters less as K grows); bfloat16 0.63-0.95x at
# every width measured. Other devices and float64 (which oneDNN does not take) keep F.linear.
ONEDNN_MAX_IN_FEATURES: dict[tuple[str, torch.dtype], int] = {
    ("cpu", torch.float32): 256,
    ("cpu", torch.bfloat16): 1 << 30,
}


@functools.cache
def onednn_linear_available() -> bool:
    """Whether this torch build has oneDNN and its linear op (every x86 and aarch64 CPU wheel does)."""
    try:
        return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


def uses_onednn(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> bool:
    """True when ``linear(x, weight, bias)`` takes oneDNN's path (see the module docstring)."""
    limit = ONEDNN_MAX_IN_FEATURES.get((x.device.type, x.dtype))  # first: meta has no autocast state
    if limit is None or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    if torch.is_autocast_enabled(x.device.type) or weight.shape[-1] > limit or weight.dtype != x.dtype:
        return False
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)):
        return False
    return onednn_linear_available()


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``F.linear(x, weight, bias)``, by oneDNN when ``uses_onednn`` says so."""
    if uses_onednn(x, weight, bias):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


class Projection(nn.Linear):
    """``nn.Linear`` (same parameters, same state dict) whose forward is ``linear`` above."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
