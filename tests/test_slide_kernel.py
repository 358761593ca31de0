"""Slide's native kernel (mechanisms/slide_kernel.py) against the float64 reference, over several row
blocks (the block size is shrunk so small maps still split, with a short last block), on square,
non-square and non-divisible sizes, both forms, and its promise of never holding the k² shifted copies."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import mechanisms
from mechanisms import slide_kernel
from mechanisms.reference import reference_forward
from perturb import perturbed




@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of ~2 rows at these sizes: H = 7 gives blocks 2+2+2+1."""
    monkeypatch.setattr(slide_kernel, "ROW_BLOCK_ELEMENTS", 2 * 2 * 16 * 9 * 8)
    monkeypatch.setattr(slide_kernel, "ROW_BLOCK_ELEMENTS_TRAIN", 2 * 16 * 9 * 8)  # 1-2 rows: other borders
    return slide_kernel


def _blocks(B, heads, d, H, W, ks=3):
    return slide_kernel.Geometry(B, heads, d, H, W, ks, 1, 1.0).blocks()


@pytest.mark.parametrize("form", ["train", "deploy"])
@pytest.mark.parametrize("opts", [{}, {"kernel_size": 5}, {"deformable": False}])
@pytest.mark.parametrize("H,W", [(8, 8), (7, 10), (11, 5), (1, 6)])
def test_native_kernel_matches_reference_forward_and_gradients(small_blocks, form, opts, H, W):
    torch.manual_seed(0)
    attn = perturbed(mechanisms.build("slide", 16, 2, **opts)).double().train()
    if form == "deploy":
        attn = attn.deploy()
    if H >= 7:
        assert len(_blocks(2, 2, 8, H, W, attn.kernel_size)) > 1  # the test spans block borders
    x = torch.randn(2, H, W, 16, dtype=torch.float64, requires_grad=True)
    out, ref = attn(x), reference_forward(attn, x, dtype=None)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10)
    params = [p for p in attn.parameters() if p.requires_grad]
    g = torch.randn_like(out)
    fast = torch.autograd.grad(out, [x, *params], g)
    slow = torch.autograd.grad(ref, [x, *params], g)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    with torch.no_grad():  # the inference path (no autograd at all) computes the same
        torch.testing.assert_close(attn(x), out.detach(), rtol=0, atol=1e-12)


def test_hand_written_backward_equals_autograd_of_the_same_ops(small_blocks):
    torch.manual_seed(1)
    B, h, d, H, W, ks = 2, 2, 4, 7, 9, 3
    g = slide_kernel.Geometry(B, h, d, H, W, ks, 2, d**-0.5)
    maps = torch.randn(B, 3, h, d, H * W + 2 * g.pad, dtype=torch.float64)
    maps[..., : g.pad] = 0
    maps[..., -g.pad :] = 0
    inputs = [maps, torch.randn(2 * ks * ks, d * ks * ks), torch.randn(d * ks * ks, 2 * ks * ks),
              torch.randn(h, ks * ks, d), torch.randn(d, ks * ks)]
    inputs = [t.double().requires_grad_() for t in inputs]
    core = slide_kernel.SlideCore.apply(*inputs, g)
    plain = slide_kernel.slide_rows_autograd(*inputs, g, 0.0)
    torch.testing.assert_close(core, plain, rtol=0, atol=1e-12)
    grad = torch.randn_like(core)
    for a, b in zip(torch.autograd.grad(core, inputs, grad), torch.autograd.grad(plain, inputs, grad)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_attention_dropout_takes_the_autograd_path_and_trains():
    attn = mechanisms.build("slide", 16, 2, attn_drop=0.5).train()
    x = torch.randn(1, 6, 6, 16, requires_grad=True)
    torch.manual_seed(0)
    a = attn(x)
    torch.manual_seed(0)
    b = attn(x)
    torch.manual_seed(1)
    c = attn(x)
    assert torch.equal(a, b) and not torch.equal(a, c)  # dropout is applied (and seeded)
    a.sum().backward()
    assert x.grad.abs().sum() > 0
    attn.eval()
    with torch.no_grad():  # no dropout in eval: equal to a fresh no-dropout module with the same weights
        clean = mechanisms.build("slide", 16, 2)
        clean.load_state_dict(attn.state_dict())
        torch.testing.assert_close(attn(x), clean(x))


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("form", ["train", "deploy"])
def test_no_tensor_near_the_shifted_copies_ever_exists(form):
    """At 112², B=1, C=32 the shifted K and V copies would be 2·k²·N·C elements; the largest tensor of a
    training step (forward and backward) is a row block's products or the padded q/k/v maps, below half
    of one copy (k²·N·C / 2)."""
    torch.manual_seed(0)
    attn = mechanisms.build("slide", 32, 2)
    attn = attn.deploy() if form == "deploy" else attn
    x = torch.randn(1, 112, 112, 32, requires_grad=True)
    mode = _LargestTensor()
    with mode:
        attn(x).sum().backward()
    assert mode.largest < 9 * 112 * 112 * 32 / 2, mode.largest
    assert mode.largest <= max(slide_kernel.ROW_BLOCK_ELEMENTS, 3 * 32 * (112 * 112 + 2 * 113)), mode.largest
