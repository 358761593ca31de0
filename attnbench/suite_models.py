"""The ``models:`` key of a suite: whole backbones, named the way ``mechanisms:`` names layers.

    models:
      - swin-t
      - {name: swin-t, attention: pale, label: swin-t/pale}
      - {name: pale-t, depths: [2, 2, 6, 2]}        # any build() override
    resolutions: [224, 384, [800, 1216]]            # pixels for models (tokens for mechanisms)

Why a separate module: a model entry is validated against ``mechanisms.backbones`` (names, swaps,
overrides, input sizes) rather than the mechanism registry, and expands into ``ModelCase``s, which
the metrics measure like layer cases. ``dim``, ``num_heads`` and ``tasks`` do not apply to models.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Union

from pydantic import BaseModel, ConfigDict

from .case import freeze_options
from .model_case import MODEL_METRICS, ModelCase


class ModelSpec(BaseModel):
    """One entry of ``models:``: a backbone name or ``{name, attention?, label?, **build overrides}``."""

    model_config = ConfigDict(extra="allow")
    name: str
    label: str | None = None
    attention: Union[str, list[str], None] = None

    @property
    def overrides(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


@dataclass(frozen=True)
class ModelEntry:
    """A validated model configuration: backbone name, label, swap and (frozen) build overrides."""

    name: str
    label: str
    attention: str | tuple[str, ...] | None
    overrides: tuple[tuple[str, Any], ...]


def _sizes(resolutions: Any) -> list[tuple[int, int]]:
    items = resolutions if isinstance(resolutions, list) else [resolutions]
    return [tuple(r) if isinstance(r, list) else (r, r) for r in items]


def validate_models(keys: Any, metrics: list[str], taken_labels: set[str], fail) -> tuple[ModelEntry, ...]:
    """Every ``models:`` entry built (on the meta device) and costed at every resolution, so a bad name,
    swap, override or size fails here with the entry's key, before anything runs."""
    from mechanisms import backbones

    raw_models = list(getattr(keys, "models", None) or [])
    if not raw_models:
        return ()
    unfit = [m for m in metrics if m not in MODEL_METRICS]
    if unfit:
        raise fail("metrics", f"{', '.join(map(repr, unfit))} cannot measure a whole model; a suite with 'models' "
                              f"may list {', '.join(MODEL_METRICS)}")
    entries: list[ModelEntry] = []
    labels: dict[str, int] = {}
    for i, raw in enumerate(raw_models):
        spec = ModelSpec(name=raw) if isinstance(raw, str) else raw
        key = f"models[{i}]"
        attention = tuple(spec.attention) if isinstance(spec.attention, list) else spec.attention
        try:
            resolved = backbones.resolve_spec(spec.name, attention=attention, **spec.overrides)
            case = ModelCase(model=spec.name, label="", height=1, width=1, batch_size=1, dtype="float32",
                             device="meta", mode="forward", attention=attention, overrides=freeze_options(spec.overrides))
            model = case.build_module(device="meta")
        except (ValueError, TypeError) as exc:
            raise fail(key, " ".join(str(exc).split())) from None
        p = resolved.patch_size
        for h, w in _sizes(keys.resolutions):
            if h % p or w % p:
                raise fail("resolutions", f"{h}x{w} px is not a multiple of {spec.name}'s patch size {p} "
                                          f"(for {key}); model resolutions are in pixels")
            model.flops(h, w)
        label = spec.label or resolved.name
        if label in labels or label in taken_labels:
            raise fail(f"{key}.label", f"label {label!r} is already used; give each entry a distinct 'label'")
        labels[label] = i
        entries.append(ModelEntry(spec.name, label, attention, freeze_options(spec.overrides)))
    return tuple(entries)


def model_cases(entries: tuple[ModelEntry, ...], keys: Any, devices: list[str], seed: int,
                metric_options: dict[str, Any]) -> list[ModelCase]:
    """The model cases of one grid: every entry at every device, dtype, mode, batch and resolution."""
    as_list = lambda v: list(v) if isinstance(v, (list, tuple)) else [v]  # noqa: E731
    grid = itertools.product(devices, as_list(keys.dtype), as_list(keys.mode), as_list(keys.batch_size),
                             _sizes(keys.resolutions))
    return [
        ModelCase(model=e.name, label=e.label, height=h, width=w, batch_size=batch, dtype=dtype, device=device,
                  mode=mode, attention=e.attention, overrides=e.overrides, seed=seed, metric_options=metric_options)
        for device, dtype, mode, batch, (h, w) in grid for e in entries
    ]
