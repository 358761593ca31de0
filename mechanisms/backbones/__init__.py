"""Whole backbones built from the registered mechanisms: DeiT-S, Swin-T, CSWin-T, Pale-T, Slide-Swin-T.

    from mechanisms import backbones
    backbones.available()                        # ['cswin-t', 'deit-s', 'pale-t', 'slide-swin-t', 'swin-t']
    model = backbones.build("pale-t")            # images (B, 3, H, W) -> logits (B, 1000)
    swapped = backbones.build("swin-t", attention="pale")   # Swin-T skeleton, pale attention in every block
    neck_in = backbones.build("swin-t", features_only=True)(x)   # four maps (B, C_i, H/4..H/32, W/4..W/32)
    model.flops(224, 224)["total"]               # analytic MACs of one image
    backbones.describe("pale-t")                 # config, sources, derived details, params and MACs at 224²

Plain PyTorch: nothing here imports the attnbench harness. Any input whose sides are multiples of the
patch size runs: the mechanisms pad and mask their groups, merging pads odd maps.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Sequence

import torch

from .. import registry
from .models import BackboneBase, HierarchicalBackbone, VisionTransformer, attention_heads, count_params
from .specs import SPECS, STAGE_DEFAULTS, WHOLE_MAP, ModelSpec, stage_defaults

# Spec fields a caller may override, besides ``attention`` and ``attention_options``.
_SPEC_OVERRIDES = ("embed_dims", "depths", "heads", "mlp_ratio", "drop_path_rate", "cpe", "class_token")
_BUILD_OVERRIDES = ("features_only", "in_chans")


def available() -> list[str]:
    """Sorted names of the built-in backbones."""
    return sorted(SPECS)


def get_spec(name: str) -> ModelSpec:
    if name not in SPECS:
        close = difflib.get_close_matches(name, list(SPECS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown backbone {name!r}; choose one of {available()}.{hint}")
    return SPECS[name]


def _stage_tuple(value: Any, stages: int, label: str, name: str) -> tuple:
    if isinstance(value, (str, dict)) or not isinstance(value, Sequence):
        return tuple(value for _ in range(stages))
    if len(value) != stages:
        raise ValueError(f"{name}: {label} needs one entry per stage ({stages}), got {len(value)}: {list(value)!r}")
    return tuple(value)


def resolve_spec(name: str, *, attention: str | Sequence[str] | None = None, **overrides: Any) -> ModelSpec:
    """The spec ``build`` would use: the named model with the attention swapped and the overrides applied.

    ``attention`` (one name, or one per stage) replaces the mechanism of every block. A stage whose
    mechanism changes takes that mechanism's per-stage defaults (``specs.STAGE_DEFAULTS``: the values of
    its own tiny model); a stage that keeps its mechanism keeps its options. ``attention_options`` (a dict
    for every stage, or one dict per stage) is applied on top. DeiT's class token stays only with
    global attention unless ``class_token`` is given.
    """
    spec = get_spec(name)
    stages = len(spec.depths)
    unknown = [k for k in overrides if k not in (*_SPEC_OVERRIDES, "attention_options")]
    if unknown:
        valid = sorted((*_SPEC_OVERRIDES, *_BUILD_OVERRIDES, "attention", "attention_options", "num_classes"))
        raise ValueError(f"backbone {name!r} has no option {', '.join(map(repr, unknown))}; valid options: {valid}")
    changes: dict[str, Any] = {}
    if attention is not None:
        names = _stage_tuple(attention, stages, "attention", name)
        for mech in names:
            registry.get(mech)  # unknown mechanism: ValueError naming the valid ones
        defaults = stage_defaults_for(names)
        options = tuple(
            dict(spec.attention_options[s]) if names[s] == spec.attention[s] else defaults[s] for s in range(stages)
        )
        label = names[0] if len(set(names)) == 1 else "+".join(names)
        changes.update(attention=names, attention_options=options, name=f"{name}/{label}")
        if spec.kind == "vit" and "class_token" not in overrides:
            changes["class_token"] = names[0] == "global"
    extra = overrides.pop("attention_options", None)
    if extra is not None:
        base = changes.get("attention_options", spec.attention_options)
        per_stage = _stage_tuple(extra, stages, "attention_options", name)
        changes["attention_options"] = tuple({**base[s], **per_stage[s]} for s in range(stages))
    for key in ("embed_dims", "depths", "heads"):
        if key in overrides:
            value = tuple(overrides.pop(key))
            if len(value) != stages:
                raise ValueError(f"{name}: {key} needs {stages} entries, got {list(value)!r}")
            changes[key] = value
    changes.update(overrides)
    return dataclasses.replace(spec, **changes)


def stage_defaults_for(names: Sequence[str]) -> tuple[dict[str, Any], ...]:
    """Per-stage default options for a per-stage list of mechanism names."""
    stages = len(names)
    return tuple(stage_defaults(mech, stages)[s] for s, mech in enumerate(names))


def build(
    name: str,
    *,
    attention: str | Sequence[str] | None = None,
    num_classes: int = 1000,
    features_only: bool = False,
    in_chans: int = 3,
    **overrides: Any,
) -> BackboneBase:
    """Build backbone ``name`` (see ``available()``), optionally with another mechanism in every block.

    Args:
        attention: mechanism name (or one per stage) replacing the model's own; its per-stage option
            defaults and its own positional terms come with it, the alternation of its blocks comes from
            its ``layer_options``.
        num_classes: classes of the linear head; 0 returns the pooled features.
        features_only: return the four stage maps (B, C_i, H_i, W_i) instead of logits.
        in_chans: image channels.
        overrides: ``embed_dims``, ``depths``, ``heads``, ``mlp_ratio``, ``drop_path_rate``, ``cpe``,
            ``class_token``, ``attention_options`` (a dict for all stages or one per stage).
    """
    spec = resolve_spec(name, attention=attention, **overrides)
    cls = VisionTransformer if spec.kind == "vit" else HierarchicalBackbone
    return cls(spec, num_classes=num_classes, features_only=features_only, in_chans=in_chans)


def describe(name: str, *, attention: str | Sequence[str] | None = None, resolution: int = 224, **overrides: Any) -> dict[str, Any]:
    """The configuration of a backbone (after any swap and overrides), where each value comes from, what is
    derived rather than published, the paper's numbers, and params and analytic MACs at ``resolution``²
    (built on the meta device: no memory, no time)."""
    spec = resolve_spec(name, attention=attention, **overrides)
    with torch.device("meta"):
        model = build(name, attention=attention, **overrides)
    macs = model.flops(resolution, resolution)
    heads = tuple(attention_heads(m, d, h) for m, d, h in zip(spec.attention, spec.embed_dims, spec.heads))
    options = [{k: ("whole map" if k == "split_size" and v == WHOLE_MAP else v) for k, v in o.items()}
               for o in spec.attention_options]
    return {
        "name": spec.name,
        "summary": spec.summary,
        "kind": spec.kind,
        "embed_dims": list(spec.embed_dims),
        "depths": list(spec.depths),
        "heads": list(heads),
        "attention": list(spec.attention),
        "attention_options": options,
        "stem": spec.stem,
        "merge": spec.merge,
        "patch_size": spec.patch_size,
        "mlp_ratio": spec.mlp_ratio,
        "cpe": spec.cpe,
        "class_token": spec.class_token,
        "drop_path_rate": spec.drop_path_rate,
        "params": count_params(model),
        "macs": macs["total"],
        "macs_by_part": macs,
        "resolution": resolution,
        "paper": dict(spec.paper),
        "target": dict(spec.target),
        "sources": spec.sources,
        "derived": spec.derived,
    }


__all__ = [
    "BackboneBase",
    "HierarchicalBackbone",
    "ModelSpec",
    "STAGE_DEFAULTS",
    "VisionTransformer",
    "available",
    "build",
    "count_params",
    "describe",
    "get_spec",
    "resolve_spec",
]
