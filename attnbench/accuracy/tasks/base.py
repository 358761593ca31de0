"""What every task shares: the data container, exact class balance, and disjoint train/test splits.

Why this is central: the accuracy numbers are only comparable between mechanisms, machines and
resolutions if the data is a pure function of (task, size, split, seed). Every generator here is
deterministic for a seed, gives every class exactly the same number of samples (so chance is
exactly 1/classes and a non-learner is recognisable), and the train split never holds an image of
the test split (checked by hashing, not assumed).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

# Fixed seed offsets: the test split of a data seed never shares a random stream with its train split.
_SPLIT_STREAM = {"train": 0, "test": 1}


@dataclass
class TaskData:
    """``images``: float32 (n, channels, size, size); ``labels``: int64 (n,); ``meta``: per-sample arrays."""

    images: np.ndarray
    labels: np.ndarray
    meta: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: np.ndarray) -> "TaskData":
        return TaskData(self.images[idx], self.labels[idx], {k: v[idx] for k, v in self.meta.items()})

    def hashes(self) -> list[bytes]:
        return [hashlib.sha1(img.tobytes()).digest() for img in self.images]


def balanced_labels(n: int, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly n / num_classes of each label, in random order."""
    if n % num_classes:
        raise ValueError(f"sample count {n} is not a multiple of {num_classes} classes; pick a multiple so classes balance exactly")
    labels = np.repeat(np.arange(num_classes), n // num_classes)
    return rng.permutation(labels)


def split_rng(seed: int, split: str) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), _SPLIT_STREAM[split]]))


# A procedural generator: (labels, size, rng) -> (images, meta) with images[i] drawn for labels[i].
Generator = Callable[[np.ndarray, int, np.random.Generator], tuple[np.ndarray, dict[str, np.ndarray]]]


def procedural_splits(generate: Generator, num_classes: int, size: int, n_train: int, n_test: int,
                      seed: int) -> tuple[TaskData, TaskData]:
    """Balanced train and test sets from independent streams; a train image equal to a test image is redrawn."""
    rng_test = split_rng(seed, "test")
    test_labels = balanced_labels(n_test, num_classes, rng_test)
    images, meta = generate(test_labels, size, rng_test)
    test = TaskData(images, test_labels, meta)
    rng_train = split_rng(seed, "train")
    train_labels = balanced_labels(n_train, num_classes, rng_train)
    images, meta = generate(train_labels, size, rng_train)
    train = TaskData(images, train_labels, meta)
    seen = set(test.hashes())
    for _ in range(100):
        clash = np.array([i for i, h in enumerate(train.hashes()) if h in seen], dtype=np.int64)
        if clash.size == 0:
            return train, test
        redrawn, redrawn_meta = generate(train.labels[clash], size, rng_train)
        train.images[clash] = redrawn
        for k in train.meta:
            train.meta[k][clash] = redrawn_meta[k]
    raise RuntimeError("could not draw a train set disjoint from the test set; the generator has too little entropy")
