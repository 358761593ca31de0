"""Digits: scikit-learn's bundled 8x8 handwritten digits, upsampled to any side.

Why: real data, no download, and it rewards local features — the counterweight to PairMatch, where
only global mixing helps. 1797 images; the test split takes the same number from every class, the
train split the same (smaller) number from every class, drawn without overlap from a seeded
permutation.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

NAME = "digits"
NUM_CLASSES = 10
CHANNELS = 1
TEST_PER_CLASS = 50


def _load() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images.astype(np.float32) / 16.0, data.target.astype(np.int64)


def upsample(images: np.ndarray, size: int) -> np.ndarray:
    """(n, 8, 8) in [0, 1] -> (n, 1, size, size), bilinear, centred to [-1, 1]."""
    x = torch.from_numpy(images)[:, None]
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x * 2 - 1).numpy().astype(np.float32)


def splits(size: int, seed: int, test_per_class: int = TEST_PER_CLASS):
    """(train, test) TaskData: exactly balanced, disjoint (split by image index)."""
    from .base import TaskData

    if size < 1:
        raise ValueError(f"digits needs an image side >= 1, got {size}")
    images, labels = _load()
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7]))
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(NUM_CLASSES)]
    train_per_class = min(len(ix) for ix in per_class) - test_per_class
    if train_per_class < 1:
        raise ValueError(f"test_per_class={test_per_class} leaves no training images; use at most 100")
    test_idx = rng.permutation(np.concatenate([ix[:test_per_class] for ix in per_class]))
    train_idx = rng.permutation(np.concatenate([ix[test_per_class:test_per_class + train_per_class] for ix in per_class]))
    make = lambda idx: TaskData(upsample(images[idx], size), labels[idx], {"index": idx})  # noqa: E731
    return make(train_idx), make(test_idx)
