"""Can a case's backend run here? The mechanism's own answer, asked before a worker is started.

Why: ``unavailable_reason`` is the mechanism contract (a classmethod, no instance needed); a few
reasons depend on options (Slide's learnable branch has no exact flex form), so the module is also
built on the meta device and asked (``configured_unavailable_reason``). Either way the row becomes ``unsupported`` with
the mechanism's sentence.
"""
from __future__ import annotations

from .case import Case


def case_unavailable_reason(case: Case) -> str | None:
    import mechanisms

    cls = mechanisms.get(case.mechanism)
    ask = getattr(cls, "unavailable_reason", None)
    reason = ask(case.backend, case.device, case.torch_dtype, case.mode) if ask is not None else None
    if reason is None:
        module = case.build_module(device="meta")
        ask_module = getattr(module, "configured_unavailable_reason", None)
        reason = ask_module() if ask_module is not None else None
    return reason
