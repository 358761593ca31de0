"""Parameter counts: all parameters, and the trainable ones (Slide's frozen shift kernels are not)."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from . import MetricContext

NAME = "params"
OPTIONS_KEY = None
EXCLUSIVE = False


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


def measure(ctx: MetricContext) -> dict[str, Any]:
    module = ctx.case.build_module(device="meta")  # shapes only: counting needs no memory
    params = list(module.parameters())
    return {
        "params": sum(p.numel() for p in params),
        "params_trainable": sum(p.numel() for p in params if p.requires_grad),
    }
