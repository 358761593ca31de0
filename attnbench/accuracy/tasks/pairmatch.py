"""PairMatch: two coloured squares in two different quadrants; label = they have the same colour.

Why this task: neither marker alone says anything about the label, and same/different is not an
additive function of the two colours. With the backbone's additive readout (mean-pool -> linear, no
final norm), a model in which no token's receptive field ever holds both quadrants is *provably* at
chance, while global attention solves it within a few hundred steps. That makes it a built-in
positive and negative control for "can this mechanism mix information across the image".

Each sample also records the centre-to-centre distance of its markers (as a fraction of the side),
so accuracy can be reported per distance bin.
"""
from __future__ import annotations

import numpy as np

NAME = "pairmatch"
NUM_CLASSES = 2
CHANNELS = 3

# Saturated RGB colours on a noise background of std NOISE (well separated from the noise).
PALETTE = np.array([[1.0, 0.15, 0.15], [0.15, 1.0, 0.15], [0.2, 0.35, 1.0], [1.0, 1.0, 0.2], [1.0, 0.2, 1.0], [0.2, 1.0, 1.0]],
                   dtype=np.float32)
NOISE = 0.15
COLOURS = 2

# Marker distance bins, as fractions of the image side (centre to centre); markers in different
# quadrants lie between about 1/8 and sqrt(2) * 7/8 of the side apart.
DISTANCE_EDGES = (0.0, 0.35, 0.55, 0.75, 1.5)


def marker_size(size: int) -> int:
    """Side of a marker in pixels: an eighth of the image (4 px at 32 px), at least 1."""
    return max(1, size // 8)


def generate(labels: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Images (n, 3, size, size) for the given labels (1 = same colour); meta holds ``distance``."""
    if size < 4 or size % 2:
        raise ValueError(f"pairmatch needs an even image side >= 4, got {size}; use e.g. 32")
    n = len(labels)
    m = marker_size(size)
    half = size // 2
    images = (rng.standard_normal((n, CHANNELS, size, size)) * NOISE).astype(np.float32)
    distance = np.empty(n, dtype=np.float32)
    for i, same in enumerate(labels):
        ca = rng.integers(0, COLOURS)
        cb = ca if same else (ca + rng.integers(1, COLOURS)) % COLOURS
        qa = rng.integers(0, 4)
        qb = (qa + rng.integers(1, 4)) % 4  # a different quadrant
        centres = []
        for quadrant, colour in ((qa, ca), (qb, cb)):
            oy, ox = (quadrant // 2) * half, (quadrant % 2) * half
            py = oy + rng.integers(0, half - m + 1)
            px = ox + rng.integers(0, half - m + 1)
            images[i, :, py:py + m, px:px + m] = PALETTE[colour][:, None, None]
            centres.append((py + m / 2, px + m / 2))
        distance[i] = np.hypot(centres[0][0] - centres[1][0], centres[0][1] - centres[1][1]) / size
    return images, {"distance": distance}


def distance_bin_labels(edges: tuple[float, ...] = DISTANCE_EDGES) -> list[str]:
    return [f"{lo:.2f}-{hi:.2f}" for lo, hi in zip(edges[:-1], edges[1:])]
