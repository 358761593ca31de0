"""Training and evaluation of the accuracy backbone: the same optimiser, schedule and data order for
every mechanism, so only the attention differs between rows.

Why fixed steps and not a time budget: accuracy must not depend on the machine. Seeds change the
initialisation and the batch order only; AdamW with weight decay on matrices, linear warm-up then
cosine decay, gradient clipping, epoch-wise shuffling.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import tasks
from .backbone import Backbone


def patch_size_for(opts: Any, task: str) -> int:
    return int(opts.task_patch_size.get(task, opts.patch_size))


def _schedule(step: int, steps: int, warmup: float) -> float:
    w = max(1, int(round(warmup * steps)))
    if step < w:
        return (step + 1) / w
    return 0.5 * (1 + math.cos(math.pi * (step - w) / max(1, steps - w)))


def train_one(model: Backbone, train: tasks.TaskData, opts: Any, seed: int, device: torch.device,
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


def distance_accuracy(correct: np.ndarray, distance: np.ndarray) -> dict[str, float | None]:
    edges = tasks.pairmatch.DISTANCE_EDGES
    out: dict[str, float | None] = {}
    for label, lo, hi in zip(tasks.pairmatch.distance_bin_labels(edges), edges[:-1], edges[1:]):
        sel = (distance >= lo) & (distance < hi)
        out[label] = float(correct[sel].mean()) if sel.any() else None
    return out


