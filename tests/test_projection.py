"""The projections' inference path (oneDNN's linear on CPU) and the two-branch head split."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mechanisms
from attnbench.metrics.flop_counting import flop_counter_macs, fvcore_macs
from mechanisms import projection
from mechanisms.base import split_branches
from mechanisms.projection import Projection, linear, onednn_linear_available, uses_onednn

needs_onednn = pytest.mark.skipif(not onednn_linear_available(), reason="this torch build has no oneDNN linear")


def _layer(in_features=64, out_features=96, dtype=torch.float32, bias=True):
    torch.manual_seed(0)
    return Projection(in_features, out_features, bias=bias, dtype=dtype)


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.bfloat16, 1e-2)])
def test_inference_path_equals_f_linear(dtype, tol, bias):
    layer = _layer(dtype=dtype, bias=bias)
    x = torch.randn(2, 7, 5, 64, dtype=dtype)
    with torch.no_grad():
        assert uses_onednn(x, layer.weight, layer.bias)
        y = layer(x)
        expected = F.linear(x, layer.weight, layer.bias)
    assert y.shape == (2, 7, 5, 96) and y.dtype == dtype
    assert (y.float() - expected.float()).abs().max().item() <= tol * expected.float().abs().max().item()
    strided = torch.randn(2, 64, 9, dtype=dtype).transpose(1, 2)  # a non-contiguous input
    with torch.no_grad():
        assert (layer(strided).float() - F.linear(strided, layer.weight, layer.bias).float()).abs().max().item() <= tol * 10


def test_training_and_tracing_keep_f_linear():
    """oneDNN's op has no autograd formula: anything that needs a gradient, traces or casts takes F.linear."""
    layer = _layer()
    x = torch.randn(3, 64)
    assert not uses_onednn(x, layer.weight, layer.bias)  # grad enabled and the weight requires it
    assert not uses_onednn(x.double(), layer.weight.double())  # oneDNN does not take float64
    with torch.no_grad():
        meta = layer.to("meta")
        assert not uses_onednn(torch.empty(3, 64, device="meta"), meta.weight, meta.bias)  # counting on meta
        assert meta(torch.empty(3, 64, device="meta")).shape == (3, 96)
    layer = _layer()
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not uses_onednn(x, layer.weight, layer.bias)
    y = layer(x.requires_grad_(True))
    y.sum().backward()
    assert layer.weight.grad is not None and x.grad is not None
    torch.testing.assert_close(layer.weight.grad, torch.ones(96, 3) @ x.detach())
    traced = torch.jit.trace(layer.eval(), torch.randn(3, 64), check_trace=False)
    assert "aten::linear" in str(traced.graph) and "mkldnn" not in str(traced.graph)


def test_measured_limit_decides_by_width(monkeypatch):
    monkeypatch.setitem(projection.ONEDNN_MAX_IN_FEATURES, ("cpu", torch.float32), 32)
    with torch.no_grad():
        assert not uses_onednn(torch.randn(4, 64), torch.randn(8, 64))
        assert uses_onednn(torch.randn(4, 32), torch.randn(8, 32)) == onednn_linear_available()
    monkeypatch.delitem(projection.ONEDNN_MAX_IN_FEATURES, ("cpu", torch.float32))
    with torch.no_grad():
        assert not uses_onednn(torch.randn(4, 32), torch.randn(8, 32))
        torch.testing.assert_close(linear(torch.ones(2, 32), torch.ones(3, 32), torch.zeros(3)), torch.full((2, 3), 32.0))


def test_mechanisms_keep_linear_parameters_and_state_dict():
    m = mechanisms.build("swin", 32, 2)
    assert isinstance(m.qkv, nn.Linear) and isinstance(m.proj, nn.Linear)
    assert {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"} <= set(m.state_dict())
    plain = nn.Linear(32, 96)
    m.qkv.load_state_dict(plain.state_dict())
    torch.testing.assert_close(m.qkv.weight, plain.weight)


@needs_onednn
@pytest.mark.parametrize("name", ["swin", "axial", "pale", "slide"])
def test_counters_see_the_inference_projections(name):
    """FlopCounterMode on the CPU (not meta) counts oneDNN's linear like addmm; fvcore traces F.linear."""
    m = mechanisms.build(name, 32, 2).eval()
    x = torch.randn(1, 14, 14, 32)
    analytic = m.flops(14, 14)["total"]
    counted, by_op = flop_counter_macs(m, x)
    assert counted == analytic, by_op
    if name != "slide":  # slide's projections are batched GEMMs on the channels-first maps
        assert by_op.get("mkldnn._linear_pointwise") == m.linear_macs(14, 14)
    assert fvcore_macs(m, x)[0] == analytic


def test_split_branches_equals_slices_forward_and_backward():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 6, 5, dtype=torch.float64, requires_grad=True)
    first, second = split_branches(x, -2)
    torch.testing.assert_close(first, x[..., :3, :])
    torch.testing.assert_close(second, x[..., 3:, :])
    w1, w2 = torch.randn_like(first), torch.randn_like(second)
    (grad,) = torch.autograd.grad((first * w1).sum() + (second * w2.exp()).sum(), x)
    x2 = x.detach().requires_grad_(True)
    (expected,) = torch.autograd.grad((x2[..., :3, :] * w1).sum() + (x2[..., 3:, :] * w2.exp()).sum(), x2)
    torch.testing.assert_close(grad, expected)
    with pytest.raises(ValueError, match="odd"):
        split_branches(torch.zeros(2, 5), 1)
