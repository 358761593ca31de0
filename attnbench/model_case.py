"""A whole backbone as a measured case, so the harness measures a model exactly as it measures a layer.

Why a second case type instead of new metrics: the metric modules only ask a case for its module
(``build_module``), its input (``make_input``), its mode, batch, size and dtype. A ``ModelCase``
answers the same questions for ``mechanisms.backbones.build(model, attention=...)`` on images
(B, 3, H, W), so params, flops (analytic, fvcore, FlopCounterMode), memory and time run unchanged,
on the same workload definition. Resolutions are in pixels. Fidelity is the one metric whose
definition differs (a model has no single attention pattern to hold a reference to): ``fidelity()``
here compares the logits with those of a float64 copy.

Not yet wired into suites (``models:``), the worker's case decoding and the report: the metrics and
``attnbench.cost`` already price and measure a ModelCase (the backbones implement ``flops``,
``linear_macs`` and ``attention_memory_bytes`` like a mechanism).
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .case import DTYPES, Mode


@dataclass(frozen=True)
class ModelCase:
    """One backbone at one image size, batch, dtype, device and mode."""

    model: str  # a name of mechanisms.backbones.available()
    label: str
    height: int  # pixels
    width: int
    batch_size: int
    dtype: str
    device: str
    mode: Mode
    attention: str | None = None  # swap: the mechanism put in every block
    overrides: tuple[tuple[str, Any], ...] = field(default=())  # build(**overrides), sorted pairs
    seed: int = 0
    task: None = None

    # ------------------------------------------------------------------ what metrics read from a case
    @property
    def spec(self):
        from mechanisms import backbones

        return backbones.resolve_spec(self.model, attention=self.attention, **dict(self.overrides))

    @property
    def mechanism(self) -> str:
        names = list(dict.fromkeys(self.spec.attention))
        return "+".join(names)

    @property
    def options(self) -> tuple[tuple[str, Any], ...]:
        return self.overrides

    @property
    def backend(self) -> str:
        return "native"

    @property
    def dim(self) -> int:
        return self.spec.embed_dims[0]

    @property
    def num_heads(self) -> int:
        return self.spec.heads[0]

    @property
    def tokens(self) -> int:
        """Tokens of the first stage (stride = patch size): what ``tokens_per_s`` counts."""
        p = self.spec.patch_size
        return (self.height // p) * (self.width // p)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def build_module(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> torch.nn.Module:
        """The backbone, seeded so every metric sees the same weights, on ``device`` in ``dtype``."""
        from mechanisms import backbones

        torch.manual_seed(self.seed)
        device = device or self.device
        with torch.device(device if str(device) == "meta" else "cpu"):
            model = backbones.build(self.model, attention=self.attention, **dict(self.overrides))
        return model.to(device=device, dtype=dtype or self.torch_dtype)

    def make_input(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                   requires_grad: bool = False) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed + 1)
        x = torch.randn(self.batch_size, 3, self.height, self.width, generator=gen)
        return x.to(device=device or self.device, dtype=dtype or self.torch_dtype).requires_grad_(requires_grad)

    # ---------------------------------------------------------------------------- identity and rows
    def key(self) -> str:
        raw = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha1(raw.encode()).hexdigest()[:16]

    def id_row(self) -> dict[str, Any]:
        return {
            "model": self.model, "mechanism": self.mechanism, "label": self.label, "backend": self.backend,
            "options": json.dumps(dict(self.overrides), sort_keys=True, default=str), "height": self.height,
            "width": self.width, "tokens": self.tokens, "batch_size": self.batch_size, "dim": self.dim,
            "num_heads": self.num_heads, "dtype": self.dtype, "device": self.device, "mode": self.mode, "task": None,
        }

    def describe(self) -> str:
        return f"{self.label} {self.height}x{self.width}px b{self.batch_size} {self.dtype} {self.device} {self.mode}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["overrides"] = [list(p) for p in self.overrides]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelCase":
        d = dict(d)
        d["overrides"] = tuple((k, v) for k, v in d.get("overrides", ()))
        return cls(**d)


def fidelity(case: ModelCase, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Logits (and, in train mode, the input gradient for a fixed output gradient) of the model in the
    case dtype against a float64 copy of the same weights on the same input: ``fid_max_abs``,
    ``fid_rel_l2``, ``fid_cosine`` (and ``fid_grad_*``). Reported, not judged: a whole model has no
    naive baseline to set a dtype-fair bar, so a gate belongs to the suite, not here."""
    from .metrics.fidelity import errors

    model = case.build_module(device=device).eval()
    ref_model = copy.deepcopy(model).to(torch.float64)
    train = case.mode == "train"
    x = case.make_input(device=device).detach()
    x_ref = x.double().requires_grad_(train)
    x = x.clone().requires_grad_(train)
    with torch.set_grad_enabled(train):
        out, ref = model(x), ref_model(x_ref)
    row = {f"fid_{k}": v for k, v in errors(out, ref).items()}
    if train:
        gen = torch.Generator().manual_seed(case.seed + 2)
        grad_out = torch.randn(ref.shape, generator=gen, dtype=torch.float64).to(device)
        (g,) = torch.autograd.grad(out, x, grad_outputs=grad_out.to(out.dtype))
        (g_ref,) = torch.autograd.grad(ref, x_ref, grad_outputs=grad_out)
        row.update({f"fid_grad_{k}": v for k, v in errors(g, g_ref).items()})
    return row
