"""Receptive field: keys per query and layers-to-full-reach against hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest

from attnbench.metrics.receptive_field import area_fraction, erf_map, layer_masks, layers_to_full, structure

# (mechanism, options, side, keys per query (union over heads): mean, min, max, layers to full reach)
# Hand computations:
# - global: every key, N = side²; one layer.
# - axial: own row ∪ own column = W + H - 1; two layers (row hop to the key's column, column hop).
# - cswin sw (dividing the side): sw full columns ∪ sw full rows = sw·H + sw·W - sw²; two layers, the
#   same hop argument as axial (16, sw 4: 64 + 64 - 16 = 112; 12, sw 2: 24 + 24 - 4 = 44).
# - pale s (interlaced groups of s rows/columns spaced side/s apart): s·W + s·H - s²; two layers
#   (16, s 4: 112; 14, s 7: 98 + 98 - 49 = 147).
# - swin M = 7, shift 3, alternating W/SW starting with W, n = side / 7 windows per axis. Per axis
#   the reach is an interval: W windows [0,6], [7,13], ...; SW groups [0,2], [3,9], [10,16], ... .
#   Token 0 grows [0,6] -> [0,9] -> [0,13] -> [0,16] -> ... gaining 3 then 4 tokens per layer;
#   the far end needs 2n - 1 layers (starting with SW instead leaves it one short): 56² -> 15,
#   28² -> 7. Every window holds M² = 49 tokens.
# - swin 8 without shift on 16²: 4 fixed quadrants of 64 tokens; never.
# - a 3 x 3 local kernel (slide k 3) on s²: interior 9 keys, edge 6, corner 4:
#   ((s-2)²·9 + 4(s-2)·6 + 4·4) / s²; reach grows by one ring per layer, the Chebyshev distance
#   between opposite corners is s - 1: 56² -> 55 layers, 16² -> 15.
HAND = [
    ("global", {}, 16, 256, 256, 256, 1),
    ("global", {}, 12, 144, 144, 144, 1),
    ("axial", {}, 16, 31, 31, 31, 2),
    ("axial", {}, 12, 23, 23, 23, 2),
    ("cswin", {"split_size": 4}, 16, 112, 112, 112, 2),
    ("cswin", {"split_size": 2}, 12, 44, 44, 44, 2),
    ("pale", {"pale_size": 4}, 16, 112, 112, 112, 2),
    ("pale", {"pale_size": 7}, 14, 147, 147, 147, 2),
    ("swin", {"window_size": 7, "shift": 3}, 56, 49, 49, 49, 15),
    ("swin", {"window_size": 7, "shift": 3}, 28, 49, 49, 49, 7),
    ("swin", {"window_size": 8}, 16, 64, 64, 64, None),
    ("slide", {"kernel_size": 3}, 56, (54**2 * 9 + 4 * 54 * 6 + 16) / 56**2, 4, 9, 55),
    ("slide", {"kernel_size": 3}, 16, (14**2 * 9 + 4 * 14 * 6 + 16) / 16**2, 4, 9, 15),
]


@pytest.mark.parametrize("name,opts,side,mean,lo,hi,layers", HAND, ids=[f"{h[0]}-{h[2]}-{h[1]}" for h in HAND])
def test_keys_and_layers_to_full_match_hand_computation(name, opts, side, mean, lo, hi, layers):
    row = structure(name, opts, 16, 2, side, side, depth=2)
    assert row["rf_keys_mean"] == pytest.approx(mean, abs=1e-12)
    assert (row["rf_keys_min"], row["rf_keys_max"]) == (lo, hi)
    assert row["rf_layers_to_full"] == layers
    assert row["rf_reach_fraction"] == pytest.approx(mean / side**2)


def test_every_registered_mechanism_has_a_hand_value():
    import mechanisms

    # Built-in mechanisms only: other tests register test-only ones (misbehaving runner cases).
    builtin = {n for n in mechanisms.available() if mechanisms.get(n).__module__.startswith("mechanisms.")}
    assert builtin >= {"global", "swin", "cswin", "axial", "pale", "slide"}
    assert {h[0] for h in HAND} >= builtin


def test_alternation_matters_only_for_shifted_swin():
    assert len(layer_masks("swin", {"window_size": 8, "shift": 4}, 16, 2, 16, 16)) == 2
    assert len(layer_masks("swin", {"window_size": 8}, 16, 2, 16, 16)) == 1
    assert len(layer_masks("pale", {"pale_size": 4}, 16, 2, 16, 16)) == 1
    # W then SW on 16² with M = 8, s = 4: [0,7] -> [0,11] -> [0,15]: three layers.
    assert structure("swin", {"window_size": 8, "shift": 4}, 16, 2, 16, 16)["rf_layers_to_full"] == 3


def test_layers_to_full_on_a_line_graph():
    """A chain 0-1-2-...-9 (neighbours only) needs 9 layers; two disconnected halves never connect."""
    n = 10
    chain = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]) <= 1
    assert layers_to_full([chain]) == 9
    halves = (np.arange(n)[:, None] < 5) == (np.arange(n)[None, :] < 5)
    assert layers_to_full([halves]) is None


def test_erf_of_windows_is_confined_to_the_window_and_global_spreads_more():
    win = erf_map("swin", {"window_size": 8}, 16, 2, 16, 16, depth=2, seeds=2, batch=4)
    glob = erf_map("global", {}, 16, 2, 16, 16, depth=2, seeds=2, batch=4)
    assert win.sum() == pytest.approx(1.0) and glob.sum() == pytest.approx(1.0)
    # The centre token (8, 8) sits in the bottom-right quadrant window: gradient exactly there, nowhere else.
    inside = np.zeros((16, 16), dtype=bool)
    inside[8:, 8:] = True
    assert np.array_equal(win > 0, inside)
    assert (glob > 0).all()
    assert area_fraction(glob) > area_fraction(win)


def test_area_fraction():
    erf = np.array([0.5, 0.3, 0.15, 0.05])
    assert area_fraction(erf, 0.5) == 0.25
    assert area_fraction(erf, 0.95) == 0.75
    assert area_fraction(np.full(10, 0.1), 0.95) == 1.0
