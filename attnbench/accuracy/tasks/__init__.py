"""Offline, seeded classification tasks for the accuracy metric, at any image side.

    from attnbench.accuracy import tasks
    tasks.available()                          # ['digits', 'pairmatch', 'pathfinder', ...]
    train, test = tasks.load("pairmatch", size=32, n_train=4096, n_test=1000, seed=0)

Why generated (or bundled) data: Long Range Arena depends on downloads that have since broken and on
a generator that no longer runs. Everything here is produced locally from a seed, so a result can be
rebuilt anywhere. Procedural splits are cached on disk (keyed by the generator's source hash), since
several worker processes train on the same data.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import base, digits, pairmatch, pathfinder
from .base import TaskData


@dataclass(frozen=True)
class TaskInfo:
    """One task: what a model sees and how its data is made.

    A procedural task has a ``generate(labels, size, rng)`` and is split and cached here; a bundled
    one (digits) has its own fixed ``splits(size, seed)`` and ignores the requested split sizes.
    """

    name: str
    num_classes: int
    channels: int
    summary: str
    generate: Callable | None = None
    splits: Callable | None = None

    @property
    def procedural(self) -> bool:
        return self.generate is not None


def _tasks() -> dict[str, TaskInfo]:
    out = {
        "pairmatch": TaskInfo("pairmatch", pairmatch.NUM_CLASSES, pairmatch.CHANNELS,
                              "two coloured squares in different quadrants: same colour?", generate=pairmatch.generate),
        "digits": TaskInfo("digits", digits.NUM_CLASSES, digits.CHANNELS, "scikit-learn 8x8 handwritten digits, upsampled",
                           splits=digits.splits),
    }
    for name, d in pathfinder.PRESETS.items():
        out[name] = TaskInfo(name, pathfinder.NUM_CLASSES, pathfinder.CHANNELS,
                             f"are the circles on one dashed path? ({d.contour_length} dashes, {d.distractors} distractors)",
                             generate=pathfinder.generator(name))
    return out


_TASKS: dict[str, TaskInfo] = _tasks()


def available() -> list[str]:
    return sorted(_TASKS)


def info(name: str) -> TaskInfo:
    if name not in _TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {available()}")
    return _TASKS[name]


def _source_hash() -> str:
    src = "".join(inspect.getsource(m) for m in (base, pairmatch, pathfinder))
    return hashlib.sha1(src.encode()).hexdigest()[:12]


def cache_dir() -> Path:
    return Path(os.environ.get("ATTNBENCH_CACHE", Path.home() / ".cache" / "attnbench")) / "tasks"


def _load_cached(path: Path) -> tuple[TaskData, TaskData] | None:
    try:
        with np.load(path) as z:
            parts = []
            for split in ("train", "test"):
                meta = {k.split("/", 2)[2]: z[k] for k in z.files if k.startswith(f"{split}/meta/")}
                parts.append(TaskData(z[f"{split}/images"], z[f"{split}/labels"], meta))
            return parts[0], parts[1]
    except (OSError, KeyError, ValueError):
        return None


def _save_cached(path: Path, train: TaskData, test: TaskData) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, data in (("train", train), ("test", test)):
        arrays[f"{split}/images"] = data.images
        arrays[f"{split}/labels"] = data.labels
        arrays.update({f"{split}/meta/{k}": v for k, v in data.meta.items()})
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    os.close(fd)
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # atomic: parallel workers may race to write the same file


def load(name: str, size: int, n_train: int, n_test: int, seed: int = 0, cache: bool = True) -> tuple[TaskData, TaskData]:
    """(train, test) for a task at ``size`` px. Digits has a fixed size; n_train/n_test apply to procedural tasks."""
    task = info(name)
    if task.splits is not None:
        return task.splits(size, seed)
    path = cache_dir() / f"{name}-{size}-{n_train}-{n_test}-{seed}-{_source_hash()}.npz"
    if cache and path.exists():
        hit = _load_cached(path)
        if hit is not None:
            return hit
    train, test = base.procedural_splits(task.generate, task.num_classes, size, n_train, n_test, seed)
    if cache:
        _save_cached(path, train, test)
    return train, test


def samples(name: str, size: int, n: int, seed: int = 0) -> TaskData:
    """A few balanced samples for previews and tests (never cached)."""
    task = info(name)
    if task.splits is not None:
        return task.splits(size, seed)[1].subset(np.arange(n))
    rng = base.split_rng(seed, "test")
    labels = base.balanced_labels(n, task.num_classes, rng)
    images, meta = task.generate(labels, size, rng)
    return TaskData(images, labels, meta)


__all__ = ["TaskData", "TaskInfo", "available", "info", "load", "samples"]
