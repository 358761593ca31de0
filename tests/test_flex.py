"""The flex backend: generated from each pattern rule, equal to the float64 reference, block-sparse for real.

Compiling flex on CPU costs seconds per (mechanism, shape), so the compiled tests share one module
size (DIM, HEADS, batch 2) and two maps: 14x14 (square) and 13x17 (non-square, not a multiple of any
window, stripe or pale size, so every padding path runs). The layout tests need no compiler: they
rebuild the dense mask the kernel will apply (full blocks, partial blocks through mask_mod, skipped
blocks) and compare it with the pattern.
"""
from __future__ import annotations

import pytest
import torch

import mechanisms
from attnbench.backend_support import case_unavailable_reason
from attnbench.case import Case
from attnbench.fidelity_rule import REL_L2_CAP, compare
from mechanisms.flex import build_layout, compiled_flex, flex_stats, flex_unavailable_reason
from mechanisms.reference import reference_forward

DIM, HEADS = 16, 4
SIZES = [(14, 14), (13, 17)]
# Every mechanism flex expresses, at its defaults (plus shifted Swin; Slide only without its learnable branch).
FLEX = [("global", {}), ("swin", {}), ("swin", {"shift": 3}), ("cswin", {}), ("axial", {}), ("pale", {}),
        ("slide", {"deformable": False})]
IDS = [f"{n}{o or ''}" for n, o in FLEX]


def _build(name: str, opts: dict, backend: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return mechanisms.build(name, DIM, HEADS, backend=backend, **opts).eval()


def _input(H: int, W: int, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(2, H, W, DIM, generator=torch.Generator().manual_seed(1)).to(dtype)


@pytest.mark.slow
@pytest.mark.parametrize("H,W", SIZES)
@pytest.mark.parametrize("name,opts", FLEX, ids=IDS)
def test_flex_equals_the_float64_reference_in_float32(name, opts, H, W):
    """Compiled flex, fp32: relative L2 error <= 1e-5 against the dense float64 reference."""
    m = _build(name, opts, "flex")
    x = _input(H, W)
    with torch.no_grad():
        y = m(x)
    ref = reference_forward(m, x)
    rel = ((y.double() - ref).norm() / ref.norm()).item()
    assert rel <= 1e-5, f"{name}{opts} {H}x{W}: rel L2 {rel:.3g}"
    stats = flex_stats(m)
    assert 0 <= stats["flex_block_sparsity"] < 1 and stats["compile_s"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("name,opts", FLEX, ids=IDS)
def test_state_dict_loads_across_backends(name, opts):
    """flex changes no parameter: native's state dict loads strictly into flex and gives the same output."""
    native = _build(name, opts, "native", seed=3)
    flex = _build(name, opts, "flex", seed=4)
    assert flex.state_dict().keys() == native.state_dict().keys()
    flex.load_state_dict(native.state_dict(), strict=True)
    x = _input(13, 17)
    with torch.no_grad():
        a, b = native(x), flex(x)
    assert ((a - b).norm() / a.norm()).item() <= 1e-5
    back = _build(name, opts, "native", seed=5)
    back.load_state_dict(flex.state_dict(), strict=True)  # and back
    with torch.no_grad():
        torch.testing.assert_close(back(x), a, rtol=0, atol=0)


@pytest.mark.slow
def test_bfloat16_flex_passes_the_fidelity_rule():
    m = _build("swin", {"shift": 3}, "flex").to(torch.bfloat16)
    row = compare(m, _input(13, 17, torch.bfloat16), train=False)
    assert row["fid_pass"], row.get("fid_reason")
    assert row["fid_rel_l2"] <= REL_L2_CAP[torch.bfloat16]


def _kernel_mask(layout, heads: int) -> torch.Tensor:
    """Dense (heads, Lq, Lkv) bool the kernel applies: full blocks all True, partial blocks mask_mod, others False."""
    bm = layout.block_mask
    bq, bkv = layout.block_size
    Lq, Lkv = layout.q_src.shape[1], layout.kv_src.shape[1]
    nq, nkv = Lq // bq, Lkv // bkv
    out = torch.zeros(heads, Lq, Lkv, dtype=torch.bool)
    q = torch.arange(Lq)[:, None]
    k = torch.arange(Lkv)[None, :]
    for h in range(heads):
        hh = torch.tensor(h)
        allowed = bm.mask_mod(torch.tensor(0), hh, q, k)
        for kind, num, idx in (("partial", bm.kv_num_blocks, bm.kv_indices), ("full", bm.full_kv_num_blocks, bm.full_kv_indices)):
            for qb in range(nq):
                for kb in idx[0, h, qb, : int(num[0, h, qb])].tolist():
                    rows, cols = slice(qb * bq, (qb + 1) * bq), slice(kb * bkv, (kb + 1) * bkv)
                    out[h, rows, cols] = True if kind == "full" else allowed[rows, cols]
        assert nkv == idx.shape[-1]
    return out


@pytest.mark.parametrize("kind,dtype", [("cpu", torch.float32), ("cpu", torch.bfloat16), ("cuda", torch.float32)],
                         ids=["cpu-fp32", "cpu-bf16", "gpu-blocks"])
@pytest.mark.parametrize("H,W", [(14, 14), (13, 17), (5, 9)])
@pytest.mark.parametrize("name,opts", FLEX + [("cswin", {"split_size": 3}), ("pale", {"pale_size": (2, 3)}),
                                             ("swin", {"window_size": 4, "shift": 2})])
def test_block_mask_and_layout_reproduce_the_pattern(name, opts, H, W, kind, dtype):
    """Mapped back to tokens, what the kernel lets each query see is exactly the pattern (Slide: the
    in-grid neighbours plus one virtual border key per missing neighbour, k² in all). Also for the GPU
    layout (128-token blocks, 8x16 tiles), built here on the CPU."""
    m = _build(name, opts, "flex")
    lay = build_layout(m, H, W, torch.device("cpu"), dtype, kind=kind)
    dense = _kernel_mask(lay, HEADS)
    N = H * W
    tokens = torch.arange(N)
    slot = lay.q_of_token  # heads, N
    per_query = torch.stack([dense[h, slot[h]] for h in range(HEADS)])  # heads, N, Lkv
    real_key = lay.kv_seg >= 0
    pattern = m.pattern(H, W).dense()
    if lay.halo:
        r, Wp = lay.halo, W + 2 * lay.halo
        in_grid = (lay.kv_row >= 0) & (lay.kv_row < H) & (lay.kv_col >= 0) & (lay.kv_col < W)
        token_of_slot = lay.kv_row * W + lay.kv_col
        for h in range(HEADS):
            seen = torch.zeros(N, N, dtype=torch.bool)
            keys = per_query[h] & in_grid[h] & real_key[h]
            qi, ki = keys.nonzero(as_tuple=True)
            seen[qi, token_of_slot[h, ki]] = True
            assert torch.equal(seen, pattern[h])
            assert torch.equal((per_query[h] & real_key[h]).sum(-1), torch.full((N,), m.kernel_size**2))
        return
    for h in range(HEADS):
        seen = torch.zeros(N, N, dtype=torch.bool)
        qi, ki = (per_query[h] & real_key[h]).nonzero(as_tuple=True)
        seen[qi, lay.kv_src[h, ki]] = True
        assert torch.equal(seen, pattern[h]), f"head {h}"
        assert torch.equal(lay.q_src[h, slot[h]], tokens)  # the order is undone exactly


@pytest.mark.parametrize("name,opts,groups", [("swin", {}, 64), ("cswin", {}, 8), ("axial", {}, 56), ("pale", {}, 8)])
def test_block_sparsity_is_one_minus_one_over_groups(name, opts, groups):
    """At 56², each window / stripe / line / pale group fills whole blocks of its own: a query block
    visits only its group's blocks, so the skipped fraction is 1 - 1/groups (torch's count agrees)."""
    m = _build(name, opts, "flex")
    lay = build_layout(m, 56, 56, torch.device("cpu"))
    assert lay.sparsity == pytest.approx(1 - 1 / groups)
    assert lay.block_mask.sparsity() / 100 == pytest.approx(lay.sparsity)
    assert lay.q_src.shape[1] % lay.block_size[0] == 0


def test_unavailable_reasons_say_why():
    reason = flex_unavailable_reason("cpu", torch.float32, "train")
    assert reason.startswith("FlexAttention on CPU is inference only: ") and "backward" in reason
    assert flex_unavailable_reason("cpu", torch.float32, "forward") is None
    assert "float64" in flex_unavailable_reason("cpu", torch.float64, "forward")
    case = Case("slide", "slide", (("backend", "flex"),), 56, 56, 1, 32, 2, "float32", "cpu", "forward")
    assert "learnable (deformed) shift branch" in case_unavailable_reason(case)
    fixed = Case("slide", "slide", (("backend", "flex"), ("deformable", False)), 56, 56, 1, 32, 2, "float32", "cpu", "forward")
    assert case_unavailable_reason(fixed) is None
    assert mechanisms.get("swin").unavailable_reason("flex", "cpu", torch.bfloat16, "forward") is None
    assert "no backend 'im2col'" in mechanisms.get("swin").unavailable_reason("im2col", "cpu", torch.float32)


def test_cpu_flex_with_gradients_raises_torchs_reason_and_never_falls_back_to_eager():
    m = _build("axial", {}, "flex")
    with pytest.raises(NotImplementedError, match="does not support backward on CPU"):
        m(_input(4, 6))
    m = _build("slide", {}, "flex")  # deformable: no exact flex form
    with torch.no_grad(), pytest.raises(NotImplementedError, match="deformed"):
        m(_input(4, 6))
    compiled_flex()
    assert torch._dynamo.config.fail_on_recompile_limit_hit  # a recompile storm raises, never runs eager


@pytest.mark.slow
@pytest.mark.parametrize("name,opts", FLEX, ids=IDS)
def test_gpu_layout_computes_the_reference(name, opts, monkeypatch):
    """The CUDA path's layout (128-token blocks, 8x16 Slide tiles), run here through eager flex on the
    CPU (float64, small map): the same gathers, score_mod terms and order undoing as on a GPU."""
    import warnings

    import mechanisms.flex as fx
    from torch.nn.attention.flex_attention import flex_attention

    real = fx.build_layout
    monkeypatch.setattr(fx, "build_layout", lambda m, H, W, device, dtype: real(m, H, W, device, dtype, kind="cuda"))
    monkeypatch.setattr(fx, "compiled_flex", lambda: flex_attention)
    monkeypatch.setattr(fx, "_LAYOUTS", {})
    monkeypatch.setattr(fx, "_FIRST_CALL_S", {})
    m = _build(name, opts, "flex").double()
    x = _input(9, 11, torch.float64)[:1]
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eager flex warns that it is unfused; correctness is all we ask here
        y = m(x)
    assert fx.flex_stats(m)["flex_block_size"] == 128
    torch.testing.assert_close(y, reference_forward(m, x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("H,W,sw", [(14, 14, 7), (13, 17, 7), (13, 17, 3), (9, 11, 20)])
def test_cswin_flex_lepe_equals_the_reference_lepe(H, W, sw):
    """flex adds CSWin's LePE by stripe convs (fast), the reference by dense shifts: the same term."""
    m = mechanisms.build("cswin", DIM, HEADS, split_size=sw).double()
    q, k, v = m.token_qkv(torch.randn(2, H, W, DIM, dtype=torch.float64))
    torch.testing.assert_close(m.flex_output_term(q, k, v, H, W), m.output_term(q, k, v, H, W), rtol=0, atol=1e-12)
