"""Accuracy: the backbone, the structural sanity expectations, run validity, and the PairMatch separation."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from attnbench.accuracy.backbone import Backbone, layer_options
from attnbench.case import Case
from attnbench.metrics import MetricContext
from attnbench.metrics import accuracy as A


def _backbone(name, opts, grid=16):
    torch.manual_seed(0)
    return Backbone(name, opts, grid=(grid, grid), patch_size=2, in_channels=3, num_classes=2, dim=32, num_heads=2, depth=2)


def test_backbones_differ_only_in_attention():
    a, b = _backbone("global", {}), _backbone("axial", {})
    names = lambda m: {n for n, _ in m.named_parameters() if ".attn." not in n}  # noqa: E731
    assert names(a) == names(b)
    assert a(torch.randn(2, 3, 32, 32)).shape == (2, 2)
    # MACs: patch embed + per block (mechanism formula + MLP 2·N·C·2C) + head, computed by hand for global.
    N, C = 256, 32
    attn = 4 * N * C * C + 2 * N * N * C
    assert a.macs() == N * C * 3 * 4 + 2 * (attn + 2 * N * C * 2 * C) + C * 2


def test_sincos_position_embedding_is_fixed_and_encodes_rows_and_columns():
    from attnbench.accuracy.backbone import sincos_position_embedding

    pe = sincos_position_embedding((3, 5), 8)  # quarter = 2 frequencies: 1 and 1/100
    assert pe.shape == (3, 5, 8)
    y, x = 2, 4
    expect = torch.tensor([math.sin(y), math.sin(y / 100), math.cos(y), math.cos(y / 100),
                           math.sin(x), math.sin(x / 100), math.cos(x), math.cos(x / 100)])
    torch.testing.assert_close(pe[y, x], expect)
    # the code's similarity falls with distance along a row (what lets attention compare positions)
    wide = sincos_position_embedding((1, 16), 64)[0]
    sims = [float(wide[0] @ wide[d]) for d in range(16)]
    assert sims[:4] == sorted(sims[:4], reverse=True) and max(sims[1:]) < sims[0] and sims[1] > max(sims[8:])
    m = Backbone("global", {}, grid=(4, 4), patch_size=2, in_channels=1, num_classes=2, dim=16, num_heads=2, depth=1,
                 pos_embed="sincos")
    assert "pos_embed" not in dict(m.named_parameters()) and "pos_embed" in dict(m.named_buffers())
    learned = Backbone("global", {}, grid=(4, 4), patch_size=2, in_channels=1, num_classes=2, dim=16, num_heads=2, depth=1)
    assert sum(q.numel() for q in learned.parameters()) - sum(q.numel() for q in m.parameters()) == 4 * 4 * 16
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_position_embedding((4, 4), 18)
    with pytest.raises(ValueError, match="'sincos' or 'learned'"):
        Backbone("global", {}, grid=(4, 4), patch_size=2, in_channels=1, num_classes=2, dim=16, num_heads=2, depth=1,
                 pos_embed="rope")


def test_shifted_swin_alternates_like_its_blocks():
    opts = {"window_size": 8, "shift": 4}
    assert [layer_options("swin", opts, i)["shift"] for i in range(4)] == [0, 4, 0, 4]
    shifts = [blk.attn.shift for blk in _backbone("swin", opts).blocks]
    assert shifts == [0, 4]


def test_wrong_image_size_is_a_clear_error():
    with pytest.raises(ValueError, match="token grid"):
        _backbone("global", {})(torch.randn(1, 3, 64, 64))


@pytest.mark.parametrize("name,opts,expect", [
    ("global", {}, "learn"),
    ("swin", {"window_size": 8}, "chance"),  # windows are exactly the quadrants of the 16² grid
    ("swin", {"window_size": 8, "shift": 4}, None),
    ("swin", {"window_size": 7}, None),  # 7-windows straddle the quadrant border: no proof either way
    ("axial", {}, None),
    ("pale", {"pale_size": 4}, None),
])
def test_sanity_expectation_comes_from_the_pattern(name, opts, expect):
    assert A.sanity_expectation(name, opts, 32, 2, 16, 16, depth=2) == expect


def _results(rows):
    return pd.DataFrame(rows, columns=["label", "task", "height", "width", "acc_mean", "acc_expect", "acc_valid"])


def test_run_validity():
    ok = [("global", "pairmatch", 16, 16, 1.0, "learn", True), ("swin", "pairmatch", 16, 16, 0.5, "chance", True),
          ("axial", "pairmatch", 16, 16, 0.5, None, None), ("axial", "digits", 16, 16, 0.9, None, None)]
    assert A.run_validity(_results(ok)) == ("valid", [])
    bad = ok[:1] + [("swin", "pairmatch", 16, 16, 0.7, "chance", False)] + ok[2:]
    status, reasons = A.run_validity(_results(bad))
    assert status == "invalid" and "swin" in reasons[0] and "0.700" in reasons[0]
    status, reasons = A.run_validity(_results(ok[:1] + ok[2:]))
    assert status == "unchecked" and "chance" in reasons[0]


def _ctx(name, opts, task, **options):
    case = Case(mechanism=name, label=name, options=tuple(sorted(opts.items())), height=16, width=16, batch_size=1,
                dim=32, num_heads=2, dtype="float32", device="cpu", mode="train", task=task)
    return MetricContext(case=case, options=A.Options(**options), device=torch.device("cpu"), dtype=torch.float32)


def test_accuracy_needs_a_task():
    with pytest.raises(ValueError, match="needs a task"):
        A.measure(_ctx("global", {}, None))


@pytest.mark.slow
def test_short_digits_run_reports_every_column(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path))
    ctx = _ctx("axial", {}, "digits", steps=5, seeds=2, batch_size=16)
    row = A.measure(ctx)
    seeds = json.loads(row["acc_seeds"])
    assert len(seeds) == 2 and row["acc_mean"] == pytest.approx(sum(seeds) / 2, abs=1e-4)
    assert row["acc_std"] is not None and row["acc_steps"] == 5 and row["acc_test_n"] == 500
    assert row["acc_image_size"] == 32 and row["acc_chance"] == 0.1
    assert row["acc_expect"] is None and row["acc_valid"] is None  # digits carries no sanity check
    assert ctx.samples["acc_seeds"] == seeds or len(ctx.samples["acc_seeds"]) == 2


@pytest.mark.slow
def test_pairmatch_separates_global_from_windows(tmp_path, monkeypatch):
    """Global attention learns PairMatch; quadrant windows stay at chance (the suite's own sanity check)."""
    monkeypatch.setenv("ATTNBENCH_CACHE", str(tmp_path))
    common = dict(batch_size=32, n_train=4096, n_test=400)
    glob = A.measure(_ctx("global", {}, "pairmatch", steps=250, **common))
    win = A.measure(_ctx("swin", {"window_size": 8}, "pairmatch", steps=60, **common))
    assert glob["acc_mean"] >= 0.95 and glob["acc_valid"] is True
    assert win["acc_mean"] <= 0.55 and win["acc_valid"] is True
    assert set(json.loads(glob["acc_by_distance"])) == {"0.00-0.35", "0.35-0.55", "0.55-0.75", "0.75-1.50"}
