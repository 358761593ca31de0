"""What a case costs, known from shapes alone: analytic MACs, parameters and predicted memory.

Why one function: the runner's skip rows, the flops and params metrics, the predictor and the
report all need the same numbers, and each used to rebuild the module and re-derive them. The
module is built once on the ``meta`` device (shapes only: no memory, no compute), and everything
comes from the mechanism contract (``flops``, ``linear_macs``, ``attention_memory_bytes``), so a
new mechanism or backend is costed without any edit here.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from .case import Case


@dataclass(frozen=True)
class CaseCost:
    """Costs of one case at its batch size (MACs of one forward, like the papers)."""

    macs: int
    macs_attention: int  # the non-linear part: what differs between mechanisms
    params: int
    params_trainable: int
    memory_bytes: int  # predicted peak of one step (forward, or forward + backward in train)


def _element_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


@lru_cache(maxsize=4096)
def case_cost(case: Case) -> CaseCost:
    """Costs of ``case`` from the mechanism's contract; cached, since a case is immutable.

    Memory model (bytes; conservative, so a row's reason can be checked by hand), with elt the
    bytes per element, B batch, N = H·W tokens, C channels:
      * parameters: P·elt (forward); P·elt·3 in train (weights, grads, slack);
      * token activations: B·N·C·elt·12 in forward (input, qkv = 3C, q/k/v made contiguous,
        attention output, projection), x2 in train (kept for backward plus their gradients);
      * attention: the mechanism's ``attention_memory_bytes`` for the selected backend and device.
    """
    module = case.build_module(device="meta")
    H, W, B = case.height, case.width, case.batch_size
    parts = module.flops(H, W)
    total = int(parts["total"])
    attention = int(parts.get("attention", total - int(module.linear_macs(H, W))))
    params = list(module.parameters())
    n_params = sum(p.numel() for p in params)
    train = case.mode == "train"
    elt = _element_size(case.torch_dtype)
    memory = n_params * elt * (3 if train else 1)
    memory += B * case.tokens * case.dim * elt * 12 * (2 if train else 1)
    memory += int(module.attention_memory_bytes(B, H, W, elt, train, case.device))
    return CaseCost(
        macs=total * B,
        macs_attention=attention * B,
        params=n_params,
        params_trainable=sum(p.numel() for p in params if p.requires_grad),
        memory_bytes=int(memory),
    )
