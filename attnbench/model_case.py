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
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from .case import DTYPES, Case, MeasuresForm, Mode, freeze_options


@dataclass(frozen=True)
class ModelCase(MeasuresForm):
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
    form: str | None = None  # None: the mode's default (deploy for forward, train for train), as Case.form
    # The metric options of the grid that produced this case (as Case.metric_options).
    metric_options: dict[str, Any] | None = field(default=None, compare=False, hash=False, repr=False)

    # ------------------------------------------------------------------ what metrics read from a case
    @property
    def spec(self):
        from mechanisms import backbones

        return backbones.resolve_spec(self.model, attention=self.attention, **self.build_overrides())

    def build_overrides(self) -> dict[str, Any]:
        """``build()`` keywords from the frozen overrides (``attention_options`` back to dicts)."""
        out = dict(self.overrides)
        if "attention_options" in out:
            out["attention_options"] = _thaw_options(out["attention_options"])
        return out

    @property
    def mechanism(self) -> str:
        return "+".join(self.mechanism_names())

    def mechanism_names(self) -> list[str]:
        """The registered mechanisms the model is built from (plugins a worker must import, backends
        whose availability decides whether the case can run)."""
        return list(dict.fromkeys(self.spec.attention))

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
            model = backbones.build(self.model, attention=self.attention, **self.build_overrides())
            if self.resolved_form == "deploy":  # merged in full precision, before the cast, as served
                model = model.deploy()
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
            "num_heads": self.num_heads, "dtype": self.dtype, "device": self.device, "mode": self.mode,
            "form": self.resolved_form, "task": None,
        }

    def describe(self) -> str:
        return f"{self.label} {self.height}x{self.width}px b{self.batch_size} {self.dtype} {self.device} {self.mode}"

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "metric_options"}
        if d["form"] is None:  # the default form keeps the key of rows stored before forms existed
            del d["form"]
        d["overrides"] = [[k, list(v) if isinstance(v, tuple) else v] for k, v in self.overrides]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelCase":
        d = dict(d)
        d["overrides"] = freeze_options(dict(d.get("overrides", ())))
        if isinstance(d.get("attention"), list):
            d["attention"] = tuple(d["attention"])
        return cls(**d)


def _thaw_options(value: Any) -> Any:
    """A frozen options dict (pairs) or per-stage tuple of them, back to a dict or a list of dicts."""
    def is_pairs(v: Any) -> bool:
        return isinstance(v, tuple) and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in v)

    if isinstance(value, dict):
        return value
    if is_pairs(value):
        return dict(value)
    return [dict(v) if is_pairs(v) else v for v in value]


def model_case_from_row(row: dict[str, str]) -> ModelCase:
    """The ModelCase of a stored results row (the reference-MACs check rebuilds cases from rows).

    A row names the model and the mechanisms it ran (``mechanism``: the stages' mechanisms joined by
    '+'); the swap is recovered as "none" when those are the model's own, else that mechanism. A
    per-stage mix of swapped mechanisms is not recoverable from a row (its key will not match).
    """
    from mechanisms import backbones

    native = "+".join(dict.fromkeys(backbones.get_spec(row["model"]).attention))
    mechanism = row["mechanism"]
    attention = None if mechanism == native else (mechanism if "+" not in mechanism else tuple(mechanism.split("+")))
    return ModelCase(model=row["model"], label=row["label"], height=int(row["height"]), width=int(row["width"]),
                     batch_size=int(row["batch_size"]), dtype=row["dtype"], device=row["device"], mode=row["mode"],
                     attention=attention, overrides=freeze_options(json.loads(row["options"] or "{}")))


# Metrics that apply to a whole model (the others train or probe one attention layer).
MODEL_METRICS = ("params", "flops", "memory", "time", "fidelity")


def case_from_dict(d: dict[str, Any]) -> Case | ModelCase:
    """A case sent to a worker, back as the type it was: a backbone case names its ``model``."""
    return ModelCase.from_dict(d) if "model" in d else Case.from_dict(d)


def mechanism_names(case: Case | ModelCase) -> list[str]:
    """Registered mechanisms a case builds: one for a layer case, every stage's for a model."""
    return case.mechanism_names() if isinstance(case, ModelCase) else [case.mechanism]


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
