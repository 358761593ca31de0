"""The ``flex`` backend: one FlexAttention adapter generated from every mechanism's pattern rule.

Why one adapter: a mechanism already states *who attends whom* once, as its ``AttentionPattern.rule``.
Here that rule becomes the ``mask_mod`` of a compiled ``flex_attention`` call, so the same single
definition drives the reference, the ``masked`` backend and this fused block-sparse kernel. What a
mechanism adds is only how its tokens group (:class:`FlexSpec`, a token order: windows, stripes,
interlaced lines, tiles) and, where it has them, logit terms (Swin's relative bias) or per-offset
biases (Slide). Terms that are not logits (CSWin's LePE, Pale's conv projections) stay outside the
kernel, through the same ``token_qkv`` / ``output_term`` hooks the ``masked`` backend uses.

Block sparsity is the whole point (research/feasibility.md §4: 3.5 ms tile-major vs 82 ms row-major at
56² on one core). Tokens are therefore laid out group by group, each group starting on a block
boundary: a query block meets only the key blocks of its own group. Keys of a query group are the
group itself (windows, stripes, lines) or, for neighbourhoods, the tile grown by the rule's reach
(a key may then appear in several groups; a query sees only its own group's copy). The layout and the
``BlockMask`` are built once per (mechanism pattern, H, W, heads, device) and cached; block fullness
comes from the rule (evaluated on candidate blocks only) or, for exact partitions, from the padding.

Compiled, never eager: eager ``flex_attention`` materialises the full score matrix (an O(N²)
fallback), so this backend always calls ``torch.compile(flex_attention, dynamic=False)`` and makes
dynamo raise instead of silently falling back to eager when its recompile limit is hit. On CPU,
flex has no backward: a CPU call that needs gradients raises ``NotImplementedError`` with torch's
own message, and ``unavailable_reason`` reports the same for ``mode='train'``.
"""
from __future__ import annotations

import functools
import importlib
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import ceil_div

COMPILE_MODE = "torch.compile(flex_attention, dynamic=False), mode=default"
CPU_MAX_BLOCK = 64  # CPU template: block = group size up to this (49-token windows -> 49)
GPU_BLOCK = 128  # Triton: every default config's BLOCK_M/BLOCK_N divides 128 (fwd and bwd)
FLEX_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# (head, q_row, q_col, k_row, k_col) -> additive logit; vectorised like a pattern rule.
LogitTerm = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class FlexSpec:
    """How a mechanism's tokens group for flex.

    groups: (branches, H, W) int64 group id per token; branch j serves heads [j·h/b, (j+1)·h/b).
        The rule must allow only pairs inside one group (tests check it); tokens of a group are laid
        out contiguously. None: neighbourhood layout, square tiles grown by ``reach``.
    exact: the rule allows *every* pair inside a group, so full blocks follow from the padding alone
        (no rule evaluation; global attention at 224² would otherwise evaluate 2.5e9 pairs).
    reach: neighbourhood layouts: Chebyshev radius bounding the rule.
    halo: neighbourhood layouts: keys come from the map zero-padded by ``halo`` on every side
        (Slide's virtual border keys); key coordinates then range over [-halo, H + halo).
    """

    groups: Tensor | None = None
    exact: bool = False
    reach: int = 0
    halo: int = 0


# ------------------------------------------------------------------------------------ support
def flex_unavailable_reason(device: str | torch.device, dtype: torch.dtype, mode: str = "forward") -> str | None:
    """Why compiled flex cannot run here (one line), or None."""
    kind = torch.device(device).type
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError as exc:
        return f"torch {torch.__version__} has no FlexAttention ({exc}); it needs torch >= 2.5"
    if dtype not in FLEX_DTYPES:
        return f"flex kernels take float32, bfloat16 or float16, not {str(dtype).replace('torch.', '')}"
    if kind == "cpu":
        if not cpu_compiler():
            return "torch.compile on CPU needs a C++ compiler (g++/clang++; set CXX) and none is on PATH"
        if mode == "train":
            return cpu_backward_reason()
    if kind == "mps":
        try:
            importlib.import_module("torch._inductor.kernel.flex.flex_mps")
        except ImportError:
            return f"torch {torch.__version__} has no compiled FlexAttention for MPS; use a newer torch or backend='native'"
    if kind == "cuda":
        try:
            from torch.utils._triton import has_triton
        except ImportError:  # pragma: no cover - very old torch
            return "torch.compile on CUDA needs Triton, which this torch cannot find"
        if not has_triton():
            return "torch.compile on CUDA needs Triton (pip install triton matching this torch), which is not importable"
    return None


def cpu_compiler() -> str | None:
    """The C++ compiler inductor would use on CPU, or None."""
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


@functools.lru_cache(maxsize=1)
def cpu_backward_reason() -> str:
    """Torch's own message for a CPU flex backward, read off a tiny eager call (no compile)."""
    from torch.nn.attention.flex_attention import flex_attention

    q = torch.zeros(1, 1, 16, 16, requires_grad=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flex_attention(q, q, q).sum().backward()
    except Exception as exc:  # torch raises NotImplementedError; anything else is reported as is
        return f"FlexAttention on CPU is inference only: {' '.join(str(exc).split())}"
    return ""  # this torch can do it after all (the caller then treats CPU training as available)


# ------------------------------------------------------------------------------------- compile
_COMPILED: Callable[..., Tensor] | None = None
_FIRST_CALL_S: dict[tuple, float] = {}


def compiled_flex() -> Callable[..., Tensor]:
    """``torch.compile(flex_attention, dynamic=False)``, created once.

    A shape sweep recompiles per shape; past dynamo's recompile limit it would silently run the eager
    O(N²) fallback, so the limit is raised and hitting it is made an error.
    """
    global _COMPILED
    if _COMPILED is None:
        import torch._dynamo
        from torch.nn.attention.flex_attention import flex_attention

        cfg = torch._dynamo.config
        cfg.recompile_limit = max(cfg.recompile_limit, 256)
        cfg.accumulated_recompile_limit = max(cfg.accumulated_recompile_limit, 4096)
        cfg.fail_on_recompile_limit_hit = True
        _COMPILED = torch.compile(flex_attention, dynamic=False)
    return _COMPILED


# -------------------------------------------------------------------------------------- layout
@dataclass
class FlexLayout:
    """Token order, coordinate tables and block mask of one (pattern, H, W, heads, device).

    Slot tables are (heads, L): ``q_src``/``kv_src`` index the token map (its last row is a zero
    row used by pad slots); ``*_row``/``*_col`` are grid coordinates; ``q_seg``/``kv_seg`` the
    group of a slot (-1/-2 on padding, which never match); ``q_of_token`` (heads, N) is the slot
    holding each token's query, to undo the order.
    """

    q_src: Tensor
    kv_src: Tensor
    q_of_token: Tensor
    q_row: Tensor
    q_col: Tensor
    kv_row: Tensor
    kv_col: Tensor
    q_seg: Tensor
    kv_seg: Tensor
    block_mask: Any
    block_size: tuple[int, int]
    sparsity: float
    halo: int


def _block_for(size: int, device_type: str, exact_sizes: bool = True) -> int:
    """Block length for groups of at most ``size`` tokens.

    CPU, float32: the group itself up to 64 tokens (a 49-token window is one 49-token block). CPU,
    bfloat16/float16 (``exact_sizes=False``): rounded up to a multiple of 16 -- torch 2.13's CPU
    template returns wrong values or NaN for low-precision blocks of 17 or 49 (measured: rel L2 0.56
    on Swin, NaN on axial; exact with 32 and 64). Larger groups take the block of 32, 48 or 64 that
    pads them least: the CPU template is faster on small blocks (Pale at 112², one thread: 32 -> 384
    ms, 64 -> 423, 112 -> 825, 128 -> 939, 256 -> 1367) and odd sizes such as 121 were ~5x slower.
    GPUs: 128, which every default Triton tile (BLOCK_M/BLOCK_N, forward and backward) divides.
    """
    if device_type != "cpu":
        return GPU_BLOCK
    if size <= CPU_MAX_BLOCK:
        return size if exact_sizes else ceil_div(size, 16) * 16
    return min((32, 48, 64), key=lambda b: (ceil_div(size, b) * b, -b))


def _pack(group: Tensor, src: Tensor, block: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Lay out items by group, each group padded to whole blocks.

    group: (n,) group id per item (any ints), src: (n,) what each item is (token index).
    Returns slot_src (L,) with pad slots copying their group's first item, slot_seg (L,) the dense
    group index (-1 on pads), slot_of_item (n,) and slot_seg_full (L,) the group of every slot.
    """
    _, seg = torch.unique(group, return_inverse=True)
    order = torch.argsort(seg * group.numel() + torch.arange(group.numel(), device=group.device))
    counts = torch.bincount(seg)
    padded = ceil_div_t(counts, block) * block
    start = torch.cumsum(padded, 0) - padded  # first slot of each group
    first = torch.cumsum(counts, 0) - counts  # first item (in sorted order) of each group
    seg_sorted = seg[order]
    rank = torch.arange(group.numel(), device=group.device) - first[seg_sorted]
    slot_of_sorted = start[seg_sorted] + rank
    L = int(padded.sum())
    slot_seg_full = torch.repeat_interleave(torch.arange(len(counts), device=group.device), padded)
    slot_src = src[order][first][slot_seg_full].clone()  # default: group's first item
    slot_seg = torch.full((L,), -1, dtype=torch.long, device=group.device)
    slot_src[slot_of_sorted] = src[order]
    slot_seg[slot_of_sorted] = seg_sorted
    slot_of_item = torch.empty_like(order)
    slot_of_item[order] = slot_of_sorted
    return slot_src, slot_seg, slot_of_item, slot_seg_full


def ceil_div_t(a: Tensor, b: int) -> Tensor:
    return torch.div(a + b - 1, b, rounding_mode="floor")


def _partition_branch(groups: Tensor, device_type: str, block: int) -> dict[str, Tensor]:
    """Q and KV slots of one branch whose groups partition the grid (keys = the group itself)."""
    H, W = groups.shape
    g = groups.reshape(-1)
    tokens = torch.arange(H * W, device=g.device)
    src, seg, slot_of, seg_full = _pack(g, tokens, block)
    return {"q_src": src, "q_seg": seg, "q_of_token": slot_of, "q_seg_full": seg_full,
            "kv_src": src, "kv_seg": torch.where(seg >= 0, seg, torch.full_like(seg, -2)), "block": (block, block),
            "kv_row": torch.div(src, W, rounding_mode="floor"), "kv_col": src % W}


def _neighbourhood_branch(H: int, W: int, reach: int, halo: int, device_type: str, device: Any,
                          exact_sizes: bool = True) -> dict[str, Tensor]:
    """Queries in tr x tc tiles; each tile's keys are the tile grown by ``reach`` (clipped to the
    halo'd map), laid out per tile, so one query block meets only its own tile's key blocks.

    CPU: 8 x 8 tiles (64 queries; 100 keys for 3x3 neighbourhoods). GPUs: 8 x 16 = 128, one Triton block.
    """
    tr, tc = (8, 8) if device_type == "cpu" else (8, 16)
    rows = torch.arange(H, device=device)
    cols = torch.arange(W, device=device)
    tiles_w = ceil_div(W, tc)
    tile = (torch.div(rows, tr, rounding_mode="floor")[:, None] * tiles_w + torch.div(cols, tc, rounding_mode="floor")[None, :])
    q_block = _block_for(tr * tc, device_type, exact_sizes)
    q_src, q_seg, q_of, q_seg_full = _pack(tile.reshape(-1), torch.arange(H * W, device=device), q_block)
    # Keys of tile (a, b): rows [a·tr - reach, a·tr + tr + reach), cols likewise, inside [-halo, H + halo).
    side_r, side_c = tr + 2 * reach, tc + 2 * reach
    kv_block = _block_for(side_r * side_c, device_type, exact_sizes)
    n_tiles = ceil_div(H, tr) * tiles_w
    a = torch.div(torch.arange(n_tiles, device=device), tiles_w, rounding_mode="floor")
    b = torch.arange(n_tiles, device=device) % tiles_w
    kr = (a[:, None, None] * tr + torch.arange(side_r, device=device)[None, :, None] - reach).expand(n_tiles, side_r, side_c)
    kc = (b[:, None, None] * tc + torch.arange(side_c, device=device)[None, None, :] - reach).expand(n_tiles, side_r, side_c)
    inside = (kr >= -halo) & (kr < H + halo) & (kc >= -halo) & (kc < W + halo)
    Wp = W + 2 * halo
    key_src = torch.where(inside, (kr + halo) * Wp + kc + halo, torch.zeros_like(kr))
    per_tile = ceil_div(side_r * side_c, kv_block) * kv_block
    pad = per_tile - side_r * side_c

    def lay(t_: Tensor, fill: int) -> Tensor:
        return F.pad(t_.reshape(n_tiles, -1), (0, pad), value=fill).reshape(-1)

    seg = torch.arange(n_tiles, device=device)[:, None, None].expand(n_tiles, side_r, side_c)
    kv_seg = lay(torch.where(inside, seg, torch.full_like(seg, -2)), -2)
    return {"q_src": q_src, "q_seg": q_seg, "q_of_token": q_of, "q_seg_full": q_seg_full,
            "kv_src": lay(key_src, 0), "kv_seg": kv_seg,
            "kv_row": lay(kr, 0), "kv_col": lay(kc, 0), "block": (q_block, kv_block)}


def _stack(branches: list[dict[str, Tensor]], heads: int, name: str, length: int, fill: int) -> Tensor:
    """(heads, length) from per-branch tables, each padded with ``fill`` and repeated over its heads."""
    per = heads // len(branches)
    rows = [F.pad(b[name], (0, length - b[name].numel()), value=fill) for b in branches]
    return torch.stack(rows).repeat_interleave(per, dim=0)


def build_layout(module: Any, H: int, W: int, device: torch.device, dtype: torch.dtype = torch.float32,
                 kind: str | None = None) -> FlexLayout:
    """The slot tables and BlockMask for ``module`` at H x W on ``device`` for ``dtype`` (see FlexLayout).

    ``kind`` overrides the device type that picks block sizes (tests build the GPU layout on a CPU).
    """
    from torch.nn.attention.flex_attention import BlockMask

    pattern = module.pattern(H, W)
    spec: FlexSpec = module.flex_spec(H, W)
    heads, N, kind = module.num_heads, H * W, kind or device.type
    exact_sizes = dtype == torch.float32
    if spec.groups is not None:
        groups = spec.groups.to(device)
        sizes = [int(torch.unique(g, return_counts=True)[1].max()) for g in groups]
        block = _block_for(max(sizes), kind, exact_sizes)
        branches = [_partition_branch(g, kind, block) for g in groups]
    else:
        branches = [_neighbourhood_branch(H, W, spec.reach, spec.halo, kind, device, exact_sizes)]
    bq, bkv = branches[0]["block"]
    Lq = max(b["q_src"].numel() for b in branches)
    Lkv = max(b["kv_src"].numel() for b in branches)
    n_keys = (H + 2 * spec.halo) * (W + 2 * spec.halo)  # index of the zero row of the key map
    for b in branches:
        b["kv_src"] = torch.where(b["kv_seg"] >= 0, b["kv_src"], torch.full_like(b["kv_src"], n_keys))
        b["q_row"] = torch.div(b["q_src"], W, rounding_mode="floor")
        b["q_col"] = b["q_src"] % W
        if spec.groups is not None:
            b["kv_row"], b["kv_col"] = b["q_row"], b["q_col"]
    tab = {name: _stack(branches, heads, name, Lq, 0) for name in ("q_src", "q_row", "q_col")}
    tab["q_seg"] = _stack(branches, heads, "q_seg_full", Lq, -1)  # pad queries act as their group's first token
    tab.update({name: _stack(branches, heads, name, Lkv, 0) for name in ("kv_row", "kv_col")})
    tab["kv_src"] = _stack(branches, heads, "kv_src", Lkv, n_keys)
    tab["kv_seg"] = _stack(branches, heads, "kv_seg", Lkv, -2)
    tab["q_of_token"] = torch.stack([b["q_of_token"] for b in branches]).repeat_interleave(heads // len(branches), 0)

    rule = pattern.rule
    q_seg, q_row, q_col = tab["q_seg"], tab["q_row"], tab["q_col"]
    kv_seg, kv_row, kv_col = tab["kv_seg"], tab["kv_row"], tab["kv_col"]

    def mask_mod(b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
        same = q_seg[h, q] == kv_seg[h, k]
        return same & rule(h, q_row[h, q], q_col[h, q], kv_row[h, k], kv_col[h, k])

    mask_mod.__name__ = f"flex_{rule.__name__}"
    kv_num, kv_idx, full_num, full_idx = _classify(tab, rule, heads, len(branches), (bq, bkv), Lq, Lkv,
                                                   exact=spec.groups is not None and spec.exact)
    block_mask = BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=(bq, bkv),
                                          mask_mod=mask_mod, seq_lengths=(Lq, Lkv))
    visited = int(kv_num.sum() + full_num.sum())
    sparsity = 1.0 - visited / (heads * (Lq // bq) * (Lkv // bkv))
    return FlexLayout(q_src=tab["q_src"], kv_src=tab["kv_src"], q_of_token=tab["q_of_token"], q_row=q_row,
                      q_col=q_col, kv_row=kv_row, kv_col=kv_col, q_seg=q_seg, kv_seg=kv_seg, block_mask=block_mask,
                      block_size=(bq, bkv), sparsity=sparsity, halo=spec.halo)


def _classify(tab: dict[str, Tensor], rule: Any, heads: int, branches: int, block: tuple[int, int], Lq: int, Lkv: int,
              exact: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Partial and full KV blocks of every query block, per head, as BlockMask.from_kv_blocks wants.

    Candidates are the key blocks of the query block's group (groups start on block boundaries);
    each candidate is classified by evaluating the rule on its pairs (exact partitions: by padding).
    """
    bq, bkv = block
    nq, nkv = Lq // bq, Lkv // bkv
    per = heads // branches
    dev = tab["q_seg"].device
    partial = torch.zeros(heads, nq, nkv, dtype=torch.bool, device=dev)
    full = torch.zeros_like(partial)
    for j in range(branches):
        h = j * per
        qb_seg = tab["q_seg"][h].view(nq, bq)[:, 0]  # every slot of a block shares its group
        kvb_seg_all = tab["kv_seg"][h].view(nkv, bkv)
        kvb_seg = kvb_seg_all.max(dim=1).values  # -2 only when the whole block is padding
        cand = (qb_seg[:, None] == kvb_seg[None, :]) & (qb_seg[:, None] >= 0)
        qi, ki = cand.nonzero(as_tuple=True)
        if exact:
            is_full = (kvb_seg_all[ki] >= 0).all(dim=1)
            any_ok = torch.ones_like(is_full)
        else:
            is_full, any_ok = _evaluate(tab, rule, h, qi, ki, bq, bkv)
        full[h:h + per, qi[is_full], ki[is_full]] = True
        sel = any_ok & ~is_full
        partial[h:h + per, qi[sel], ki[sel]] = True

    def ordered(m: Tensor) -> tuple[Tensor, Tensor]:
        num = m.sum(-1).to(torch.int32)[None]
        idx = torch.argsort((~m).to(torch.int8), dim=-1, stable=True).to(torch.int32)[None]
        return num.contiguous(), idx.contiguous()

    return (*ordered(partial), *ordered(full))


def _evaluate(tab: dict[str, Tensor], rule: Any, h: int, qi: Tensor, ki: Tensor, bq: int, bkv: int,
              chunk_pairs: int = 1 << 23) -> tuple[Tensor, Tensor]:
    """(all allowed, any allowed) for candidate block pairs (qi, ki) of head ``h``, in chunks."""
    q_slots = torch.arange(bq, device=qi.device)
    k_slots = torch.arange(bkv, device=qi.device)
    out_all, out_any = [], []
    step = max(1, chunk_pairs // (bq * bkv))
    head = torch.tensor(h, device=qi.device)
    for s in range(0, qi.numel(), step):
        q = (qi[s:s + step, None] * bq + q_slots)[:, :, None]  # P, bq, 1
        k = (ki[s:s + step, None] * bkv + k_slots)[:, None, :]  # P, 1, bkv
        ok = tab["q_seg"][h][q] == tab["kv_seg"][h][k]
        ok = ok & rule(head, tab["q_row"][h][q], tab["q_col"][h][q], tab["kv_row"][h][k], tab["kv_col"][h][k])
        out_all.append(ok.flatten(1).all(1))
        out_any.append(ok.flatten(1).any(1))
    if not out_all:
        empty = torch.zeros(0, dtype=torch.bool, device=qi.device)
        return empty, empty
    return torch.cat(out_all), torch.cat(out_any)


_LAYOUTS: dict[tuple, FlexLayout] = {}


def layout_for(module: Any, H: int, W: int, device: torch.device, dtype: torch.dtype) -> FlexLayout:
    """Cached :func:`build_layout`: once per (mechanism type, rule, heads, H, W, device, fp32 or not)."""
    pattern = module.pattern(H, W)
    key = (type(module).__qualname__, pattern.rule.__name__, pattern.name, module.num_heads, H, W, str(device),
           dtype == torch.float32)
    layout = _LAYOUTS.get(key)
    if layout is None:
        layout = _LAYOUTS[key] = build_layout(module, H, W, device, dtype)
    return layout


# ------------------------------------------------------------------------------------- forward
def _gather(t: Tensor, src: Tensor) -> Tensor:
    """(B, h, M, d) token map -> (B, h, L, d) slots; ``src`` (h, L) may point at row M (zeros)."""
    B, h, M, d = t.shape
    t = torch.cat([t, t.new_zeros(B, h, 1, d)], dim=2)
    return t.gather(2, src[None, :, :, None].expand(B, h, src.shape[1], d))


def flex_attend(module: Any, q: Tensor, k: Tensor, v: Tensor, H: int, W: int) -> Tensor:
    """softmax(q kᵀ·scale + logit terms, masked by the pattern) v through compiled flex: (B, heads, N, d)."""
    if q.device.type == "cpu" and torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        reason = cpu_backward_reason()
        if reason:
            raise NotImplementedError(f"{reason} (run the forward under torch.no_grad() or torch.inference_mode())")
    reason = module.configured_unavailable_reason()
    if reason:
        raise NotImplementedError(reason)
    B, heads, N, d = q.shape
    lay = layout_for(module, H, W, q.device, q.dtype)
    if lay.halo:  # keys and values come from the zero-padded map (virtual border keys)
        r = lay.halo
        pad = lambda t: F.pad(t.reshape(B, heads, H, W, -1), (0, 0, r, r, r, r)).reshape(B, heads, -1, t.shape[-1])  # noqa: E731
        k, v = pad(k), pad(v)
    qs, ks = _gather(q, lay.q_src), _gather(k, lay.kv_src)
    vs = _gather(v, lay.kv_src)
    score_mod, extra = _score_terms(module, lay, qs, H, W)
    if extra is not None:
        vs = torch.cat([vs, extra["code"].to(vs.dtype).expand(B, heads, -1, -1)], dim=-1)
    call_key = (tuple(qs.shape), tuple(vs.shape), qs.dtype, str(qs.device), lay.block_size, lay.block_mask.mask_mod.__name__,
                score_mod is not None)
    fn = compiled_flex()
    first = call_key not in _FIRST_CALL_S
    if first:
        _sync(qs.device)
        start = time.perf_counter()
    out = fn(qs, ks, vs, score_mod=score_mod, block_mask=lay.block_mask, scale=module.scale)
    if first:
        _sync(qs.device)
        _FIRST_CALL_S[call_key] = time.perf_counter() - start
    module.flex_last = {"flex_block_sparsity": lay.sparsity, "compile_s": _FIRST_CALL_S[call_key],
                        "flex_block_size": lay.block_size[0]}
    if extra is not None:
        out, mass = out[..., :d], out[..., d:]  # mass per key residue class
        mass = mass.gather(-1, extra["res_of_offset"][None].expand(B, -1, -1, -1))  # per offset
        out = out + mass @ extra["value_bias"].to(out.dtype)[None]  # (heads, k², d)
    return out.gather(2, lay.q_of_token[None, :, :, None].expand(B, heads, N, out.shape[-1]))


def _score_terms(module: Any, lay: FlexLayout, qs: Tensor, H: int, W: int) -> tuple[Any, dict[str, Tensor] | None]:
    """score_mod from the mechanism's logit term and per-offset key biases, plus what the values need."""
    term: LogitTerm | None = module.flex_logit_term()
    offsets = module.flex_offset_bias()
    q_row, q_col, kv_row, kv_col = lay.q_row, lay.q_col, lay.kv_row, lay.kv_col
    if offsets is None:
        if term is None:
            return None, None

        def score_mod(score: Tensor, b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
            return score + term(h, q_row[h, q], q_col[h, q], kv_row[h, k], kv_col[h, k])

        return score_mod, None
    # Per-offset biases (Slide): key bias kb[h, :, i] adds scale·q·kb_i to the logit of the key at
    # offset i -- a per-query table read in score_mod; value bias vb_i is added as Σ_i mass_i·vb_i,
    # the mass per offset coming from one-hot residue channels appended to the values (within one
    # k x k neighbourhood the residue (row mod k, col mod k) names the offset).
    key_bias, value_bias = offsets  # (heads, d, k²) each
    ks = int(round(key_bias.shape[-1] ** 0.5))
    r = ks // 2
    table = (qs * module.scale) @ key_bias[None].to(qs.dtype)  # B, h, Lq, k²

    def score_mod(score: Tensor, b: Tensor, h: Tensor, q: Tensor, k: Tensor) -> Tensor:
        dr = (kv_row[h, k] - q_row[h, q] + r).clamp(0, ks - 1)  # clamped: masked pairs read a valid entry
        dc = (kv_col[h, k] - q_col[h, q] + r).clamp(0, ks - 1)
        out = score + table[b, h, q, dr * ks + dc]
        return out if term is None else out + term(h, q_row[h, q], q_col[h, q], kv_row[h, k], kv_col[h, k])

    code = F.one_hot((kv_row % ks) * ks + kv_col % ks, ks * ks)[None]  # 1, heads, Lkv, k²
    i = torch.arange(ks * ks, device=qs.device)
    # residue class of the key at offset i of each query: ((row - r + i//k) mod k, (col - r + i%k) mod k)
    res_of_offset = ((q_row[..., None] - r + i // ks) % ks) * ks + (q_col[..., None] - r + i % ks) % ks  # heads, Lq, k²
    return score_mod, {"code": code, "res_of_offset": res_of_offset, "value_bias": value_bias.transpose(1, 2)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def flex_stats(module: Any) -> dict[str, Any]:
    """Block sparsity, block size and first-call (compile) seconds of the module's last flex call."""
    return dict(getattr(module, "flex_last", None) or {})
