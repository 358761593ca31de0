"""Counted MACs of a module, by two independent tools, both taught to see SDPA.

Why: the analytic formula of each mechanism is the truth, and counters are its cross-check. Out of
the box both counters are blind to attention: fvcore lists ``aten::scaled_dot_product_attention`` as
unsupported, and ``FlopCounterMode`` on CPU silently skips ``_scaled_dot_product_flash_attention_for_cpu``
(it only knows the CUDA kernels). Here both get a handle that counts the two matmuls of attention
(QKᵀ and AV), so a mechanism's counted MACs can be compared with its ``flops()``.

Convention: one multiply-add = one MAC (fvcore's and the papers'); ``FlopCounterMode`` counts 2 per MAC,
so its figures are halved. A mask (bool or additive float) does not change the count: dense kernels
compute every logit and then discard the masked ones.
"""
from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn as nn

__all__ = ["attention_macs", "baddbmm_jit_handle", "flop_counter_macs", "fvcore_macs", "sdpa_jit_handle"]


def attention_macs(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int]) -> int:
    """MACs of softmax(q kᵀ) v for shapes (..., Nq, d), (..., Nk, d), (..., Nk, dv): lead·Nq·Nk·(d + dv).

    Leading dims may be any number (SDPA accepts (B, ..., N, d)); key/value heads broadcast (GQA) to
    the query's, so the query's leading dims decide the count.
    """
    *lead, n_q, d = (int(s) for s in q_shape)
    n_k = int(k_shape[-2])
    d_v = int(v_shape[-1])
    return math.prod(lead) * n_q * n_k * (d + d_v)


# ------------------------------------------------------------------------------------------- fvcore
def sdpa_jit_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::scaled_dot_product_attention``: MACs of QKᵀ plus AV.

    fvcore traces with ``torch.jit.trace``, whose graph keeps the composite SDPA op (a handle on the
    CPU flash kernel would never fire). Inputs are (query, key, value, attn_mask, dropout_p, ...).
    """
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(t) for t in inputs[:3])
    return attention_macs(q, k, v)


def baddbmm_jit_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for ``aten::baddbmm`` (beta·input + alpha·b1 @ b2): the b·n·m·p MACs of the product.

    fvcore has handles for ``bmm`` and ``addmm`` but not ``baddbmm``, which Swin's CPU path uses to fold
    the scale and the bias into its per-head GEMMs; unhandled, its q·kᵀ would count as zero.
    """
    from fvcore.nn.jit_handles import get_shape

    b, n, m = get_shape(inputs[1])
    p = get_shape(inputs[2])[-1]
    return b * n * m * p


@contextmanager
def _quiet_fvcore() -> Iterator[None]:
    """Filter fvcore's import-time DeprecationWarning and its per-op logging (we return the counts)."""
    loggers = [logging.getLogger(n) for n in ("fvcore", "fvcore.nn.jit_analysis")]
    old = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            yield
    finally:
        for lg, level in zip(loggers, old):
            lg.setLevel(level)


def fvcore_macs(module: nn.Module, inputs: Any) -> tuple[int, dict[str, int], dict[str, int]]:
    """MACs of one forward as fvcore counts them, with the SDPA handle registered.

    Returns ``(total, by_op, unsupported)``: ``by_op`` maps fvcore's op names (``linear``, ``matmul``,
    ``scaled_dot_product_attention``, ``conv``, …) to MACs; ``unsupported`` maps the ops fvcore skipped
    (elementwise ops, softmax, …) to how often they occurred, so a caller can show what was not counted.
    ``inputs`` is one tensor or a tuple of positional inputs. Counts are made integral (fvcore's einsum
    handle returns floats).
    """
    with _quiet_fvcore():
        from fvcore.nn import FlopCountAnalysis

        if isinstance(inputs, torch.Tensor):
            inputs = (inputs,)
        analysis = FlopCountAnalysis(module, tuple(inputs))
        analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_jit_handle)
        analysis.set_op_handle("aten::baddbmm", baddbmm_jit_handle)
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        with torch.no_grad():
            total = int(round(analysis.total()))
            by_op = {op: int(round(n)) for op, n in analysis.by_operator().items() if n}
            unsupported = {op: int(n) for op, n in analysis.unsupported_ops().items()}
    return total, by_op, unsupported


# ---------------------------------------------------------------------------------- FlopCounterMode
def _cpu_flash_forward_flops(q_shape, k_shape, v_shape, *args: Any, **kwargs: Any) -> int:
    # FlopCounterMode convention: 2 flops per MAC.
    return 2 * attention_macs(q_shape, k_shape, v_shape)


def _cpu_flash_backward_flops(grad_out_shape, q_shape, k_shape, v_shape, *args: Any, **kwargs: Any) -> int:
    # dV = Pᵀ dO, dP = dO Vᵀ, dQ = dS K, dK = dSᵀ Q, plus the recomputed S = Q Kᵀ: 5 matmuls, i.e.
    # 2.5× the forward's two, which is torch's own rule for its CUDA flash kernels.
    n_q, d = int(q_shape[-2]), int(q_shape[-1])
    n_k, d_v = int(k_shape[-2]), int(v_shape[-1])
    lead = math.prod(int(s) for s in q_shape[:-2])
    macs = lead * n_q * n_k * (3 * d + 2 * d_v)
    return 2 * macs


def _onednn_linear_flops(x_shape, w_shape, *args: Any, **kwargs: Any) -> int:
    # oneDNN's linear (mechanisms.projection at inference on CPU): x (..., K) @ wᵀ (K, N); the bias is
    # not counted, as for addmm.
    return 2 * math.prod(int(s) for s in x_shape[:-1]) * int(w_shape[0]) * int(w_shape[1])


def _custom_mapping() -> dict[Any, Any]:
    aten = torch.ops.aten
    mapping = {
        aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_forward_flops,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_flash_backward_flops,
    }
    from mechanisms.projection import onednn_linear_available

    if onednn_linear_available():
        mapping[torch.ops.mkldnn._linear_pointwise] = _onednn_linear_flops
    return mapping


def flop_counter_macs(module: nn.Module, inputs: Any, backward: bool = False) -> tuple[int, dict[str, int]]:
    """MACs of one forward (or forward + backward) as ``torch.utils.flop_counter`` counts them.

    The CPU flash-attention kernels SDPA dispatches to on CPU are added through ``custom_mapping``;
    on CUDA torch already knows its kernels. Returns ``(total_macs, by_op)`` with op names such as
    ``aten.addmm`` and MACs = counted flops / 2.
    """
    from torch.utils.flop_counter import FlopCounterMode

    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    counter = FlopCounterMode(display=False, custom_mapping=_custom_mapping())
    with counter:
        if backward:
            inputs = tuple(t.detach().requires_grad_(True) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in inputs)
            out = module(*inputs)
            out.float().sum().backward()
        else:
            with torch.no_grad():
                module(*inputs)
    by_op: dict[str, int] = {}
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        name = str(op).removesuffix(".default")
        by_op[name] = by_op.get(name, 0) + int(flops) // 2
    return int(counter.get_total_flops()) // 2, by_op
