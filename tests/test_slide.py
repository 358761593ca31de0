"""Slide specifics the generic mechanism tests do not cover: re-parameterisation, the im2col baseline,
the frozen one-hot branch, the unmasked zero-padded borders (hand-computed), agreement with a
transcription of the official forward, and the exact dense `masked` forms."""
import pytest
import torch

import mechanisms
from mechanisms.reference import reference_forward
from perturb import perturbed




def official_forward(attn, x):
    """LeapLabTHU/Slide-Transformer SlideAttention.forward, transcribed (elementwise products and sums,
    the two convs applied separately), with attnbench's (3, heads, d) qkv layout."""
    B, H, W, C = x.shape
    h, d, k2 = attn.num_heads, attn.head_dim, attn.kernel_size**2
    qkv = attn.qkv(x).reshape(B, H, W, 3, h, d).permute(3, 0, 4, 5, 1, 2)  # 3, B, h, d, H, W
    q = qkv[0].reshape(B, h, d, 1, H, W) * attn.scale
    k, v = qkv[1].reshape(B * h, d, H, W), qkv[2].reshape(B * h, d, H, W)
    k = attn.shift_fixed(k) + attn.shift_learned(k)
    v = attn.shift_fixed(v) + attn.shift_learned(v)
    k = k.reshape(B, h, d, k2, H, W) + attn.relative_position_bias.view(1, h, 1, k2, 1, 1)
    v = v.reshape(B, h, d, k2, H, W)
    a = (q * k).sum(2, keepdim=True).softmax(dim=3)
    out = (a * v).sum(3).reshape(B, C, H, W).permute(0, 2, 3, 1)
    return attn.proj(out)


@pytest.mark.parametrize("H, W", [(5, 6), (1, 4)])
def test_matches_official_forward(H, W):
    attn = perturbed(mechanisms.build("slide", dim=8, num_heads=2)).double()
    x = torch.randn(2, H, W, 8, dtype=torch.float64)
    want = official_forward(attn, x)
    for backend in ("native", "im2col", "masked"):
        attn.backend = backend
        assert (attn(x) - want).abs().max().item() <= 1e-12, backend


def test_border_semantics_hand_computed_1x1():
    # A 1x1 map with k = 3: the centre offset (4) reads the token, the 8 others read zero padding, so
    # their key is bias_i + rpb_i and their value bias_i; all 9 receive softmax weight (no mask).
    d = 3
    attn = perturbed(mechanisms.build("slide", dim=d, num_heads=1, deformable=False)).double()
    x = torch.randn(1, 1, 1, d, dtype=torch.float64)
    q, k, v = (t[0, 0, 0] for t in attn.token_qkv(x))  # (d,) each
    b = attn.shift_fixed.bias.view(d, 9)  # channel c, offset i
    rpb = attn.relative_position_bias.view(9)
    keys = b.t() + rpb[:, None]  # 9, d
    values = b.t().clone()
    keys[4] = keys[4] + k
    values[4] = values[4] + v
    weights = torch.softmax(torch.stack([q @ keys[i] for i in range(9)]) * d**-0.5, 0)
    want = attn.proj(sum(weights[i] * values[i] for i in range(9)))
    got = attn(x)[0, 0, 0]
    assert weights.min() > 0  # border offsets are attended
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_corner_query_offsets_outside_read_zero_padding():
    # Top-left query of a 3x3 map: offsets (-1, *) and (*, -1) fall outside; changing the bias of an
    # outside offset must change the output (it is not masked).
    attn = perturbed(mechanisms.build("slide", dim=4, num_heads=1, deformable=False)).double()
    x = torch.randn(1, 3, 3, 4, dtype=torch.float64)
    before = attn(x)[0, 0, 0].clone()
    with torch.no_grad():
        attn.shift_fixed.bias.view(4, 9)[:, 0] += 1.0  # offset 0 = (-1, -1)
    assert (attn(x)[0, 0, 0] - before).abs().max() > 1e-3
    # The pattern holds only the real neighbours: 2x2 of the 3x3 window for the corner query.
    assert attn.pattern(3, 3).dense()[0, 0].view(3, 3).tolist() == [[True, True, False], [True, True, False], [False, False, False]]


@pytest.mark.parametrize("backend", ["native", "im2col", "masked"])
@pytest.mark.parametrize("deformable", [True, False])
def test_reparameterize_changes_no_output(backend, deformable):
    attn = perturbed(mechanisms.build("slide", dim=16, num_heads=2, deformable=deformable, backend=backend)).eval()
    x = torch.randn(2, 9, 11, 16)
    before = attn(x)
    flops_before = attn.flops(9, 11)
    attn.reparameterize()
    assert attn.reparameterized and attn.shift is not None
    assert attn.shift_fixed is None and attn.shift_learned is None
    assert (attn(x) - before).abs().max().item() <= 1e-5
    attn.reparameterize()  # idempotent
    assert (attn(x) - before).abs().max().item() <= 1e-5
    if backend == "native" and deformable:
        N, C = 99, 16
        assert flops_before["shift_conv"] == 4 * 81 * N * C
        assert attn.flops(9, 11)["shift_conv"] == 2 * 81 * N * C


def test_merged_forward_uses_the_single_conv():
    """After merging, the native kernel reads the merged conv's weights and bias (and nothing else is left)."""
    attn = perturbed(mechanisms.build("slide", dim=8, num_heads=2)).reparameterize()
    assert sum(isinstance(m, torch.nn.Conv2d) for m in attn.modules()) == 1
    attn(torch.randn(1, 4, 4, 8)).square().sum().backward()
    assert attn.shift.weight.grad.abs().sum() > 0 and attn.shift.bias.grad.abs().sum() > 0
    assert len(attn.shift_matrices_by_branch()) == 1


@pytest.mark.parametrize("H, W", [(7, 7), (6, 9), (1, 5)])
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_non_deformable_equals_im2col(H, W, kernel_size):
    attn = perturbed(mechanisms.build("slide", dim=16, num_heads=2, kernel_size=kernel_size, deformable=False))
    x = torch.randn(2, H, W, 16)
    native = attn(x)
    attn.backend = "im2col"
    torch.testing.assert_close(attn(x), native, rtol=1e-5, atol=1e-6)


def test_one_hot_branch_is_frozen_and_its_bias_trainable():
    k, d = 3, 4
    attn = mechanisms.build("slide", dim=8, num_heads=2, kernel_size=k)
    fixed = attn.shift_fixed
    assert not fixed.weight.requires_grad and fixed.bias.requires_grad
    assert attn.shift_learned.weight.requires_grad and attn.shift_learned.bias.requires_grad
    w = fixed.weight.view(d, k * k, k, k)
    for i in range(k * k):
        expected = torch.zeros(k, k)
        expected[i // k, i % k] = 1.0
        assert torch.equal(w[:, i], expected.expand(d, k, k))
    attn(torch.randn(1, 5, 5, 8)).sum().backward()
    assert fixed.weight.grad is None
    assert fixed.bias.grad is not None and fixed.bias.grad.abs().sum() > 0
    assert "shift_fixed.weight" not in {n for n, p in attn.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("deformable", [True, False])
@pytest.mark.parametrize("H, W", [(6, 5), (2, 3)])
def test_masked_backend_is_exact(deformable, H, W):
    attn = perturbed(mechanisms.build("slide", dim=8, num_heads=2, deformable=deformable, backend="masked")).double()
    x = torch.randn(2, H, W, 8, dtype=torch.float64)
    assert (attn(x) - reference_forward(attn, x)).abs().max().item() <= 1e-10


def test_flops_formula():
    C, H, W, k = 64, 56, 56, 3
    N = H * W
    attn = mechanisms.build("slide", dim=C, num_heads=2, kernel_size=k)
    assert attn.flops(H, W)["total"] == 4 * N * C * C + 2 * k**2 * N * C + 4 * k**4 * N * C
    assert attn.reparameterize().flops(H, W)["total"] == 4 * N * C * C + 2 * k**2 * N * C + 2 * k**4 * N * C
    im2col = mechanisms.build("slide", dim=C, num_heads=2, kernel_size=k, deformable=False, backend="im2col")
    assert im2col.flops(H, W)["total"] == 4 * N * C * C + 2 * k**2 * N * C


@pytest.mark.parametrize("kernel_size", [2, 0, True, 3.0])
def test_bad_kernel_size_is_a_clear_error(kernel_size):
    with pytest.raises(ValueError, match="kernel_size must be a positive odd int"):
        mechanisms.build("slide", dim=8, num_heads=2, kernel_size=kernel_size)
