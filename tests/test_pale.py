"""Pale specifics the generic mechanism tests do not cover: the interlaced pattern against hand-computed
cases, the reshape-only fast path (no gather) at sizes that divide and not, the conv projections, and
the paper's FLOPs formula."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import mechanisms
from mechanisms.pale import interlaced_groups
from mechanisms.reference import reference_forward


def _seen(attn, H, W, head, row, col):
    """Set of (row, col) keys that head `head` of query (row, col) may attend."""
    allowed = attn.pattern(H, W).dense()[head, row * W + col].view(H, W)
    return {(r, c) for r in range(H) for c in range(W) if allowed[r, c]}


def test_pattern_hand_computed_6x6_pale3():
    # H = W = 6, pale 3: N_r = N_c = 2 groups; row groups {0, 2, 4} and {1, 3, 5}, same for columns.
    attn = mechanisms.build("pale", dim=8, num_heads=2, pale_size=3)
    assert _seen(attn, 6, 6, head=0, row=1, col=4) == {(r, c) for r in (1, 3, 5) for c in range(6)}
    assert _seen(attn, 6, 6, head=1, row=1, col=4) == {(r, c) for r in range(6) for c in (0, 2, 4)}
    assert _seen(attn, 6, 6, head=0, row=4, col=0) == {(r, c) for r in (0, 2, 4) for c in range(6)}


def test_pattern_hand_computed_non_divisible():
    # H = 7, W = 5, pale (3, 2): N_r = ceil(7/3) = 3 row groups {0,3,6}, {1,4}, {2,5};
    # N_c = ceil(5/2) = 3 column groups {0,3}, {1,4}, {2}.
    attn = mechanisms.build("pale", dim=8, num_heads=2, pale_size=(3, 2))
    assert _seen(attn, 7, 5, 0, 6, 2) == {(r, c) for r in (0, 3, 6) for c in range(5)}
    assert _seen(attn, 7, 5, 0, 4, 0) == {(r, c) for r in (1, 4) for c in range(5)}
    assert _seen(attn, 7, 5, 1, 0, 2) == {(r, 2) for r in range(7)}
    assert _seen(attn, 7, 5, 1, 3, 4) == {(r, c) for r in range(7) for c in (1, 4)}


@pytest.mark.parametrize(
    "length, size, expected",
    [(56, 7, (8, 7)), (13, 7, (2, 7)), (8, 7, (2, 4)), (5, 7, (1, 5)), (1, 7, (1, 1)), (7, 3, (3, 3)), (10, 4, (3, 4))],
)
def test_interlaced_groups(length, size, expected):
    groups, per_group = interlaced_groups(length, size)
    assert (groups, per_group) == expected
    # The padded length holds every line exactly once, with at most one partly empty slot per group.
    assert length <= groups * per_group < length + groups


@pytest.mark.parametrize("H, W", [(6, 6), (12, 9), (13, 17), (8, 5), (2, 11)])
@pytest.mark.parametrize("pale_size, conv_proj", [(3, True), ((2, 4), False), (7, True)])
def test_fast_path_equals_reference(H, W, pale_size, conv_proj):
    attn = mechanisms.build("pale", dim=16, num_heads=4, pale_size=pale_size, conv_proj=conv_proj).double()
    x = torch.randn(2, H, W, 16, dtype=torch.float64)
    assert (attn(x) - reference_forward(attn, x)).abs().max().item() <= 1e-10


class _OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("H, W", [(14, 14), (13, 17)])
def test_native_uses_reshapes_not_gather(H, W):
    attn = mechanisms.build("pale", dim=16, num_heads=2, pale_size=7)
    log = _OpLog()
    with log, torch.no_grad():
        attn(torch.randn(1, H, W, 16))
    assert not log.ops & {"gather", "index", "index_select", "take", "take_along_dim", "scatter"}, log.ops
    assert "convolution" in log.ops


def test_conv_projections_match_separate_depthwise_then_pointwise():
    # Q, K, V: each its own depthwise 3x3 conv over all C channels (zero padding), then its Linear(C, C).
    C, heads, H, W = 8, 2, 5, 7
    attn = mechanisms.build("pale", dim=C, num_heads=heads)
    x = torch.randn(2, H, W, C)
    q, k, v = attn.token_qkv(x)
    w_dw = attn.dwconv.weight.view(C, 3, 1, 3, 3)
    w_pw, b_pw = attn.qkv.weight.view(3, C, C), attn.qkv.bias.view(3, C)
    for j, got in enumerate((q, k, v)):
        local = F.conv2d(x.permute(0, 3, 1, 2), w_dw[:, j], padding=1, groups=C).permute(0, 2, 3, 1)
        want = F.linear(local, w_pw[j], b_pw[j]).reshape(2, H * W, heads, C // heads).transpose(1, 2)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_dependency_hand_computed_without_conv():
    # conv_proj=False, 6x6, pale 3: output (1, 4) reads rows {1, 3, 5} (branch A) and columns {0, 2, 4} (branch B).
    attn = mechanisms.build("pale", dim=8, num_heads=2, pale_size=3, conv_proj=False).double()
    x = torch.randn(1, 6, 6, 8, dtype=torch.float64, requires_grad=True)
    attn(x)[0, 1, 4].sum().backward()
    reached = x.grad[0].abs().sum(-1) > 0
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[[1, 3, 5], :] = True
    expected[:, [0, 2, 4]] = True
    assert torch.equal(reached, expected)
    assert torch.equal(attn.dependency_mask(6, 6, 1 * 6 + 4), expected)


def test_flops_match_paper_formula_when_sizes_divide():
    C, H, W = 64, 56, 56
    attn = mechanisms.build("pale", dim=C, num_heads=2, pale_size=7)
    N = H * W
    assert attn.flops(H, W)["total"] == 4 * N * C * C + N * C * (7 * W + 7 * H + 27)
    plain = mechanisms.build("pale", dim=C, num_heads=2, pale_size=(7, 4), conv_proj=False)
    assert plain.flops(H, W)["total"] == 4 * N * C * C + N * C * (7 * W + 4 * H)


def test_flops_count_padded_queries():
    # H = 13, pale 7: 2 groups of 7 rows -> 14 rows computed (one padded); W = 17, pale 7: 3 groups of 6 columns -> 18.
    C = 16
    attn = mechanisms.build("pale", dim=C, num_heads=2, pale_size=7, conv_proj=False)
    rows = 14 * 17 * (7 * 17) * C  # 2 · queries · keys · C/2
    cols = 13 * 18 * (6 * 13) * C
    assert attn.flops(13, 17)["attention"] == rows + cols


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_heads": 3}, "odd"),
        ({"pale_size": 0}, ">= 1"),
        ({"pale_size": (7, 7, 7)}, "pair"),
        ({"conv_proj": "yes"}, "conv_proj"),
        ({"backend": "im2col"}, "unknown backend"),
    ],
)
def test_bad_options_are_clear_errors(kwargs, message):
    opts = {"dim": 12, "num_heads": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        mechanisms.build("pale", **opts)


def test_conv_projections_start_near_identity():
    """Centre tap 1 plus small noise: the module starts as plain-projection attention (see init_near_identity_)."""
    import mechanisms

    w = mechanisms.build("pale", 16, 2).dwconv.weight  # (3C, 1, 3, 3)
    centre = w[:, 0, 1, 1]
    off = w[:, 0].flatten(1)[:, [0, 1, 2, 3, 5, 6, 7, 8]]
    assert torch.all((centre - 1).abs() <= 0.04) and torch.all(off.abs() <= 0.04)
    assert off.abs().min() > 0  # every tap alive
