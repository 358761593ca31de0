"""Cost predictions from shapes alone: skip what cannot fit before spending time on it.

Why: on a 24 GiB laptop a 224² ``masked`` attention wants ~100 GB and a 224² global attention step
on one CPU core takes minutes. Running them only to watch them die costs the sweep its time budget,
so the runner skips cases whose predicted memory exceeds ``limits.max_memory_gb`` (status ``oom``) or
whose *lower bound* on time exceeds ``limits.timeout_s`` (status ``timeout``), saying why in the row.

Memory model (bytes; conservative, documented here so a row's reason can be checked by hand):
  elt = bytes per element, B batch, N = H·W tokens, C channels, h heads, d = C/h.
  * parameters: P·elt (forward); P·elt·3 in train (weights, grads, slack for the optimizer-less step).
  * token activations: B·N·C·elt·12 in forward (input, qkv = 3C, q/k/v views made contiguous,
    attention output, projection), ×2 in train (kept for backward plus their gradients).
  * attention logits: dense backends (``masked``, ``math``) build B·h·N² logits and probabilities
    (×2; ×4 in train: kept for backward plus gradients); ``masked`` also builds the (h, N, N) boolean
    mask from int64 coordinate broadcasts (~3·8 bytes per pair) and, with a positional bias, a float
    copy (h·N²·elt·2). ``native`` backends run fused SDPA on CPU and CUDA (flash/memory-efficient
    kernels, O(N·d) memory: nothing extra); on MPS, whose SDPA materialises the logits, they cost
    B·h·N·K·elt·(2 | 4) with K the keys per query, recovered from the analytic attention MACs
    (= 2·N·K·C per image).
Time bound: one step costs at least 2·MACs·(3 if train) / matmul_peak; a case runs about
``steps_needed`` steps (memory warm-up + measured, timing warm-up + block estimate + one block).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .case import Case

GIB = 2**30
DENSE_BACKENDS = ("masked", "math")


@dataclass(frozen=True)
class Prediction:
    macs: int  # analytic forward MACs for the case's batch
    memory_bytes: int
    step_seconds_min: float | None  # lower bound of one step (None without a matmul peak)


def _elt(case: Case) -> int:
    return torch.empty((), dtype=case.torch_dtype).element_size()


def predict(case: Case, matmul_peak_gflops: float | None = None) -> Prediction:
    module = case.build_module(device="meta")
    parts = module.flops(case.height, case.width)
    macs = int(parts["total"])
    linear = int(module.linear_macs(case.height, case.width)) if hasattr(module, "linear_macs") else 0
    attention_macs = int(parts.get("attention", macs - linear))
    train = case.mode == "train"
    elt = _elt(case)
    B, N, C, h = case.batch_size, case.tokens, case.dim, case.num_heads
    params = sum(p.numel() for p in module.parameters())

    mem = params * elt * (3 if train else 1)
    mem += B * N * C * elt * 12 * (2 if train else 1)
    if case.backend in DENSE_BACKENDS:
        mem += B * h * N * N * elt * (4 if train else 2)
        if case.backend == "masked":
            mem += N * N * (3 * 8 + h) + h * N * N * elt * 2
    elif case.device == "mps":
        keys_per_query = attention_macs / max(2 * N * C, 1)
        mem += int(B * h * N * keys_per_query * elt * (4 if train else 2))

    step = None
    if matmul_peak_gflops:
        step = 2 * macs * case.batch_size * (3 if train else 1) / (matmul_peak_gflops * 1e9)
    return Prediction(macs=macs * case.batch_size, memory_bytes=int(mem), step_seconds_min=step)


def steps_needed(metrics: list[str], memory_warmup: int = 1, timing_warmup: int = 1) -> int:
    """Steps a case runs at least: memory (warm-up + 1), timing (warm-up + estimate + 1 block)."""
    n = 0
    if "memory" in metrics:
        n += memory_warmup + 1
    if "time" in metrics:
        n += timing_warmup + 2
    return n


def skip_reason(case: Case, pred: Prediction, metrics: list[str], max_memory_gb: float, timeout_s: float,
                memory_warmup: int = 1, timing_warmup: int = 1) -> tuple[str, str] | None:
    """(status, one-line reason) when the case should not run, else None."""
    if {"memory", "time", "fidelity", "receptive_field", "accuracy"} & set(metrics):
        if pred.memory_bytes > max_memory_gb * GIB:
            return "oom", (f"predicted {pred.memory_bytes / GIB:.1f} GiB > limits.max_memory_gb={max_memory_gb:g} "
                           f"(shape model in attnbench/predict.py); not run")
    steps = steps_needed(metrics, memory_warmup, timing_warmup)
    if pred.step_seconds_min is not None and steps:
        bound = steps * pred.step_seconds_min
        if bound > timeout_s:
            return "timeout", (f"needs >= {bound:.0f} s ({steps} steps x {pred.step_seconds_min:.1f} s at the "
                               f"measured matmul peak) > limits.timeout_s={timeout_s:g}; not run")
    return None
