"""One measured configuration: the unit the runner executes, stores, resumes and compares.

Why frozen and flat: a Case travels to worker processes, is the resume key (``key``), and its fields
are the identifying columns of ``results.csv``; two runs are compared by matching these columns.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch

from .results_schema import ID_COLUMNS, default_form, identity_key, normalized_form

Mode = Literal["forward", "train"]
Form = Literal["deploy", "train"]

DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}

def freeze_options(options: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """Mechanism options as a Case holds them: sorted (name, value) pairs, lists as tuples (hashable)."""
    def frozen(value: Any) -> Any:
        if isinstance(value, list):
            return tuple(frozen(v) for v in value)
        if isinstance(value, dict):
            return tuple(sorted((k, frozen(v)) for k, v in value.items()))
        return value

    return tuple(sorted((k, frozen(v)) for k, v in options.items()))




class MeasuresForm:
    """What a layer case and a whole-backbone case share about the form they measure: ``form`` is
    checked and the mode's default spelled None (one case, one identity), ``resolved_form`` says
    which form runs (``deploy``: ``AttentionBase.deploy()``, as served; ``train``)."""

    form: str | None
    mode: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "form", normalized_form(self.form, self.mode))

    @property
    def resolved_form(self) -> str:
        return self.form or default_form(self.mode)


@dataclass(frozen=True)
class Case(MeasuresForm):
    mechanism: str
    label: str
    options: tuple[tuple[str, Any], ...]  # sorted (name, value) pairs passed to mechanisms.build
    height: int
    width: int
    batch_size: int
    dim: int
    num_heads: int
    dtype: str
    device: str
    mode: Mode
    task: str | None = None
    form: Form | None = None  # None: the mode's default (see default_form); stored normalised
    seed: int = 0
    # The metric options of the suite grid this case came from ({metric: Options}); not part of the
    # case's identity, and not sent to workers (a Job carries them as plain dicts).
    metric_options: dict[str, Any] | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def tokens(self) -> int:
        return self.height * self.width

    @property
    def backend(self) -> str:
        return str(dict(self.options).get("backend", "native"))

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def options_dict(self) -> dict[str, Any]:
        return dict(self.options)

    def options_json(self) -> str:
        return json.dumps(self.options_dict(), sort_keys=True, default=str)

    def key(self) -> str:
        """Stable identity (resume and compare key); independent of dict ordering and of the run."""
        return identity_key({c: getattr(self, c) if c != "options" else self.options_json() for c in ID_COLUMNS})

    def id_row(self) -> dict[str, Any]:
        """The identifying columns of this case's results row."""
        special = {"options": self.options_json(), "form": self.resolved_form}
        return {c: special[c] if c in special else getattr(self, c) for c in ID_COLUMNS}

    def describe(self) -> str:
        return f"{self.label} {self.height}x{self.width} b{self.batch_size} {self.dtype} {self.device} {self.mode}" + (
            f" ({self.form} form)" if self.form else "") + (f" {self.task}" if self.task else "")

    def build_module(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """A fresh mechanism for this case in the form it measures, seeded so every metric sees the same
        weights. The deploy form is made before the cast, as a served model is (merged in full precision)."""
        import mechanisms

        torch.manual_seed(self.seed)
        module = mechanisms.build(self.mechanism, self.dim, self.num_heads, **self.options_dict())
        if self.resolved_form == "deploy" and hasattr(module, "deploy"):
            module = module.deploy()
        return module.to(device=device or self.device, dtype=dtype or self.torch_dtype)

    def make_input(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None,
                   requires_grad: bool = False) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed + 1)
        x = torch.randn(self.batch_size, self.height, self.width, self.dim, generator=gen)
        x = x.to(device=device or self.device, dtype=dtype or self.torch_dtype)
        return x.requires_grad_(requires_grad)

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "metric_options"}
        d["options"] = [list(p) for p in self.options]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Case":
        d = dict(d)
        d["options"] = tuple((k, v) for k, v in d.get("options", ()))
        return cls(**d)
