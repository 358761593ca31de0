"""The five backbones as data: the papers' stage widths, depths, heads, attention options, stems and merges.

Why data and not five classes: a swap (``build("swin-t", attention="pale")``) must change the
attention and nothing else, so the skeleton (stem, merging, widths, depths, MLP, head) and the
attention choice are separate fields of one frozen spec, and every model is built by the same code.
Sources are the official repositories and ``/work/shared/research/mechanisms.md`` (§1-§6, §5 Pale).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# CSWin's last stage is one stripe covering the whole map, at any input size (official `last_stage`).
# The cswin mechanism cuts a stripe to the map side, so a stripe this wide is "the whole map".
WHOLE_MAP = 1 << 16


@dataclass(frozen=True)
class ModelSpec:
    """One backbone: skeleton plus the attention of each stage.

    Fields a user may override in ``build(name, **overrides)``: ``embed_dims``, ``depths``, ``heads``,
    ``mlp_ratio``, ``drop_path_rate``, ``cpe``, ``class_token`` (ViT only).
    """

    name: str
    summary: str
    kind: str  # "hierarchical" (four stages) or "vit" (one isotropic stage at stride 16)
    embed_dims: tuple[int, ...]
    depths: tuple[int, ...]
    heads: tuple[int, ...]
    attention: tuple[str, ...]  # mechanism name per stage
    attention_options: tuple[dict[str, Any], ...]  # mechanism options per stage (before layer_options)
    stem: str  # "patch" (k = s = patch, + LN for hierarchical) or "conv7" (7x7 stride 4 conv + LN)
    merge: str  # "patch-merging" (2x2 concat + LN + Linear, Swin) or "conv3" (3x3 stride 2 conv + LN) or ""
    patch_size: int
    mlp_ratio: float = 4.0
    cpe: bool = False  # block-level conditional position encoding x + DWConv3x3(x) (Pale)
    class_token: bool = False  # ViT: classify from a class token (else mean of the tokens)
    drop_path_rate: float = 0.0
    norm_eps: float = 1e-5
    stem_padding: int = 0
    paper: dict[str, str] = field(default_factory=dict)  # what the paper says (params, FLOPs, top-1)
    target: dict[str, float] = field(default_factory=dict)  # counted targets of issue 13 (params, macs)
    sources: str = ""
    derived: str = ""  # details that are reconstructed rather than published


def _per_stage(value: Any, stages: int = 4) -> tuple[dict[str, Any], ...]:
    return tuple(dict(value) for _ in range(stages))


# Per-stage defaults of each mechanism's options when it is put into a skeleton: the values of the
# mechanism's own tiny model (Swin-T window 7, shifted by 7 // 2 in odd blocks; CSWin-T stripes
# 1-2-7-whole map; Pale-T pale 7; Slide-Swin-T kernel 3). A mechanism not listed here gets its
# constructor defaults. Swin's ``shift: None`` (= window_size // 2) is what makes its
# ``layer_options`` alternate plain and shifted windows.
STAGE_DEFAULTS: dict[str, tuple[dict[str, Any], ...]] = {
    "swin": _per_stage({"window_size": 7, "shift": None}),
    "cswin": ({"split_size": 1}, {"split_size": 2}, {"split_size": 7}, {"split_size": WHOLE_MAP}),
    "pale": _per_stage({"pale_size": 7}),
    "slide": _per_stage({"kernel_size": 3}),
}


def stage_defaults(mechanism: str, stages: int) -> tuple[dict[str, Any], ...]:
    """The per-stage default options of ``mechanism`` for a skeleton with ``stages`` stages.

    A one-stage (ViT) skeleton takes the mechanism's stage-3 setting, the stage at the same stride (16).
    """
    table = STAGE_DEFAULTS.get(mechanism)
    if table is None:
        return tuple({} for _ in range(stages))
    if stages == 1:
        return (dict(table[2]),)
    return tuple(dict(t) for t in table[:stages])


SPECS: dict[str, ModelSpec] = {}


def _add(spec: ModelSpec) -> None:
    SPECS[spec.name] = spec


_add(ModelSpec(
    name="deit-s",
    summary="DeiT-S (ViT-S/16): 12 global-attention blocks at stride 16 with a class token.",
    kind="vit",
    embed_dims=(384,),
    depths=(12,),
    heads=(6,),
    attention=("global",),
    attention_options=({},),
    stem="patch",
    merge="",
    patch_size=16,
    class_token=True,
    drop_path_rate=0.1,
    norm_eps=1e-6,
    paper={"params": "22M", "flops": "4.6G", "top1": "79.8 (README 79.9)"},
    target={"params": 22.05e6, "macs": 4.61e9},
    sources="facebookresearch/deit models.py (timm VisionTransformer: patch 16, dim 384, depth 12, heads 6, "
    "mlp 4, qkv_bias, LayerNorm eps 1e-6, class token, learned absolute position embedding).",
    derived="Other input sizes: the 14x14 position table is resized bicubically to the token grid (timm's "
    "dynamic image size). The tokens (class token first) are fed to the global mechanism as a 1 x (N+1) map: "
    "global attention does not depend on the layout.",
))

_add(ModelSpec(
    name="swin-t",
    summary="Swin-T: shifted-window attention (M = 7), 4x4 patch stem, 2x2 patch merging.",
    kind="hierarchical",
    embed_dims=(96, 192, 384, 768),
    depths=(2, 2, 6, 2),
    heads=(3, 6, 12, 24),
    attention=("swin",) * 4,
    attention_options=_per_stage({"window_size": 7, "shift": None}),
    stem="patch",
    merge="patch-merging",
    patch_size=4,
    drop_path_rate=0.2,
    paper={"params": "28M", "flops": "4.5G", "top1": "81.3"},
    target={"params": 28.29e6, "macs": 4.49e9},
    sources="microsoft/Swin-Transformer models/swin_transformer.py and configs/swin/swin_tiny_patch4_window7_224.yaml.",
    derived="Sizes M does not divide: windows are padded and padded keys masked (the mechanisms' rule); the "
    "official classification code refuses them, its detection code pads without masking. Patch merging pads "
    "odd maps bottom/right by one token (Swin detection code).",
))

_add(ModelSpec(
    name="cswin-t",
    summary="CSWin-T: cross-shaped stripes 1-2-7 and a global last stage, LePE, 7x7 conv stem, 3x3 conv merging.",
    kind="hierarchical",
    embed_dims=(64, 128, 256, 512),
    depths=(1, 2, 21, 1),
    heads=(2, 4, 8, 16),
    attention=("cswin",) * 4,
    attention_options=STAGE_DEFAULTS["cswin"],
    stem="conv7",
    stem_padding=2,
    merge="conv3",
    patch_size=4,
    drop_path_rate=0.2,
    paper={"params": "23M", "flops": "4.3G", "top1": "82.7 (README 82.8)"},
    target={"params": 22.32e6, "macs": 4.32e9},
    sources="microsoft/CSWin-Transformer models/cswin.py CSWin_64_12211_tiny_224.",
    derived="The official last stage is one branch of global attention with one LePE over C channels; here "
    "it is the cswin mechanism with one stripe covering the whole map, i.e. two branches of global attention "
    "with a LePE over C/2 channels each: the same heads, the same maths, the same parameters.",
))

_add(ModelSpec(
    name="pale-t",
    summary="Pale-T: pale-shaped attention (pale 7) with conv projections, CPE, 7x7 conv stem, 3x3 conv merging.",
    kind="hierarchical",
    embed_dims=(64, 128, 256, 512),
    depths=(2, 2, 16, 2),
    heads=(2, 4, 8, 16),
    attention=("pale",) * 4,
    attention_options=_per_stage({"pale_size": 7}),
    stem="conv7",
    stem_padding=3,
    merge="conv3",
    patch_size=4,
    cpe=True,
    drop_path_rate=0.2,
    paper={"params": "22M", "flops": "4.2G", "top1": "83.4"},
    target={"params": 22.0e6, "macs": 4.2e9},
    sources="Wu et al., Pale Transformer (AAAI 2022); no official code exists. Widths 64-128-256-512, depths "
    "2-2-16-2, pale size 7 and the conv stem/merging are the configuration that reproduces the paper's 22M "
    "and 4.2G (research/mechanisms.md §5.4-5.5).",
    derived="Derived, not published: heads 2-4-8-16 (head dim 32, as CSWin-T; heads change neither params nor "
    "MACs); the LayerNorm after the stem and after each merging conv (as CSWin); stem padding 3 (the "
    "unofficial port); the CPE is a depthwise 3x3 conv with bias added residually before each block's "
    "attention; drop-path 0.2 (as the other tiny models).",
))

_add(ModelSpec(
    name="slide-swin-t",
    summary="Slide-Swin-T: slide attention (k = 3) in stages 1-2, global attention with Swin's relative bias in 3-4.",
    kind="hierarchical",
    embed_dims=(96, 192, 384, 768),
    depths=(2, 2, 6, 2),
    heads=(3, 6, 12, 24),
    attention=("slide", "slide", "swin", "swin"),
    attention_options=({"kernel_size": 3}, {"kernel_size": 3}, {"window_size": 14, "shift": None},
                       {"window_size": 7, "shift": None}),
    stem="patch",
    merge="patch-merging",
    patch_size=4,
    drop_path_rate=0.2,
    paper={"params": "29M", "flops": "4.6G", "top1": "82.3"},
    target={"params": 28.35e6, "macs": 4.85e9, "macs_deploy": 4.70e9},
    sources="LeapLabTHU/Slide-Transformer slide_transformer/models/slide_swin.py and cfgs/slide_swin_t.yaml "
    "(KA 3, NUM_SLIDE_STAGES 2, WINDOW_SIZE 56 clamped to the map).",
    derived="The released config clamps the window to the map, so at 224² stages 3-4 are global attention "
    "with a relative-bias table of the map's size ((2*14-1)² and (2*7-1)² entries): here swin windows of 14 "
    "and 7. At other sizes the released model's tables no longer fit the map; here the windows stay 14 and 7 "
    "(windowed attention with Swin's alternation). The paper's FLOPs (4.6G) fit 7x7 windows in stage 3 better "
    "(research/mechanisms.md §8.6); the released config is followed. deploy() merges the two shift convs.",
))
