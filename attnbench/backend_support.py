"""Can a case's backend run here? The mechanism's own answer, asked before a worker is started.

Why: ``unavailable_reason`` is the mechanism contract (a classmethod, no instance needed); a few
reasons depend on options (Slide's learnable branch has no exact flex form), so the module is also
built on the meta device and every attention module in it asked (``configured_unavailable_reason``).
A whole backbone asks each mechanism it is built from. Either way the row becomes ``unsupported``
with the mechanism's sentence.
"""
from __future__ import annotations

from typing import Any


def case_unavailable_reason(case: Any) -> str | None:
    import mechanisms
    from mechanisms.base import AttentionBase

    from .model_case import mechanism_names

    for name in mechanism_names(case):
        reason = mechanisms.get(name).unavailable_reason(case.backend, case.device, case.torch_dtype, case.mode)
        if reason is not None:
            return reason
    module = case.build_module(device="meta")
    for sub in module.modules():
        if isinstance(sub, AttentionBase):
            reason = sub.configured_unavailable_reason()
            if reason is not None:
                return reason
    return None
