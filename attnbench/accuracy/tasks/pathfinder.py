"""Pathfinder: are the two circles on the same dashed path? Our own generator after LRA's Pathfinder.

Why our own: LRA's generator (drewlinsley/pathfinder, snakes2.py) calls SciPy functions that no
longer exist and needs OpenCV; its images can no longer be rebuilt. This one follows the same recipe
(Linsley et al. 2018; Tay et al. 2021) at any side length, in numpy only:

- two target "snakes", chains of ``contour_length`` short straight dashes separated by a gap, each
  dash turning by at most ``turn`` radians from the previous one; dashes may not touch any earlier
  stroke (a margin is kept), so paths never cross or merge;
- ``distractors`` shorter snakes of ``distractor_length`` dashes;
- one circle on the start of a randomly chosen target snake, the other on the end of the *same*
  snake (label 1) or of the *other* one (label 0), so in both classes both circles sit on path tips
  and only the connectivity differs.

The circles' distance is kept (``meta["distance"]``, a fraction of the side) so accuracy can be
read per distance bin: on short paths, "near means same path" is a shortcut a model can learn
without tracing anything, and the bins show whether it did.

Strokes are drawn with an anti-aliased distance field on a 2x canvas and averaged down. Lengths
scale with the side, so the task looks the same at 32 and 128 px; the difficulty presets follow
LRA's splits by contour length (6 = baseline, 9 = intermediate, 14 = hard).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_CLASSES = 2
CHANNELS = 1
ANTIALIAS = 2


@dataclass(frozen=True)
class Difficulty:
    contour_length: int  # dashes per target snake
    distractors: int
    distractor_length: int
    turn: float = 0.55  # max change of direction per dash, radians


PRESETS: dict[str, Difficulty] = {
    # The CPU tier: learnable by a 3-block backbone in 1500 steps at 8x8 tokens (suites/accuracy.yaml).
    # Short paths also make the circles' distance a strong cue (README, accuracy section).
    "pathfinder-3": Difficulty(contour_length=3, distractors=2, distractor_length=2),
    "pathfinder-4": Difficulty(contour_length=4, distractors=2, distractor_length=2),
    "pathfinder": Difficulty(contour_length=6, distractors=2, distractor_length=2),
    "pathfinder-9": Difficulty(contour_length=9, distractors=3, distractor_length=3),
    "pathfinder-14": Difficulty(contour_length=14, distractors=4, distractor_length=4),
}


@dataclass(frozen=True)
class _Geometry:
    """Sizes in canvas pixels (the 2x canvas), all scaled from a 32-px reference."""

    canvas: int
    dash: float
    gap: float
    half_thick: float
    margin: float
    marker_r: float

    @classmethod
    def for_size(cls, size: int) -> "_Geometry":
        u = size * ANTIALIAS / 32.0  # canvas pixels per reference pixel
        return cls(canvas=size * ANTIALIAS, dash=1.8 * u, gap=1.5 * u, half_thick=0.4 * u, margin=0.6 * u, marker_r=1.4 * u)


def _segment_distance(yy: np.ndarray, xx: np.ndarray, p0: tuple[float, float], p1: tuple[float, float]) -> np.ndarray:
    dy, dx = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((yy - p0[0]) * dy + (xx - p0[1]) * dx) / max(dy * dy + dx * dx, 1e-9), 0.0, 1.0)
    return np.hypot(yy - (p0[0] + t * dy), xx - (p0[1] + t * dx))


class _Canvas:
    def __init__(self, geo: _Geometry, turn: float) -> None:
        self.geo = geo
        self.turn = turn
        self.ink = np.zeros((geo.canvas, geo.canvas), dtype=np.float32)
        self.occupied = np.zeros((geo.canvas, geo.canvas), dtype=bool)

    def _window(self, p0: tuple[float, float], p1: tuple[float, float], pad: float):
        n = self.geo.canvas
        y0, y1 = max(int(min(p0[0], p1[0]) - pad), 0), min(int(max(p0[0], p1[0]) + pad) + 2, n)
        x0, x1 = max(int(min(p0[1], p1[1]) - pad), 0), min(int(max(p0[1], p1[1]) + pad) + 2, n)
        yy = np.arange(y0, y1)[:, None] + 0.5
        xx = np.arange(x0, x1)[None, :] + 0.5
        return (slice(y0, y1), slice(x0, x1)), _segment_distance(yy, xx, p0, p1)

    def fits(self, p0: tuple[float, float], p1: tuple[float, float]) -> bool:
        """Inside the canvas and clear (by the margin) of every stroke drawn so far."""
        g = self.geo
        edge = g.half_thick + 1
        if not (edge <= p1[0] <= g.canvas - edge and edge <= p1[1] <= g.canvas - edge):
            return False
        win, dist = self._window(p0, p1, g.half_thick + g.margin)
        return not (self.occupied[win] & (dist <= g.half_thick + g.margin)).any()

    def draw(self, p0: tuple[float, float], p1: tuple[float, float], half_thick: float | None = None) -> None:
        h = self.geo.half_thick if half_thick is None else half_thick
        win, dist = self._window(p0, p1, h + 1)
        self.ink[win] = np.maximum(self.ink[win], np.clip(h + 0.5 - dist, 0.0, 1.0))
        self.occupied[win] |= dist <= h

    def snake(self, dashes: int, rng: np.random.Generator, tries: int = 30):
        """Draw a snake of ``dashes`` dashes; returns its (start, end) tips, or None if it did not fit.

        Dashes are drawn as they are placed (so a snake cannot cross itself); the gap between
        consecutive dashes is larger than the margin, so a dash never collides with its predecessor.
        A snake that gets stuck is erased and restarted elsewhere.
        """
        g = self.geo
        for _ in range(tries):
            saved = self.ink.copy(), self.occupied.copy()
            lo, hi = g.marker_r + 2, g.canvas - g.marker_r - 2
            start = (float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi)))
            angle = float(rng.uniform(0, 2 * np.pi))
            pos, end, placed = start, start, 0
            for _ in range(dashes):
                for attempt in range(8):
                    # A blocked dash may bend further (up to 2.5x the usual turn) before the snake gives up.
                    turn = self.turn * (1 + attempt / 5)
                    a = angle + float(rng.uniform(-turn, turn)) if placed or attempt else angle
                    sy, sx = np.sin(a), np.cos(a)
                    end = (pos[0] + g.dash * sy, pos[1] + g.dash * sx)
                    if self.fits(pos, end):
                        break
                else:
                    break
                self.draw(pos, end)
                placed += 1
                angle = a
                pos = (end[0] + g.gap * sy, end[1] + g.gap * sx)
            if placed == dashes:
                return start, end
            self.ink, self.occupied = saved
        return None


def _one(same: bool, size: int, difficulty: Difficulty, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """One image and the circles' centre distance as a fraction of the side."""
    geo = _Geometry.for_size(size)
    for _ in range(200):
        canvas = _Canvas(geo, difficulty.turn)
        a = canvas.snake(difficulty.contour_length, rng)
        b = canvas.snake(difficulty.contour_length, rng) if a is not None else None
        if a is None or b is None:
            continue
        for _ in range(difficulty.distractors):
            canvas.snake(difficulty.distractor_length, rng, tries=5)
        if rng.integers(0, 2):
            a, b = b, a
        first, second = a[0], (a[1] if same else b[1])
        for tip in (first, second):
            canvas.draw(tip, tip, half_thick=geo.marker_r)
        distance = float(np.hypot(first[0] - second[0], first[1] - second[1])) / geo.canvas
        return canvas.ink.reshape(size, ANTIALIAS, size, ANTIALIAS).mean(axis=(1, 3)), distance
    raise RuntimeError(f"could not fit two paths of {difficulty.contour_length} dashes into {size} px after 200 tries")


def generator(name: str):
    """The generate(labels, size, rng) function of a difficulty preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown pathfinder preset {name!r}; choose one of {sorted(PRESETS)}")
    difficulty = PRESETS[name]

    def generate(labels: np.ndarray, size: int, rng: np.random.Generator):
        if size < 16:
            raise ValueError(f"{name} needs an image side >= 16 px to draw dashed paths, got {size}")
        drawn = [_one(bool(y), size, difficulty, rng) for y in labels]
        images = np.stack([image for image, _ in drawn])[:, None]
        distance = np.array([d for _, d in drawn], dtype=np.float32)
        return (images * 2 - 1).astype(np.float32), {"distance": distance}

    return generate
