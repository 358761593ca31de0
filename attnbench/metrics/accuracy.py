"""What a mechanism can learn: the fixed backbone trained for a fixed number of steps on a task.

Why fixed steps and not a time budget: accuracy must not depend on the machine. Every seed trains
the same backbone (``attnbench.backbone``; only the attention differs) with the same optimiser,
schedule, batch size and data; seeds change the initialisation and the batch order only. The test
split is fixed by the suite seed and shared by every mechanism and seed. The case's H x W is the
*token grid* (as for every other metric); images are H·p x W·p pixels for patch size p.

With few steps this measures capacity *and* sample efficiency together (see the README): a
mechanism that is able in principle to solve PairMatch (axial: full reach in 2 layers) may still be
at chance after the CPU budget.

Sanity check (``acc_valid``), derived from the pattern, not from the mechanism's name: on pairmatch,
a stack whose *first* layer already reaches every token (global attention) must reach
``learn_min`` (0.95); a stack in which no token's receptive field ever spans two image quadrants
(non-shifted windows aligned with the quadrants) is provably at chance and must stay at or below
``chance_max`` (0.55). Other rows carry no check (empty). A run is valid when every checked row
passes and both checks were made (``run_validity``).
"""
from __future__ import annotations

import json
import math
import time
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from .. import tasks
from ..backbone import Backbone
from . import MetricContext

NAME = "accuracy"
OPTIONS_KEY = "accuracy"
EXCLUSIVE = False


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


def patch_size_for(opts: Options, task: str) -> int:
    return int(opts.task_patch_size.get(task, opts.patch_size))


def _schedule(step: int, steps: int, warmup: float) -> float:
    w = max(1, int(round(warmup * steps)))
    if step < w:
        return (step + 1) / w
    return 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, steps - w)))


def train_one(model: Backbone, train: tasks.TaskData, opts: Options, seed: int, device: torch.device,
              autocast_dtype: torch.dtype | None = None) -> float:
    """Train in place for ``opts.steps`` steps; returns the training wall time in seconds."""
    xs = torch.from_numpy(train.images)
    ys = torch.from_numpy(train.labels)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 99]))
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1 and "pos_embed" not in n]
    rest = [p for n, p in model.named_parameters() if p.requires_grad and not (p.ndim > 1 and "pos_embed" not in n)]
    optim = torch.optim.AdamW([{"params": decay, "weight_decay": opts.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                              lr=opts.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda s: _schedule(s, opts.steps, opts.warmup))
    order = np.empty(0, dtype=np.int64)
    model.train()
    start = time.perf_counter()
    for _ in range(opts.steps):
        if len(order) < opts.batch_size:  # epoch-wise shuffling, so every sample is seen equally often
            order = np.concatenate([order, rng.permutation(len(ys))])
        idx, order = torch.from_numpy(order[: opts.batch_size]), order[opts.batch_size:]
        x, y = xs[idx].to(device), ys[idx].to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = F.cross_entropy(model(x).float(), y)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), opts.grad_clip)
        optim.step()
        sched.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


@torch.no_grad()
def predict(model: Backbone, data: tasks.TaskData, batch: int, device: torch.device,
            autocast_dtype: torch.dtype | None = None) -> np.ndarray:
    model.eval()
    preds = []
    for i in range(0, len(data), batch):
        x = torch.from_numpy(data.images[i:i + batch]).to(device)
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            preds.append(model(x).argmax(-1).cpu())
    return torch.cat(preds).numpy()


def sanity_expectation(case_mechanism: str, options: dict[str, Any], dim: int, heads: int, H: int, W: int,
                       depth: int) -> str | None:
    """'learn' (reaches every token in one layer), 'chance' (no token ever spans two quadrants), or None."""
    from .receptive_field import layer_masks, reach_after

    masks = layer_masks(case_mechanism, options, dim, heads, H, W)
    if masks[0].all():
        return "learn"
    if H % 2 or W % 2:
        return None
    rows, cols = np.divmod(np.arange(H * W), W)
    quadrant = (rows >= H // 2) * 2 + (cols >= W // 2)
    reach = reach_after(masks, depth).sets()
    spans = [(quadrant[r] != quadrant[q]).any() for q, r in enumerate(reach)]
    return "chance" if not any(spans) else None


def _distance_accuracy(correct: np.ndarray, distance: np.ndarray) -> dict[str, float | None]:
    edges = tasks.pairmatch.DISTANCE_EDGES
    out: dict[str, float | None] = {}
    for label, lo, hi in zip(tasks.pairmatch.distance_bin_labels(edges), edges[:-1], edges[1:]):
        sel = (distance >= lo) & (distance < hi)
        out[label] = float(correct[sel].mean()) if sel.any() else None
    return out


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
            per_seed_bins.append(_distance_accuracy(correct, test.meta["distance"]))

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


def run_validity(results: Any) -> tuple[str, list[str]]:
    """('valid' | 'invalid' | 'unchecked', reasons) for a run's results DataFrame.

    Valid: every checked pairmatch row passed, and both a 'learn' row and a 'chance' row were
    checked (otherwise nothing proves the task separates at this budget: 'unchecked').
    """
    if "acc_expect" not in getattr(results, "columns", []):
        return "unchecked", ["no accuracy rows"]
    rows = results[results["acc_expect"].notna() & (results["acc_expect"].astype(str) != "")]
    reasons = []
    for _, r in rows.iterrows():
        ok = str(r.get("acc_valid")).lower() in ("true", "1", "1.0")
        if not ok:
            bound = "≥ learn_min" if r["acc_expect"] == "learn" else "≤ chance_max"
            reasons.append(f"{r['label']} on {r['task']} at {r['height']}x{r['width']}: accuracy "
                           f"{float(r['acc_mean']):.3f}, expected {bound} ({r['acc_expect']})")
    expects = set(rows["acc_expect"].astype(str))
    if reasons:
        return "invalid", reasons
    missing = [e for e in ("learn", "chance") if e not in expects]
    if missing:
        return "unchecked", [f"no pairmatch row with expectation {m!r} (add global attention and non-shifted "
                             "windows to the suite)" for m in missing]
    return "valid", []
