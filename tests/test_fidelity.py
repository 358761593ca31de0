"""Fidelity: every mechanism's kernel against its declared pattern and its float64 reference.

The implied-mask test runs each kernel with one-hot tokens and V = I (d = N, positional terms off),
so its output *is* the attention matrix P: P's non-zeros must equal the declared pattern exactly
and each row must hold all the probability. Slide is the one mechanism whose border queries also
attend keys that are not tokens (zero-padded offsets, official semantics): its ``dense_form``
declares them as virtual keys, and the test requires the mass P puts on real tokens plus the mass
the reference puts on the declared virtual keys to be exactly 1, with exactly k² - |pattern row|
virtual keys per query. Nothing is loosened for it; the bookkeeping is just explicit.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import mechanisms
from attnbench.metrics.fidelity import REL_L2_CAP, compare
from mechanisms.base import AttentionBase, AttentionPattern
from mechanisms.reference import DenseForm
from mechanisms.slide import window_rule

# Options that make each built-in's pattern non-trivial on small ragged grids (windows, stripes and
# groups that do not divide 7 x 9).
SMALL_OPTIONS = {
    "swin": [{"window_size": 4}, {"window_size": 4, "shift": 2}],
    "cswin": [{"split_size": 2}],
    "pale": [{"pale_size": 3}],
    "slide": [{"kernel_size": 3}],
}
# Options that switch off what is not attention: Pale's depthwise conv in front of q/k/v, Slide's
# learnable shift branch (which mixes neighbours into each value, so V = I would not give P).
IMPLIED_MASK_OPTIONS = {"conv_proj": False, "deformable": False}
NONZERO = 1e-30  # a -100 logit fill (Swin's official choice) gives e^-100 ~ 4e-44: "zero"


def _cases() -> list[tuple[str, dict]]:
    return [(name, opts) for name in mechanisms.available() for opts in SMALL_OPTIONS.get(name, [{}])]


def _ids(cases):
    return [f"{n}-{'-'.join(f'{k}{v}' for k, v in o.items())}" for n, o in cases]


CASES = _cases()


def _implied_module(name: str, opts: dict, H: int, W: int, heads: int = 2) -> tuple[AttentionBase, Tensor]:
    """A float64 module with V = I per head, proj = I, everything else but q/k zeroed, and one-hot input."""
    N = H * W
    valid = mechanisms.options(name)
    extra = {k: v for k, v in IMPLIED_MASK_OPTIONS.items() if k in valid}
    torch.manual_seed(0)
    m = mechanisms.build(name, heads * N, heads, **opts, **extra).double()
    C = m.dim
    with torch.no_grad():
        for pname, p in m.named_parameters():
            if p.requires_grad and not pname.startswith(("qkv.", "proj.")):
                p.zero_()  # positional terms (bias tables, LePE, shift-conv biases) off
        w = torch.zeros(3 * C, C, dtype=torch.float64)
        w[:C, :N] = 0.1 * torch.randn(C, N, dtype=torch.float64)  # q: small, so no exp underflow
        w[C:2 * C, :N] = 0.1 * torch.randn(C, N, dtype=torch.float64)  # k
        for h in range(heads):
            w[2 * C + h * N: 2 * C + (h + 1) * N, :N] = torch.eye(N, dtype=torch.float64)  # v_t = e_t in every head
        m.qkv.weight.copy_(w)
        m.qkv.bias.zero_()
        m.proj.weight.copy_(torch.eye(C, dtype=torch.float64))
        m.proj.bias.zero_()
    x = torch.zeros(1, H, W, C, dtype=torch.float64)
    x.view(N, C)[torch.arange(N), torch.arange(N)] = 1.0  # token t carries e_t
    return m, x


def _virtual_mass(m: AttentionBase, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """From the reference's dense form: (P over real tokens, mass on declared virtual keys, #virtual keys).

    A virtual key is an allowed key whose value is not a token's (all-zero here, since V = I and the
    conv biases are off); mechanisms without ``dense_form`` have none.
    """
    H, W = x.shape[1:3]
    N = H * W
    form_fn = getattr(m, "dense_form", None)
    if form_fn is None:
        zeros = torch.zeros(m.num_heads, N, dtype=torch.float64)
        return None, zeros, zeros
    form: DenseForm = form_fn(x)
    logits = torch.einsum("bhnd,bhmd->bhnm", form.q, form.k) * m.scale
    if form.logit_bias is not None:
        logits = logits + form.logit_bias
    allowed = form.allowed.expand_as(logits)
    weights = torch.softmax(logits.masked_fill(~allowed, float("-inf")), dim=-1)[0]  # h, N, M
    virtual = (form.v[0].abs().sum(-1) == 0)[:, None, :] & allowed[0]  # h, N, M
    p_real = torch.einsum("hnm,hmd->hnd", weights, form.v[0])  # h, N, N (V = I)
    return p_real, (weights * virtual).sum(-1), virtual.sum(-1).double()


@pytest.mark.parametrize("H,W", [(8, 8), (7, 9)])
@pytest.mark.parametrize("name,opts", CASES, ids=_ids(CASES))
def test_implied_mask_equals_declared_pattern(name, opts, H, W):
    m, x = _implied_module(name, opts, H, W)
    N, heads = H * W, m.num_heads
    with torch.no_grad():
        P = m(x).view(N, heads, N).transpose(0, 1)  # heads, queries, keys
        declared = m.pattern(H, W).dense()
        p_ref, virtual_mass, n_virtual = _virtual_mass(m, x)
    assert torch.equal(P.abs() > NONZERO, declared), "attention non-zeros differ from the declared pattern"
    assert (P >= 0).all()
    # Every row holds all the probability: on real tokens, plus on the declared virtual keys.
    torch.testing.assert_close(P.sum(-1) + virtual_mass, torch.ones(heads, N, dtype=torch.float64), rtol=0, atol=1e-12)
    if p_ref is not None:
        torch.testing.assert_close(P, p_ref, rtol=0, atol=1e-12)
    if name == "slide":  # each query has exactly k² keys: in-grid neighbours plus out-of-grid virtual ones
        k2 = opts["kernel_size"] ** 2
        assert torch.equal(n_virtual + declared.sum(-1).double(), torch.full_like(n_virtual, k2))
        assert (virtual_mass[n_virtual == 0] == 0).all() and (virtual_mass[n_virtual > 0] > 0).all()
    else:
        assert (virtual_mass == 0).all()


def _backends(name: str) -> list[str]:
    """Backends that run on this CPU in float64 with gradients (flex and xformers do not)."""
    cls = mechanisms.get(name)
    return [b for b in cls.backends if cls.unavailable_reason(b, "cpu", torch.float64, "train") is None]


@pytest.mark.parametrize("name,opts", CASES, ids=_ids(CASES))
def test_float64_error_of_every_backend_is_below_1e10(name, opts):
    for backend in _backends(name):
        torch.manual_seed(0)
        m = mechanisms.build(name, 16, 2, **opts, backend=backend).double()
        x = torch.randn(2, 7, 9, 16, dtype=torch.float64)
        row = compare(m, x, train=True)
        assert row["fid_max_abs"] <= 1e-10, (backend, row["fid_max_abs"])
        assert row["fid_grad_max_abs"] <= 1e-10, (backend, row["fid_grad_max_abs"])
        assert row["fid_pass"], (backend, row.get("fid_reason"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name,opts", CASES, ids=_ids(CASES))
def test_native_kernels_pass_the_rule_in_low_precision(name, opts, dtype):
    torch.manual_seed(0)
    m = mechanisms.build(name, 32, 2, **opts).to(dtype)
    x = torch.randn(2, 9, 11, 32).to(dtype)
    row = compare(m, x, train=True)
    assert row["fid_pass"], row.get("fid_reason")
    assert row["fid_rel_l2"] <= REL_L2_CAP[dtype]
    assert 0 < row["fid_base_max_abs"]  # the naive baseline really ran in the low dtype


class ZeroPaddedLocal(AttentionBase):
    """Test-only, deliberately wrong: declares the clipped k x k neighbourhood (padded keys masked)
    but computes it with F.unfold over zero-padded k and v and no mask, so border queries also give
    softmax weight exp(0) to padding (the timm/Slide-style bug the rule must catch)."""

    mechanism_name = "zero_padded_local"

    def __init__(self, dim: int, num_heads: int, kernel_size: int = 5, **kw) -> None:
        super().__init__(dim, num_heads, **kw)
        self.kernel_size = kernel_size

    def pattern(self, H: int, W: int) -> AttentionPattern:
        return AttentionPattern(H, W, self.num_heads, window_rule(self.kernel_size // 2), "local")

    def _forward_native(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        k2, pad = self.kernel_size**2, self.kernel_size // 2
        q, k, v = self.token_qkv(x)  # B, h, N, d

        def unfold(t: Tensor) -> Tensor:  # B, h, N, d -> B, h, N, k², d (zeros outside the map)
            grid = t.transpose(2, 3).reshape(B * self.num_heads, self.head_dim, H, W)
            cols = F.unfold(grid, self.kernel_size, padding=pad).view(B, self.num_heads, self.head_dim, k2, H * W)
            return cols.permute(0, 1, 4, 3, 2)

        logits = torch.einsum("bhnd,bhnkd->bhnk", q * self.scale, unfold(k))
        out = torch.einsum("bhnk,bhnkd->bhnd", logits.softmax(-1), unfold(v))
        return self.merge_heads(out, H, W)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_unmasked_padding_fails_the_rule_while_cosine_stays_high(dtype):
    torch.manual_seed(0)
    m = ZeroPaddedLocal(32, 2).to(dtype)
    x = torch.randn(2, 16, 16, 32).to(dtype)
    row = compare(m, x, train=True)
    assert not row["fid_pass"]
    assert row["fid_cosine"] > 0.98  # why cosine must never be the gate
    assert row["fid_rel_l2"] > 5 * REL_L2_CAP[dtype]


def test_masked_version_of_the_same_kernel_passes():
    """Control for the test above: the same declared pattern, computed by the generic masked backend."""
    torch.manual_seed(0)
    m = ZeroPaddedLocal(32, 2, backend="masked")
    row = compare(m, torch.randn(2, 16, 16, 32), train=True)
    assert row["fid_pass"], row.get("fid_reason")
