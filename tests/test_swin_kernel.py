"""Swin's fast path: both attention paths (explicit and SDPA) and the per-size mask cache.

The cache holds what depends only on (H, W, shift, device, dtype); these tests make sure it never
serves a mask across sizes or shifts and that the bias stays a differentiable read of the table.
"""
import pytest
import torch

import mechanisms
from mechanisms import swin as swin_module
from mechanisms.reference import reference_forward


@pytest.fixture(params=[True, False], ids=["explicit", "sdpa"])
def path(request, monkeypatch):
    monkeypatch.setitem(swin_module.EXPLICIT, ("cpu", torch.float64), request.param)
    return request.param


def _swin(**opts):
    torch.manual_seed(0)
    m = mechanisms.build("swin", 16, 2, **opts).double()
    with torch.no_grad():
        m.relative_position_bias_table.normal_()  # a bias that matters
    return m


@pytest.mark.parametrize("opts", [{}, {"shift": 3}, {"window_size": 4, "shift": 2}])
@pytest.mark.parametrize("H,W", [(14, 14), (13, 17), (9, 5)])
def test_both_paths_match_the_reference_with_gradients(path, opts, H, W):
    m = _swin(**opts).train()
    x = torch.randn(2, H, W, 16, dtype=torch.float64, requires_grad=True)
    out, ref = m(x), reference_forward(m, x, dtype=None)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    g = torch.randn_like(out)
    fast = torch.autograd.grad(out, [x, m.relative_position_bias_table], g)
    slow = torch.autograd.grad(ref, [x, m.relative_position_bias_table], g)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    assert fast[1].abs().sum() > 0  # the bias gather is differentiable


def test_cache_serves_each_size_and_shift_its_own_mask(path):
    """Alternate sizes and shifts on one module: every call equals a fresh module's (no stale mask)."""
    m = _swin(shift=3).eval()
    fresh = {s: _swin(shift=s).eval() for s in (0, 3)}
    xs = {hw: torch.randn(1, *hw, 16, dtype=torch.float64) for hw in [(14, 14), (13, 17), (21, 14), (7, 7)]}
    with torch.no_grad():
        for _ in range(2):
            for shift in (3, 0):
                m.shift = shift
                for hw, x in xs.items():
                    torch.testing.assert_close(m(x), fresh[shift](x), rtol=0, atol=0)
                    torch.testing.assert_close(m(x), reference_forward(m, x), rtol=0, atol=1e-10)
    masks = {k for k in m._mask_cache if isinstance(k[0], int)}  # (H, W, shift, device, dtype)
    orders = {k for k in m._mask_cache if k[0] == "order"}  # (tag, H, W, shift, device)
    assert masks and orders and {(k[0], k[1]) for k in masks} | {(k[1], k[2]) for k in orders} <= set(xs)
    assert len(m._mask_cache) <= 16


def test_cached_mask_is_built_once_per_size_and_not_saved():
    m = _swin(shift=3)
    calls = []
    original = m.window_mask
    m.window_mask = lambda *a, **k: calls.append(a[:3]) or original(*a, **k)
    x = torch.randn(1, 14, 14, 16, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(3):
            m(x)
    assert calls == [(14, 14, 3)]
    assert not any("mask" in k for k in m.state_dict())
    assert m.additive_mask(14, 14, 0, "cpu", torch.float64) is None  # nothing to mask: no tensor at all
    mask = m.additive_mask(13, 17, 0, "cpu", torch.float32)  # padding alone needs the key mask
    assert mask.dtype == torch.float32 and mask.shape == (6, 1, 49, 49)
    assert set(mask.unique().tolist()) == {0.0, float("-inf")}


def test_the_path_table_is_consulted_per_device_and_dtype(monkeypatch):
    m = _swin(shift=3)
    x = torch.randn(1, 14, 14, 16, dtype=torch.float64)
    seen = []
    m._attend_explicit = lambda *a: seen.append("explicit") or swin_module.SwinAttention._attend_explicit(m, *a)
    monkeypatch.setitem(swin_module.EXPLICIT, ("cpu", torch.float64), False)
    with torch.no_grad():
        m(x)
    assert seen == []
    monkeypatch.setitem(swin_module.EXPLICIT, ("cpu", torch.float64), True)
    with torch.no_grad():
        m(x)
    assert seen == ["explicit"]
    monkeypatch.delitem(swin_module.EXPLICIT, ("cpu", torch.float64))
    assert m._explicit(x) is swin_module.EXPLICIT_DEFAULT


@pytest.mark.parametrize("H,W,edges", [(28, 21, True), (14, 14, True), (13, 17, True), (9, 9, False), (7, 21, True)])
def test_shifted_mask_goes_to_the_edge_windows_when_the_rest_is_zero(monkeypatch, H, W, edges):
    """Often (always without padding) only the last row and column of shifted windows hold a mask: it is
    added to those two slices, in eval, training and the served form, and equals adding it whole."""
    monkeypatch.setitem(swin_module.EXPLICIT, ("cpu", torch.float64), True)
    m = _swin(shift=3)
    grid = (-(-H // 7), -(-W // 7))
    mask = m.additive_mask(H, W, m.effective_shift(H, W), "cpu", torch.float64)
    found = m._mask_edges(mask, grid) if mask is not None else None
    assert (found is not None) == edges
    if edges:
        whole = torch.zeros(*grid, 49, 49, dtype=torch.float64)
        whole[:, -1], whole[-1, :-1] = found
        torch.testing.assert_close(whole.view(-1, 1, 49, 49), mask, rtol=0, atol=0)  # nothing left out
    x = torch.randn(2, H, W, 16, dtype=torch.float64, requires_grad=True)
    for module in (m.train(), m.eval(), m.eval().deploy()):
        with torch.set_grad_enabled(module.training):
            out = module(x)
            ref = reference_forward(module, x, dtype=None)
            torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
        if module.training:
            g = torch.randn_like(out)
            fast = torch.autograd.grad(out, [x, m.relative_position_bias_table], g)
            slow = torch.autograd.grad(ref, [x, m.relative_position_bias_table], g)
            for a, b in zip(fast, slow):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_token_permutation_backward_is_the_inverse_gather():
    """SW-MSA's roll-and-cut permutation differentiates by gathering with the inverse permutation,
    which must equal index_select's own gradient (a scatter)."""
    torch.manual_seed(0)
    order = torch.randperm(30)
    inverse = torch.argsort(order)
    x = torch.randn(2, 30, 5, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 30, 5, dtype=torch.float64)
    out = swin_module.permute_tokens(x, order, inverse)
    torch.testing.assert_close(out, x[:, order], rtol=0, atol=0)
    (fast,) = torch.autograd.grad(out, x, g)
    (slow,) = torch.autograd.grad(x.index_select(1, order), x, g)
    torch.testing.assert_close(fast, slow, rtol=0, atol=0)
    assert out.grad_fn is not None and "PermuteTokens" in type(out.grad_fn).__name__
