"""Tasks: deterministic for a seed, exactly balanced, disjoint splits, any size; the preview command."""
from __future__ import annotations

import numpy as np
import pytest

from attnbench.accuracy import tasks
from attnbench.accuracy.tasks import base, pairmatch


@pytest.mark.parametrize("name,size", [("pairmatch", 32), ("pairmatch", 16), ("pathfinder", 32), ("pathfinder-3", 32),
                                       ("digits", 24)])
def test_samples_are_deterministic_and_balanced(name, size):
    a = tasks.samples(name, size, 20, seed=3)
    b = tasks.samples(name, size, 20, seed=3)
    info = tasks.info(name)
    assert a.images.shape == (20, info.channels, size, size) and a.images.dtype == np.float32
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    if info.procedural:
        c = tasks.samples(name, size, 20, seed=4)
        assert not np.array_equal(a.images, c.images)
        assert np.bincount(a.labels, minlength=info.num_classes).tolist() == [20 // info.num_classes] * info.num_classes


def test_procedural_splits_are_balanced_disjoint_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path))
    train, test = tasks.load("pairmatch", 16, n_train=200, n_test=100, seed=1)
    assert np.bincount(train.labels).tolist() == [100, 100]
    assert np.bincount(test.labels).tolist() == [50, 50]
    assert not set(train.hashes()) & set(test.hashes())
    again_train, again_test = tasks.load("pairmatch", 16, n_train=200, n_test=100, seed=1)  # from the cache
    assert list(tmp_path.rglob("*.npz"))
    assert np.array_equal(again_train.images, train.images) and np.array_equal(again_test.meta["distance"], test.meta["distance"])


def test_a_train_sample_equal_to_a_test_sample_is_redrawn():
    """A generator with almost no entropy (4 possible images) must still give disjoint splits."""

    def tiny(labels, size, rng):
        images = np.zeros((len(labels), 1, size, size), dtype=np.float32)
        images[:, 0, 0, 0] = labels * 2 + rng.integers(0, 2, len(labels))
        return images, {}

    # 2 test images (one per class) leave 2 free images for the train split.
    train, test = base.procedural_splits(tiny, 2, 4, n_train=6, n_test=2, seed=0)
    assert not set(train.hashes()) & set(test.hashes())
    assert np.bincount(train.labels).tolist() == [3, 3]


def test_digits_splits_are_exactly_balanced_and_disjoint():
    train, test = tasks.load("digits", 16, n_train=0, n_test=0, seed=0)
    assert np.bincount(test.labels).tolist() == [50] * 10
    counts = np.bincount(train.labels)
    assert (counts == counts[0]).all() and counts[0] == 174 - 50  # the smallest class has 174 images
    assert not set(train.meta["index"]) & set(test.meta["index"])
    assert train.images.shape[1:] == (1, 16, 16)


def test_pairmatch_markers_sit_in_two_different_quadrants():
    size, m = 32, pairmatch.marker_size(32)
    data = tasks.samples("pairmatch", size, 40, seed=0)
    for img, y in zip(data.images, data.labels):
        marker = (img > 0.9).any(0)  # marker colours have a channel at >= 1; noise (std 0.15) almost never does
        quads = {(r >= size // 2) * 2 + (c >= size // 2) for r, c in zip(*np.nonzero(marker))}
        assert len(quads) == 2
        colours = [tuple(img[:, r, c].round(2)) for r, c in zip(*np.nonzero(marker))]
        assert (len(set(colours)) == 1) == bool(y)
    assert ((data.meta["distance"] > m / size) & (data.meta["distance"] < 1.42)).all()


def test_unknown_task_names_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        tasks.info("pathfindr")


def test_preview_writes_pngs_at_two_sizes(tmp_path):
    from attnbench.commands.tasks import preview

    paths = preview(tmp_path, sizes=(16, 32), names=["pairmatch", "digits"], n=4)
    assert sorted(p.name for p in paths) == ["digits-16.png", "digits-32.png", "pairmatch-16.png", "pairmatch-32.png"]
    assert all(p.stat().st_size > 0 and p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_pathfinder_records_the_circles_distance_and_short_paths_keep_them_close():
    """The distance meta is what the per-distance accuracy is read from; on 3-dash paths a same-path
    pair is about half as far apart as a different-path pair (the shortcut the README discusses)."""
    data = tasks.samples("pathfinder-3", 32, 200, seed=0)
    d, y = data.meta["distance"], data.labels
    assert d.shape == (200,) and (d > 0).all() and (d < 1.5).all()
    same, other = float(d[y == 1].mean()), float(d[y == 0].mean())
    assert 0.15 < same < 0.35 and other > 1.5 * same
    longer = tasks.samples("pathfinder-9", 32, 40, seed=0)
    assert float(longer.meta["distance"][longer.labels == 1].mean()) > same
