"""A test-only metric and a test-only mechanism with a test-only backend, each declared in this one
file and nowhere else: the contract tests check that planning, workers, the run summary, the report,
the equivalence tests and the memory predictor pick them up with no harness edit.

Importable by name (``contract_plugins``) so that spawned workers register them too.
"""
from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

import mechanisms
from attnbench.metrics import Metric, MetricContext, ReportTable, SummaryColumn, register
from attnbench.report.cells import plain_cell, raw_cell
from attnbench.results_schema import Column
from mechanisms.base import attend
from mechanisms.global_attention import GlobalAttention


# ----------------------------------------------------------------------------------- a metric
class ProbeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repeats: int = Field(3, ge=1, description="forward passes whose output norm is averaged")


def measure_probe(ctx: MetricContext) -> dict[str, Any]:
    """Mean L2 norm of the module's output over ``repeats`` forwards of the case's input."""
    module = ctx.build_module().eval()
    x = ctx.make_input()
    with torch.no_grad():
        norms = [float(module(x).norm()) for _ in range(ctx.options.repeats)]
    ctx.add_samples("probe_norm", norms)
    return {"probe_norm": sum(norms) / len(norms), "probe_repeats": ctx.options.repeats}


PROBE = register(Metric(
    name="probe",
    measure=measure_probe,
    doc="test-only: the output norm of the mechanism",
    columns=(Column("probe_norm", "float", doc="mean output L2 norm"), Column("probe_repeats", "int")),
    options=ProbeOptions,
    options_key="probe",
    steps=lambda opts: opts.repeats,
    summary=(SummaryColumn("out norm", "probe_norm", ".4g"),),
    plan_note=lambda options: f"probe: {sum(o.repeats for o in options)} extra forwards in all",
    report_tables=(ReportTable("probe_norm", "Output norm (probe)", plain_cell("probe_norm"), raw_cell("probe_norm"),
                               "probe_norm"),),
))


# ------------------------------------------------------------------- a mechanism and a backend
@mechanisms.register("test_chunked")
class ChunkedGlobal(GlobalAttention):
    """Global attention with a test-only ``chunked`` backend: queries in chunks of ``chunk`` rows,
    each chunk's (B, h, chunk, N) logits materialised by explicit maths.

    Args:
        chunk: queries per chunk of the chunked backend.
        backend: 'native', 'math', 'xformers', 'masked' or 'chunked'.
    """

    backends = (*GlobalAttention.backends, "chunked")

    def __init__(self, dim: int, num_heads: int, *, chunk: int = 16, backend: str = "native", **common: Any) -> None:
        super().__init__(dim, num_heads, backend=backend, **common)
        self.chunk = chunk

    def _forward_chunked(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, _ = x.shape
        q, k, v = self.token_qkv(x)
        outs = [attend(q[:, :, i:i + self.chunk], k, v, scale=self.scale, backend="math")
                for i in range(0, H * W, self.chunk)]
        return self.merge_heads(torch.cat(outs, dim=2), H, W)

    def attention_memory_bytes(self, batch: int, H: int, W: int, element_size: int, train: bool,
                               device: str = "cpu") -> int:
        if self.backend == "chunked":
            N = H * W
            rows = N if train else min(self.chunk, N)  # training keeps every chunk's probabilities
            return batch * self.num_heads * rows * N * element_size * 2
        return super().attention_memory_bytes(batch, H, W, element_size, train, device)
