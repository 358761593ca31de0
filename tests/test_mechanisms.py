"""Every registered mechanism and backend against the dense float64 reference of its pattern.

Generic over ``mechanisms.available()`` (timm's test_models style), so a newly registered mechanism is
covered as soon as it exists; ``VARIANTS`` adds option sets that exercise more of a pattern at small
sizes (a window of 7 on a 9x9 map barely shifts anything). Mechanism-specific pattern tests with
hand-computed answers follow at the end.
"""
from __future__ import annotations

import os

import pytest
import torch

import mechanisms
from attnbench.metrics.flop_counting import fvcore_macs
from mechanisms.reference import reference_forward

DIM, HEADS = 16, 4
SIZES = [(14, 14), (13, 17), (7, 5), (1, 9)]
# Extra option sets per mechanism (the defaults are always tested too).
VARIANTS: dict[str, list[dict]] = {
    "swin": [{"shift": None}, {"window_size": 4, "shift": 2}, {"window_size": 3, "shift": 1}],
    "cswin": [{"split_size": 3}, {"split_size": 1}, {"split_size": 20}],
    "pale": [{"pale_size": 3}, {"pale_size": (2, 3)}],
    "slide": [{"kernel_size": 5}, {"deformable": False}],
}


def _opts_id(opts: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in opts.items()) or "default"


def _device(name: str, backend: str, dtype=torch.float32) -> str | None:
    """Where the backend runs here (CPU first), as the mechanism itself says; None when nowhere."""
    cls = mechanisms.get(name)
    for dev in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
        if cls.unavailable_reason(backend, dev, dtype) is None:
            return dev
    return None


def configs(backends: bool = True, dtype=torch.float32) -> list:
    """(name, options, backend) for every registered mechanism, option variant and backend, skipped
    (with the mechanism's own reason) where the backend cannot run on this machine in ``dtype``."""
    params = []
    for name in mechanisms.available():
        cls = mechanisms.get(name)
        for opts in [{}, *VARIANTS.get(name, [])]:
            for backend in cls.backends if backends else ("native",):
                if backend in getattr(cls, "compiled_backends", ()):  # compile per shape: tests/test_flex.py
                    continue  # covers them with kernels shared across its tests
                marks = []
                if _device(name, backend, dtype) is None:
                    marks.append(pytest.mark.skip(reason=str(cls.unavailable_reason(backend, "cpu", dtype))))
                params.append(pytest.param(name, opts, backend, id=f"{name}[{_opts_id(opts)}]-{backend}", marks=marks))
    return params


def _build(name: str, opts: dict, backend: str = "native", dtype=torch.float64, dim: int = DIM, heads: int = HEADS):
    device = _device(name, backend, dtype) or "cpu"
    return mechanisms.build(name, dim, heads, backend=backend, **opts).to(device, dtype).eval()


@pytest.mark.parametrize("name,opts,backend", configs())
def test_matches_reference(name, opts, backend):
    """float64 max abs error <= 1e-10 and float32 <= 1e-5 relative to the float64 reference."""
    dtypes = [d for d in (torch.float64, torch.float32) if _device(name, backend, d) is not None]
    for H, W in SIZES:
        for dtype in dtypes:
            m = _build(name, opts, backend, dtype)
            x = torch.randn(2, H, W, DIM, dtype=dtype, device=_device(name, backend, dtype))
            with torch.no_grad():
                y = m(x)
                ref = reference_forward(m, x)
            assert y.shape == x.shape and y.dtype == dtype
            err = (y.double() - ref).abs().max().item()
            if dtype == torch.float64:
                assert err <= 1e-10, f"{H}x{W} float64: max abs error {err:.3g}"
            else:
                rel = err / ref.abs().max().item()
                assert rel <= 1e-5, f"{H}x{W} float32: relative error {rel:.3g}"


@pytest.mark.parametrize("name,opts,backend", configs(dtype=torch.float64))
def test_gradients_match_reference(name, opts, backend):
    """Gradients reach the input and every trainable parameter, finite, non-zero, and equal the reference's."""
    m = _build(name, opts, backend)
    x = torch.randn(2, 13, 17, DIM, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 13, 17, DIM, dtype=torch.float64)
    params = {n: p for n, p in m.named_parameters() if p.requires_grad}
    grads = torch.autograd.grad((m(x) * weight).sum(), [x, *params.values()])
    ref_grads = torch.autograd.grad((reference_forward(m, x, dtype=None) * weight).sum(), [x, *params.values()])
    for label, g, r in zip(["input", *params], grads, ref_grads):
        assert torch.isfinite(g).all(), f"{label}: non-finite gradient"
        assert g.abs().sum() > 0, f"{label}: zero gradient"
        assert (g - r).abs().max() <= 1e-9 * max(1.0, r.abs().max().item()), f"{label}: gradient differs from reference"


@pytest.mark.parametrize("name,opts,backend", configs(backends=False))
@pytest.mark.parametrize("H,W", [(9, 11), (14, 14)])
def test_dependency_matches_pattern(name, opts, backend, H, W):
    """d out[token] / d x is non-zero exactly on the tokens the pattern (and positional convs) reach."""
    m = _build(name, opts, backend)
    torch.manual_seed(1)
    for token in (0, (H // 2) * W + W // 2, H * W - 1, W + 1):
        x = torch.randn(2, H, W, DIM, dtype=torch.float64, requires_grad=True)
        out = m(x)[0, token // W, token % W]
        (grad,) = torch.autograd.grad(out @ torch.randn(DIM, dtype=torch.float64), x)
        reached = grad[0].abs().sum(-1) != 0
        expected = m.dependency_mask(H, W, token)
        assert expected.shape == (H, W)
        assert torch.equal(reached, expected), (
            f"token {token}: gradient reaches {reached.sum().item()} tokens, pattern says {expected.sum().item()}"
        )
        assert not grad[1].any(), "gradient leaked across the batch"


@pytest.mark.parametrize("name,opts,backend", [p for p in configs() if not p.marks])
@pytest.mark.parametrize("H,W", [(14, 14), (13, 10)])
def test_flops_match_fvcore(name, opts, backend, H, W):
    """Analytic MACs equal fvcore's count (with the SDPA handle) to 1%, padded sizes included."""
    m = _build(name, opts, backend, torch.float32)
    analytic = m.flops(H, W)
    assert analytic["total"] == sum(v for k, v in analytic.items() if k != "total")
    counted, by_op, _ = fvcore_macs(m, torch.randn(1, H, W, DIM))
    assert abs(counted - analytic["total"]) <= 0.01 * analytic["total"], (analytic, by_op)


COMPILE_BACKEND = os.environ.get("ATTNBENCH_TEST_COMPILE_BACKEND", "inductor")


@pytest.mark.slow
@pytest.mark.parametrize("name,opts,backend", [p for p in configs(backends=False) if not p.values[1]])
def test_torch_compile_agrees_with_eager(name, opts, backend):
    """The fast path compiles as one graph (no graph breaks) and agrees with eager, forward and backward.

    Default compile backend ``inductor``, what ``torch.compile`` gives users (cold compiles of all six
    take about 2 minutes on one CPU core). ATTNBENCH_TEST_COMPILE_BACKEND=aot_eager checks graph
    capture and AOT autograd only, in seconds, for quick local iterations.
    """
    torch._dynamo.reset()
    m = _build(name, opts, backend, torch.float32)
    x = torch.randn(2, 9, 11, DIM, requires_grad=True)
    compiled = torch.compile(m, backend=COMPILE_BACKEND, fullgraph=True)
    y, y_eager = compiled(x), m(x)
    assert (y - y_eager).abs().max() <= 1e-5
    (g,) = torch.autograd.grad(y.sum(), x)
    (g_eager,) = torch.autograd.grad(y_eager.sum(), x)
    assert (g - g_eager).abs().max() <= 1e-4


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("name", mechanisms.available())
def test_bad_shapes_and_options_raise_clearly(name):
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        mechanisms.build(name, 10, 4)
    with pytest.raises(ValueError, match="has no option 'windw_size'"):
        mechanisms.build(name, 16, 2, windw_size=3)
    with pytest.raises(ValueError, match="unknown backend 'nope'; choose one of"):
        mechanisms.build(name, 16, 2, backend="nope")
    if mechanisms.get(name).two_branch:
        with pytest.raises(ValueError, match="odd.*even num_heads"):
            mechanisms.build(name, 12, 3)
    for option in ("window_size", "split_size", "pale_size", "kernel_size"):
        if option in mechanisms.options(name):
            for bad in (0, -1, 2.5):
                with pytest.raises(ValueError, match=option):
                    mechanisms.build(name, 16, 2, **{option: bad})
    m = mechanisms.build(name, 16, 2)
    with pytest.raises(ValueError, match=r"expected input \(B, H, W, C=16\)"):
        m(torch.randn(2, 49, 16))
    with pytest.raises(ValueError, match="map size"):
        m.flops(0, 5)


def test_unknown_mechanism_suggests_a_close_name():
    with pytest.raises(ValueError, match="unknown mechanism 'swim'.*Did you mean 'swin'"):
        mechanisms.build("swim", 16, 2)


@pytest.mark.parametrize("shift", [7, -1, 1.5, True])
def test_swin_shift_out_of_range(shift):
    with pytest.raises(ValueError, match=r"shift must be an int in \[0, window_size=7\)"):
        mechanisms.build("swin", 16, 2, shift=shift)


def test_describe_lists_options_with_defaults():
    assert mechanisms.describe("swin")["options"]["window_size"]["default"] == 7
    assert mechanisms.describe("swin")["options"]["shift"]["default"] == 0
    assert "M // 2" in mechanisms.describe("swin")["options"]["shift"]["doc"]
    assert mechanisms.describe("cswin")["options"]["split_size"]["default"] == 7
    assert set(mechanisms.describe("axial")["options"]) >= {"backend", "qkv_bias"}


# --------------------------------------------------------------------- hand-computed patterns
def _grid(pattern, head: int, query: tuple[int, int]) -> list[str]:
    """The keys one query may attend, drawn as rows of '#' (allowed) and '.'."""
    q = query[0] * pattern.width + query[1]
    seen = pattern.dense()[head, q].view(pattern.height, pattern.width)
    return ["".join("#" if v else "." for v in row) for row in seen.tolist()]


def test_swin_pattern_by_hand():
    m = mechanisms.build("swin", 8, 2, window_size=3, shift=1)
    p = m.pattern(5, 5)
    assert p.name == "swin_w3_s1"
    # Shifted groups: rows/cols {0}, {1,2,3}, {4}.
    assert _grid(p, 0, (2, 2)) == [".....", ".###.", ".###.", ".###.", "....."]
    assert _grid(p, 1, (0, 0)) == ["#....", ".....", ".....", ".....", "....."]
    assert _grid(p, 0, (0, 3)) == [".###.", ".....", ".....", ".....", "....."]
    assert _grid(p, 0, (4, 4)) == [".....", ".....", ".....", ".....", "....#"]
    plain = mechanisms.build("swin", 8, 2, window_size=3).pattern(4, 5)
    assert _grid(plain, 0, (3, 4)) == [".....", ".....", ".....", "...##"]
    # The whole map fits one window: the shift is disabled (official behaviour).
    assert m.pattern(3, 2).name == "swin_w3_s0" and m.pattern(3, 2).dense().all()


@pytest.mark.parametrize("H,W,M,s", [(8, 8, 4, 2), (6, 9, 3, 1), (12, 6, 3, 2)])
def test_swin_pattern_equals_official_roll_and_region_mask(H, W, M, s):
    """On sizes M divides, the rule equals the official construction: label the rolled map with the
    3x3 slices (0:-M, -M:-s, -s:), partition into windows, allow equal labels in one window."""
    labels = torch.zeros(H, W, dtype=torch.long)
    cnt = 0
    for hs in (slice(0, -M), slice(-M, -s), slice(-s, None)):
        for ws in (slice(0, -M), slice(-M, -s), slice(-s, None)):
            labels[hs, ws] = cnt
            cnt += 1
    # Rolled position (a, b) holds original token ((a + s) % H, (b + s) % W).
    rolled_row = torch.arange(H)[:, None].expand(H, W)
    rolled_col = torch.arange(W)[None, :].expand(H, W)
    orig = ((rolled_row + s) % H) * W + (rolled_col + s) % W
    window = (rolled_row // M) * (W // M) + rolled_col // M
    expected = torch.zeros(H * W, H * W, dtype=torch.bool)
    o, w, lab = orig.flatten(), window.flatten(), labels.flatten()
    expected[o[:, None], o[None, :]] = (w[:, None] == w[None, :]) & (lab[:, None] == lab[None, :])
    p = mechanisms.build("swin", 8, 2, window_size=M, shift=s).pattern(H, W)
    assert torch.equal(p.dense()[0], expected) and torch.equal(p.dense()[1], expected)


def test_cswin_pattern_by_hand():
    p = mechanisms.build("cswin", 8, 2, split_size=2).pattern(3, 5)
    assert p.name == "cswin_sw2_h2"
    assert _grid(p, 0, (1, 2)) == ["..##.", "..##.", "..##."]  # vertical stripe: columns 2-3
    assert _grid(p, 0, (0, 4)) == ["....#", "....#", "....#"]  # last, narrower stripe
    assert _grid(p, 1, (1, 2)) == ["#####", "#####", "....."]  # horizontal stripe: rows 0-1
    assert _grid(p, 1, (2, 0)) == [".....", ".....", "#####"]
    wide = mechanisms.build("cswin", 8, 2, split_size=5).pattern(3, 5)
    assert wide.dense().all()  # sw >= H and sw >= W: both branches global


def test_cswin_lepe_is_stripe_local():
    """With split_size=1 a vertical stripe is one column wide, so LePE's side taps must read zeros:
    a kernel whose only non-zero taps are on the left adds nothing, in the reference and the fast path."""
    m = mechanisms.build("cswin", 8, 2, split_size=1).double()
    with torch.no_grad():
        m.lepe[0].weight.zero_()
        m.lepe[0].weight[:, 0, :, 0] = 1.0  # left column of the kernel: crosses the stripe border
        m.lepe[0].bias.zero_()
    v = torch.randn(1, 2, 12, 4, dtype=torch.float64)
    term = m.output_term(v, v, v, 3, 4)
    assert term[:, 0].abs().max() == 0  # vertical branch: the left neighbour is in another stripe
    x = torch.randn(1, 3, 4, 8, dtype=torch.float64)
    assert (m(x) - reference_forward(m, x)).abs().max() <= 1e-12


def test_axial_pattern_by_hand():
    p = mechanisms.build("axial", 8, 4).pattern(3, 4)
    assert p.name == "axial_h4"
    for head in (0, 1):
        assert _grid(p, head, (1, 2)) == ["....", "####", "...."]
    for head in (2, 3):
        assert _grid(p, head, (1, 2)) == ["..#.", "..#.", "..#."]


def test_axial_equals_cswin_stripe_one_without_lepe():
    """Axial is CSWin with sw = 1 and no LePE, with the two branches in the other order."""
    axial = mechanisms.build("axial", 8, 2).pattern(4, 6).dense()
    cswin = mechanisms.build("cswin", 8, 2, split_size=1).pattern(4, 6).dense()
    assert torch.equal(axial, cswin.flip(0))


@pytest.mark.parametrize(
    "name,opts,H,W,expected",
    [
        # 4NC² + 2M²·Hp·Wp·C, Hp = Wp = 14.
        ("swin", {"window_size": 7}, 13, 13, 4 * 169 * 64 * 64 + 2 * 49 * 196 * 64),
        # 4NC² + sw·NC(H + W) + 9NC on a divisible map.
        ("cswin", {"split_size": 7}, 14, 21, 4 * 294 * 64 * 64 + 7 * 294 * 64 * 35 + 9 * 294 * 64),
        ("axial", {}, 14, 21, 4 * 294 * 64 * 64 + 294 * 64 * 35),
        ("global", {}, 14, 21, 4 * 294 * 64 * 64 + 2 * 294 * 294 * 64),
    ],
)
def test_flops_closed_form(name, opts, H, W, expected):
    assert mechanisms.build(name, 64, 2, **opts).flops(H, W)["total"] == expected


def test_swin_bias_is_learned_and_index_not_saved():
    m = mechanisms.build("swin", 16, 2, window_size=5)
    assert m.relative_position_bias_table.shape == (81, 2) and m.relative_position_bias_table.requires_grad
    assert m.relative_position_bias_table.abs().max() <= 0.04  # trunc-normal at 2 std of 0.02
    assert "relative_position_index" not in m.state_dict()
    idx = m.relative_position_index
    assert idx.shape == (25, 25) and idx[0, 0] == idx[24, 24] == 4 * 9 + 4 and idx[0, 24] == 0


def _generic_masked() -> list:
    """Mechanisms whose ``masked`` backend is the generic one (Slide's computes over its own keys)."""
    from mechanisms.base import AttentionBase

    return [pytest.param(name, opts, id=f"{name}[{_opts_id(opts)}]")
            for name in mechanisms.available() for opts in [{}, *VARIANTS.get(name, [])]
            if "masked" in mechanisms.get(name).backends
            and mechanisms.get(name)._forward_masked is AttentionBase._forward_masked]


@pytest.mark.parametrize("name,opts", _generic_masked())
@pytest.mark.parametrize("block_rows", [1, 4])
def test_masked_in_row_blocks_equals_the_reference(name, opts, block_rows, monkeypatch):
    """Blocks of query rows (how ``masked`` fits 224² in memory) compute what one block does: the
    float64 reference, forward and input gradient, on a ragged map the blocks do not divide."""
    import mechanisms.base as base

    H, W = 13, 17
    m = _build(name, opts, "masked")
    per_query = m._masked_bytes_per_query(2, H * W, 8)
    monkeypatch.setattr(base, "MASKED_BLOCK_BYTES", block_rows * W * per_query)
    assert m.masked_block_rows(2, H, W, 8) == block_rows  # the forward below really runs in blocks
    x = torch.randn(2, H, W, DIM, dtype=torch.float64, requires_grad=True)
    y, ref = m(x), reference_forward(m, x, dtype=None)
    assert (y - ref).abs().max().item() <= 1e-10
    weight = torch.randn_like(y)
    (g,) = torch.autograd.grad((y * weight).sum(), [x])
    (r,) = torch.autograd.grad((ref * weight).sum(), [x])
    assert (g - r).abs().max().item() <= 1e-9 * max(1.0, r.abs().max().item())


def test_masked_memory_model_follows_its_blocks():
    """At 224² the predicted footprint of ``masked`` forward is one block (about MASKED_BLOCK_BYTES),
    not the (heads, N, N) tensors of one call; training still keeps every block's logits."""
    from mechanisms.base import MASKED_BLOCK_BYTES

    m = mechanisms.build("swin", 64, 2, backend="masked")
    N = 224 * 224
    fwd = m.attention_memory_bytes(1, 224, 224, 4, train=False)
    train = m.attention_memory_bytes(1, 224, 224, 4, train=True)
    assert m.masked_block_rows(1, 224, 224, 4) < 224
    assert MASKED_BLOCK_BYTES / 2 < fwd <= MASKED_BLOCK_BYTES
    assert train - fwd == 2 * 2 * N * N * 4
    small = m.attention_memory_bytes(1, 14, 14, 4, train=False)  # one block: the whole (h, N, N) call
    assert small == 196 * 196 * (2 * 4 * 2 + 24 + 2 + 2 * 4 * 2)


def test_slide_flex_memory_model_is_linear_in_tokens():
    """Slide's flex keeps per-tile copies and tables, O(N): not the masked backend's N² (it once
    fell through to that model, and the predictor skipped flex at 224² as needing 136 GiB)."""
    m = mechanisms.build("slide", 64, 2, deformable=False, backend="flex")
    small, large = (m.attention_memory_bytes(1, s, s, 4, train=False) for s in (112, 224))
    assert large < 2**29
    assert 3.5 < large / small < 4.2
