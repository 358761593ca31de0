"""The accuracy metric: the fixed backbone (``attnbench.accuracy``) trained for a fixed number of steps
on a task, per case; training, tasks and the run's verdict live in that package.

The case's H x W is the *token grid* (as for every other metric); images are H·p x W·p pixels for
patch size p. With few steps this measures capacity *and* sample efficiency together: a mechanism
that is able in principle to solve PairMatch (axial: full reach in 2 layers) may still be at
chance after the CPU budget. ``acc_expect``/``acc_valid`` are the pattern-derived sanity check of
``attnbench.accuracy.verdict``.
"""
from __future__ import annotations

import json
import math
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ..accuracy import tasks
from ..accuracy.backbone import Backbone
from ..accuracy.training import distance_accuracy, patch_size_for, predict, train_one
from ..accuracy.verdict import run_validity, sanity_expectation
from ..results_schema import Column
from . import Metric, MetricContext, SummaryColumn, register


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(400, ge=1, description="optimiser steps per seed")
    seeds: int = Field(1, ge=1, description="independent trainings (init + batch order) per case")
    depth: int = Field(2, ge=1, description="blocks in the backbone")
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup: float = Field(0.05, ge=0, lt=1, description="fraction of steps with linear warm-up, then cosine decay")
    batch_size: int = Field(64, ge=1)
    grad_clip: float = Field(1.0, gt=0)
    mlp_ratio: float = Field(2.0, gt=0)
    patch_size: int = Field(2, ge=1, description="pixels per token side: images are (H·p) x (W·p)")
    pos_embed: Literal["learned", "sincos"] = Field(
        "learned", description="a learned table (trunc-normal, std 0.02) or a fixed 2-D sine-cosine code (Pathfinder)")
    task_patch_size: dict[str, int] = Field(default_factory=dict, description="per-task patch size overrides")
    n_train: int = Field(8192, ge=2, description="train set size of procedural tasks (digits uses all it has)")
    n_test: int = Field(1000, ge=2, description="test set size of procedural tasks")
    eval_batch: int = Field(250, ge=1)
    learn_min: float = Field(0.95, ge=0, le=1, description="pairmatch: global-in-one-layer stacks must reach this")
    chance_max: float = Field(0.55, ge=0, le=1, description="pairmatch: quadrant-separated stacks must stay at or below")


def measure(ctx: MetricContext) -> dict[str, Any]:
    case, opts = ctx.case, ctx.options or Options()
    if not case.task:
        raise ValueError(f"the accuracy metric needs a task; add `tasks: [{', '.join(tasks.available())}]` to the suite")
    torch.set_num_threads(ctx.threads)
    info = tasks.info(case.task)
    p = patch_size_for(opts, case.task)
    size = case.height * p
    if case.width != case.height:
        raise NotImplementedError("accuracy tasks use square images; give square resolutions")
    train, test = tasks.load(case.task, size, opts.n_train, opts.n_test, seed=case.seed)
    autocast = ctx.dtype if ctx.dtype in (torch.bfloat16, torch.float16) else None
    param_dtype = torch.float64 if ctx.dtype == torch.float64 else torch.float32
    if param_dtype == torch.float64:
        train.images, test.images = train.images.astype(np.float64), test.images.astype(np.float64)

    accs, train_s, per_seed_bins, params, macs = [], 0.0, [], 0, 0
    for s in range(opts.seeds):
        seed = case.seed * 1000 + s
        torch.manual_seed(seed)
        model = Backbone(case.mechanism, case.options_dict(), grid=(case.height, case.width), patch_size=p,
                         in_channels=info.channels, num_classes=info.num_classes, dim=case.dim,
                         num_heads=case.num_heads, depth=opts.depth, mlp_ratio=opts.mlp_ratio,
                         pos_embed=opts.pos_embed)
        model = model.to(device=ctx.device, dtype=param_dtype)
        params, macs = sum(q.numel() for q in model.parameters()), model.macs()
        train_s += train_one(model, train, opts, seed, ctx.device, autocast)
        correct = predict(model, test, opts.eval_batch, ctx.device, autocast) == test.labels
        accs.append(float(correct.mean()))
        if "distance" in test.meta:
            per_seed_bins.append(distance_accuracy(correct, test.meta["distance"]))

    mean = float(np.mean(accs))
    row: dict[str, Any] = {
        "acc_mean": mean,
        "acc_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
        "acc_seeds": json.dumps([round(a, 4) for a in accs]),
        "acc_ci95": 1.96 * math.sqrt(max(mean * (1 - mean), 1e-12) / (len(test) * len(accs))),
        "acc_chance": 1.0 / info.num_classes,
        "acc_train_s": round(train_s, 3),
        "acc_steps": opts.steps,
        "acc_steps_per_s": opts.steps * opts.seeds / train_s,
        "acc_train_img_s": opts.steps * opts.seeds * opts.batch_size / train_s,
        "acc_backbone_params": params,
        "acc_backbone_macs": macs,
        "acc_depth": opts.depth,
        "acc_pos_embed": opts.pos_embed,
        "acc_image_size": size,
        "acc_patch_size": p,
        "acc_test_n": len(test),
        "acc_train_n": len(train),
        "acc_expect": None,
        "acc_valid": None,
    }
    ctx.add_samples("acc_seeds", accs)
    if per_seed_bins:
        bins = {k: [b[k] for b in per_seed_bins if b[k] is not None] for k in per_seed_bins[0]}
        row["acc_by_distance"] = json.dumps({k: (float(np.mean(v)) if v else None) for k, v in bins.items()})
    if case.task == "pairmatch":
        expect = sanity_expectation(case.mechanism, case.options_dict(), case.dim, case.num_heads, case.height,
                                    case.width, opts.depth)
        row["acc_expect"] = expect
        if expect == "learn":
            row["acc_valid"] = mean >= opts.learn_min
        elif expect == "chance":
            row["acc_valid"] = mean <= opts.chance_max
    return row




def _validity_lines(results: Any) -> list[str]:
    if "acc_mean" not in results or not results["acc_mean"].notna().any():
        return []
    state, reasons = run_validity(results)
    style = {"valid": "green", "invalid": "red"}.get(state, "yellow")
    return [f"Accuracy run validity (PairMatch sanity check): [{style}]{state.upper()}[/]"] + [f"  {r}" for r in reasons]


def _plan_note(options: list[Any]) -> str | None:
    steps = [int(o.steps) * int(o.seeds) for o in options if o is not None]
    if not steps:
        return None
    return (f"Not in that estimate: accuracy training, {sum(steps)} optimiser steps in all ({min(steps)}-{max(steps)} "
            "per case, steps x seeds); see the docs' measured wall times for suites/accuracy.yaml")


def _report_section(run: Any, out_dir: Any) -> str | None:
    if not any(c.startswith(("acc_", "fid_", "rf_")) for c in run.results.columns):
        return None
    from ..report import accuracy_section

    return accuracy_section.render(run, out_dir)


METRIC = register(Metric(
    name="accuracy",
    measure=measure,
    doc="test accuracy of the fixed backbone trained for fixed steps on an offline task",
    columns=(
        Column("acc_mean", "float", "fraction", "test accuracy averaged over seeds"),
        Column("acc_std", "float", "fraction"), Column("acc_seeds", "json", doc="per-seed accuracies"),
        Column("acc_ci95", "float", "fraction", "binomial 95% half-width"), Column("acc_chance", "float", "fraction"),
        Column("acc_train_s", "float", "s"), Column("acc_steps", "int"), Column("acc_steps_per_s", "float", "steps/s"),
        Column("acc_train_img_s", "float", "images/s"), Column("acc_backbone_params", "int", "parameters"),
        Column("acc_backbone_macs", "int", "MACs"), Column("acc_depth", "int", "blocks"), Column("acc_pos_embed", "str"),
        Column("acc_image_size", "int", "px"), Column("acc_patch_size", "int", "px"), Column("acc_test_n", "int"),
        Column("acc_train_n", "int"), Column("acc_expect", "str", doc="learn | chance | empty: the sanity expectation"),
        Column("acc_valid", "bool", doc="the row met its expectation"),
        Column("acc_by_distance", "json", doc="accuracy per marker-distance bin"),
    ),
    options=Options,
    options_key="accuracy",
    summary=(SummaryColumn("acc", "acc_mean", ".3f"), SummaryColumn("train s", "acc_train_s", ".0f")),
    summary_notes=_validity_lines,
    plan_note=_plan_note,
    report_section=_report_section,
))
