"""The shared helpers of mechanisms/base.py, each checked on values worked out by hand."""
import pytest
import torch

import mechanisms
from mechanisms.base import (
    AttentionPattern,
    attend,
    pad_to_multiple,
    to_2tuple,
    valid_token_map,
    window_partition,
    window_reverse,
)


@pytest.mark.parametrize("wh,ww", [(2, 3), (4, 1), (4, 6)])
def test_window_partition_round_trip_and_order(wh, ww):
    x = torch.arange(2 * 4 * 6 * 3).view(2, 4, 6, 3)
    windows = window_partition(x, wh, ww)
    assert windows.shape == (2 * (4 // wh) * (6 // ww), wh * ww, 3)
    assert torch.equal(window_reverse(windows, wh, ww, 4, 6), x)
    # Windows are batch-major, then row-major over the window grid; tokens row-major inside a window.
    per_row, per_batch = 6 // ww, (4 // wh) * (6 // ww)
    for w in range(windows.shape[0]):
        b, wr, wc = w // per_batch, (w % per_batch) // per_row, w % per_row
        for t in range(wh * ww):
            assert torch.equal(windows[w, t], x[b, wr * wh + t // ww, wc * ww + t % ww])


def test_pad_to_multiple_pads_bottom_right_with_zeros():
    x = torch.ones(1, 5, 7, 2)
    y, pad_h, pad_w = pad_to_multiple(x, 3, 4)
    assert (pad_h, pad_w) == (1, 1) and y.shape == (1, 6, 8, 2)
    assert torch.equal(y[:, :5, :7], x)
    assert y[:, 5].abs().sum() == 0 and y[:, :, 7].abs().sum() == 0
    same, ph, pw = pad_to_multiple(x, 5, 7)
    assert (ph, pw) == (0, 0) and same is x


def test_valid_token_map():
    v = valid_token_map(2, 3, 4, 4)
    assert v.tolist() == [[True, True, True, False], [True, True, True, False], [False] * 4, [False] * 4]


def test_to_2tuple():
    assert to_2tuple(7, "pale_size") == (7, 7)
    assert to_2tuple((3, 5), "pale_size") == (3, 5)
    assert to_2tuple([2, 4], "pale_size") == (2, 4)
    for bad in (0, (3, 0), (1, 2, 3), "7", 2.0, True):
        with pytest.raises(ValueError, match="pale_size"):
            to_2tuple(bad, "pale_size")


def test_attention_pattern_dense_and_counts():
    rule = lambda h, qr, qc, kr, kc: (qr == kr) | (h == 1)  # noqa: E731  head 0: own row; head 1: everything
    p = AttentionPattern(2, 3, 2, rule, "rows_then_all")
    dense = p.dense()
    assert dense.shape == (2, 6, 6) and dense.dtype == torch.bool
    assert dense[0, 0].tolist() == [True, True, True, False, False, False]
    assert p.keys_per_query().tolist() == [[3] * 6, [6] * 6]


@pytest.mark.parametrize("mask_kind", ["bool", "float"])
def test_attend_backends_agree(mask_kind):
    q, k, v = (torch.randn(2, 3, 5, 4, dtype=torch.float64) for _ in range(3))
    allowed = torch.rand(5, 5) > 0.4
    allowed |= torch.eye(5, dtype=torch.bool)
    mask = allowed if mask_kind == "bool" else torch.zeros(5, 5, dtype=torch.float64).masked_fill(~allowed, float("-inf"))
    native = attend(q, k, v, mask, scale=0.5)
    math = attend(q, k, v, mask, scale=0.5, backend="math")
    logits = (q @ k.transpose(-1, -2) * 0.5).masked_fill(~allowed, float("-inf"))
    assert (native - math).abs().max() < 1e-12
    assert (math - logits.softmax(-1) @ v).abs().max() < 1e-12


def test_dependency_mask_dilates_by_the_conv_radius():
    class WithConvs(mechanisms.get("axial")):
        dependency_radius = 1

    plain = mechanisms.build("axial", 8, 2)
    dilated = WithConvs(8, 2)
    token = 1 * 5 + 0  # row 1, column 0 of a 4x5 map
    assert plain.dependency_mask(4, 5, token).int().tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0],
        [1, 0, 0, 0, 0],
    ]
    assert dilated.dependency_mask(4, 5, token).int().tolist() == [[1, 1, 1, 1, 1]] * 3 + [[1, 1, 0, 0, 0]]
