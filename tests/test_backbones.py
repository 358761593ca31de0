"""Whole backbones: the papers' params and MACs (issue 13's targets), swaps, any input size, features.

Counts run on the meta device (shapes only: no memory, well under a second per model); forward
passes that need numbers use reduced depths, which exercise the same code.
"""
import pytest
import torch

from mechanisms import backbones
from mechanisms.backbones.counting import counted_macs, meta_model
from mechanisms.backbones.layers import PatchMerging
from mechanisms.base import AttentionBase
from mechanisms.backbones.specs import WHOLE_MAP
from mechanisms.pale import PaleAttention
from mechanisms.slide import SlideAttention
from mechanisms.swin import SwinAttention

# Issue 13's table: params (all, frozen included) and MACs at 224² (every matmul and conv).
TARGETS = {
    "deit-s": (22.05e6, 4.61e9),
    "swin-t": (28.29e6, 4.49e9),
    "cswin-t": (22.32e6, 4.32e9),
    "pale-t": (22.0e6, 4.2e9),
    "slide-swin-t": (28.35e6, 4.85e9),
}
# Params within 0.5% where the authors' code exists, 2.5% for Pale-T (paper only); MACs within 2%.
PARAM_TOL = {"pale-t": 0.025}


def test_available_lists_the_five_models():
    assert backbones.available() == ["cswin-t", "deit-s", "pale-t", "slide-swin-t", "swin-t"]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_params_match_target(name):
    params, _ = TARGETS[name]
    model = meta_model(name)
    assert backbones.count_params(model) == pytest.approx(params, rel=PARAM_TOL.get(name, 0.005))


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_macs_match_target_analytic_and_counted(name):
    """The analytic sum (mechanisms' flops() + the other layers) equals FlopCounterMode's count exactly,
    and both are within 2% of the target."""
    _, macs = TARGETS[name]
    model = meta_model(name)
    analytic = model.flops(224, 224)["total"]
    assert counted_macs(model, 224, 224) == analytic
    assert analytic == pytest.approx(macs, rel=0.02)


def test_known_exact_counts():
    """The counts of the authors' code, to the parameter: Swin-T 28,288,354 and DeiT-S (timm) 22,050,664."""
    assert backbones.count_params(meta_model("swin-t")) == 28_288_354
    assert backbones.count_params(meta_model("deit-s")) == 22_050_664


def test_slide_swin_deploy_form_macs():
    """Deploy form: the two shift convs merged into one, 4.70G (issue 13)."""
    model = meta_model("slide-swin-t", deploy=True)
    analytic = model.flops(224, 224)["total"]
    assert counted_macs(model, 224, 224) == analytic
    assert analytic == pytest.approx(4.70e9, rel=0.02)


def test_slide_swin_reparameterized_macs():
    """The merged shift convs (SlideAttention.reparameterize, which deploy() serves) give 4.70G."""
    model = meta_model("slide-swin-t")
    for attn in model.attention_modules():
        if isinstance(attn, SlideAttention):
            attn.reparameterize()
    analytic = model.flops(224, 224)["total"]
    assert counted_macs(model, 224, 224) == analytic
    assert analytic == pytest.approx(4.70e9, rel=0.02)
    assert analytic < 4.85e9 * 0.98


@pytest.mark.parametrize("mechanism", ["global", "swin", "cswin", "axial", "pale", "slide"])
def test_swapped_analytic_equals_counted_at_odd_sizes(mechanism):
    """Padding, merging of odd maps and each mechanism's own count agree with the counter off 224²."""
    model = meta_model("swin-t", attention=mechanism)
    for H, W in [(224, 224), (100, 68)]:
        assert counted_macs(model, H, W) == model.flops(H, W)["total"]


def test_swap_keeps_the_skeleton():
    base, swapped = meta_model("swin-t"), meta_model("swin-t", attention="pale")
    attns = swapped.attention_modules()
    assert len(attns) == 12 and all(isinstance(a, PaleAttention) for a in attns)
    assert [a.pale_size for a in attns] == [(7, 7)] * 12
    # Heads: Swin-T's odd 3 in stage 1 becomes 4 (Pale splits heads in two); the other stages keep theirs.
    assert [a.num_heads for a in attns] == [4, 4, 6, 6] + [12] * 6 + [24, 24]

    def skeleton(model):
        return {k: tuple(v.shape) for k, v in model.state_dict().items() if ".attn." not in k}

    assert skeleton(swapped) == skeleton(base)
    own = sum(p.numel() for a in attns for p in a.parameters())
    assert backbones.count_params(swapped) - own == backbones.count_params(base) - sum(
        p.numel() for a in base.attention_modules() for p in a.parameters()
    )


def test_swin_alternation_comes_from_layer_options():
    shifts = [a.shift for a in meta_model("swin-t").attention_modules()]
    assert shifts == [0, 3, 0, 3, 0, 3, 0, 3, 0, 3, 0, 3]
    # The same contract in another skeleton: Pale-T's depths 2-2-16-2.
    shifts = [a.shift for a in meta_model("pale-t", attention="swin").attention_modules()]
    assert shifts == [0, 3] * 11
    # The stage options say "shifted" (shift None = window // 2); 0 turns the alternation off.
    assert backbones.get_spec("swin-t").attention_options[0] == {"window_size": 7, "shift": None}
    shifts = [a.shift for a in meta_model("swin-t", attention_options={"shift": 0}).attention_modules()]
    assert shifts == [0] * 12
    shifts = [a.shift for a in meta_model("swin-t", attention_options={"window_size": 8}).attention_modules()]
    assert shifts == [0, 4] * 6
    assert AttentionBase.layer_options({"pale_size": 5}, 3) == {"pale_size": 5}


def test_slide_swin_stages():
    attns = meta_model("slide-swin-t").attention_modules()
    assert [type(a).__name__ for a in attns] == ["SlideAttention"] * 4 + ["SwinAttention"] * 8
    assert [a.kernel_size for a in attns[:4]] == [3] * 4
    assert [a.window_size for a in attns[4:]] == [14] * 6 + [7] * 2
    # At 224² stages 3-4 are one window covering the map: global, never shifted.
    assert all(a.effective_shift(14, 14) == 0 for a in attns[4:10])


def test_cswin_last_stage_is_global_at_any_size():
    attn = meta_model("cswin-t").attention_modules()[-1]
    assert attn.split_size == WHOLE_MAP
    with torch.device("cpu"):
        assert bool(attn.pattern(12, 12).dense().all())  # 384² input: stage 4 is 12x12
    assert backbones.describe("cswin-t")["attention_options"][3] == {"split_size": "whole map"}


def _small(name, **kw):
    """The model with every stage one or two blocks deep: same layers, fast to build and run."""
    depths = (2,) if name == "deit-s" else (1, 2, 2, 1)
    return backbones.build(name, depths=depths, **kw).eval()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_logits_and_features_at_sizes_that_do_not_divide_windows(name):
    H, W = (96, 160) if name == "deit-s" else (100, 68)  # 25x17 tokens: no window, stripe or pale divides
    model = _small(name, num_classes=10)
    x = torch.randn(2, 3, H, W)
    with torch.no_grad():
        logits = model(x)
        model.features_only = True
        maps = model(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    if name == "deit-s":
        assert [tuple(m.shape) for m in maps] == [(2, 384, 6, 10)] * 4
    else:
        dims = backbones.get_spec(name).embed_dims
        sizes = [(25, 17), (13, 9), (7, 5), (4, 3)]  # merging pads odd maps: ceil(/2)
        assert [tuple(m.shape) for m in maps] == [(2, c, h, w) for c, (h, w) in zip(dims, sizes)]


def test_features_only_built_returns_four_maps():
    model = backbones.build("swin-t", features_only=True, depths=(2, 2, 2, 2)).eval()
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 64, 64))
    assert [tuple(m.shape) for m in maps] == [(1, 96, 16, 16), (1, 192, 8, 8), (1, 384, 4, 4), (1, 768, 2, 2)]


def test_batch_independence_and_training_step():
    """Each image's logits do not depend on the others (padding masks are per image); gradients reach
    every trainable parameter, Slide's frozen one-hot kernels excepted."""
    model = _small("slide-swin-t", num_classes=5)
    x = torch.randn(3, 3, 36, 44)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)
    model.train()
    model(x).logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert missing == []
    assert not any(p.requires_grad for n, p in model.named_parameters() if "shift_fixed.weight" in n)


def test_patch_merging_pads_odd_maps_with_zeros():
    merge = PatchMerging(2, 4, eps=1e-5)
    x = torch.randn(1, 5, 3, 2)
    padded = torch.zeros(1, 6, 4, 2)
    padded[:, :5, :3] = x
    torch.testing.assert_close(merge(x), merge(padded))
    assert merge(x).shape == (1, 3, 2, 4)


def test_deit_position_table_resizes_with_the_grid():
    model = _small("deit-s")
    assert model.grid_pos_embed(14, 14).shape == (1, 14, 14, 384)
    torch.testing.assert_close(model.grid_pos_embed(14, 14).reshape(1, 196, 384), model.pos_embed[:, 1:])
    assert model.grid_pos_embed(6, 10).shape == (1, 6, 10, 384)


def test_deit_swap_drops_the_class_token():
    model = meta_model("deit-s", attention="swin")
    assert model.cls_token is None and isinstance(model.attention_modules()[0], SwinAttention)
    assert model.token_map(224, 224) == (14, 14)
    with pytest.raises(ValueError) as err:
        meta_model("deit-s", attention="swin", class_token=True)
    assert str(err.value) == (
        "deit-s/swin: a class token has no place on the token grid 'swin' attends over; "
        "pass class_token=False (mean of the tokens) or attention='global'"
    )


def test_bad_input_errors_name_the_fix():
    with pytest.raises(ValueError) as err:
        backbones.build("swin-tt")
    assert str(err.value) == (
        "unknown backbone 'swin-tt'; choose one of ['cswin-t', 'deit-s', 'pale-t', 'slide-swin-t', 'swin-t']. "
        "Did you mean 'swin-t'?"
    )
    with pytest.raises(ValueError, match=r"^unknown mechanism 'palee'"):
        backbones.build("swin-t", attention="palee")
    with pytest.raises(ValueError) as err:
        backbones.build("swin-t", windw_size=8)
    assert str(err.value).startswith("backbone 'swin-t' has no option 'windw_size'; valid options: [")
    with pytest.raises(ValueError) as err:
        backbones.build("swin-t", depths=(2, 2, 6))
    assert str(err.value) == "swin-t: depths needs 4 entries, got [2, 2, 6]"
    with pytest.raises(ValueError) as err:
        meta_model("swin-t", attention_options={"pale_size": 5})
    assert "has no option 'pale_size'" in str(err.value)
    model = meta_model("swin-t")
    with pytest.raises(ValueError) as err:
        model(torch.empty(1, 3, 226, 224, device="meta"))
    assert str(err.value) == "swin-t: input 226x224 is not a multiple of the patch size 4; resize or pad it, e.g. to 228x224"


def test_attention_options_override_per_stage_and_for_all():
    attns = meta_model("pale-t", attention_options={"pale_size": 5}).attention_modules()
    assert {a.pale_size for a in attns} == {(5, 5)}
    attns = meta_model("swin-t", attention_options=[{}, {}, {"window_size": 14}, {}]).attention_modules()
    assert [a.window_size for a in attns] == [7] * 4 + [14] * 6 + [7] * 2


def test_describe_reports_config_sources_and_counts():
    d = backbones.describe("pale-t")
    assert d["embed_dims"] == [64, 128, 256, 512] and d["depths"] == [2, 2, 16, 2] and d["heads"] == [2, 4, 8, 16]
    assert "heads 2-4-8-16" in d["derived"] and d["cpe"] is True
    assert d["params"] == backbones.count_params(meta_model("pale-t"))
    assert d["macs"] == d["macs_by_part"]["total"] == meta_model("pale-t").flops(224, 224)["total"]
    swapped = backbones.describe("swin-t", attention="pale")
    assert swapped["name"] == "swin-t/pale" and swapped["heads"] == [4, 6, 12, 24]



def test_plain_pytorch_no_harness_import():
    """A user's training code gets the backbones from ``import mechanisms`` alone, without the harness."""
    import subprocess
    import sys

    code = (
        "import sys, mechanisms; m = mechanisms.backbones.build('pale-t', depths=(1, 1, 1, 1), num_classes=3); "
        "import torch; assert m(torch.randn(1, 3, 32, 32)).shape == (1, 3); "
        "print(sorted(k for k in sys.modules if k.split('.')[0] == 'attnbench'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
