"""Yardsticks: the released implementations' *computation*, rebuilt from what issue 11 records about it.

Benchmark-only, never shipped: the authors' code cannot be vendored, so each function below redoes
their sequence of operations on one of our modules' weights (same parameters, same output to float
rounding, checked by ``check()``), written from the facts, not copied:

- Swin: the shifted-window mask is computed once per resolution and kept (here: a dict keyed by size,
  standing in for their registered buffer, filled with -100 like theirs); the map is rolled and cut into
  windows *before* the qkv projection; attention is an explicit q·kᵀ, plus the gathered relative bias,
  plus the mask (broadcast over the batch), softmax, ·v; then proj, windows back, roll back.
- Slide: channels-first from the qkv projection on; K and V go through the fixed and the learnable
  depthwise convs separately (heads folded into the batch) and are summed; the position term is added
  to the keys; logits are an elementwise q·k product summed over channels, softmax over the k² offsets,
  and the output an elementwise attn·v sum over the offsets (no permute to (N, d, k²), no 1×d matmuls).
  Deploy form: the same computation with the one merged conv.
- CSWin (issue 11 records nothing about it; the facts here are the released file's sequence of
  operations): per branch, q/k/v are token-major slices of the qkv projection, each transposed to a
  channels-first map and cut into stripes by view + permute (their img2windows), every step followed by
  ``.contiguous()``; LePE is the depthwise conv on V's stripes; attention is explicit (q·kᵀ, softmax,
  ·v) plus LePE; the stripes are put back with the inverse permute, the branches concatenated, then
  proj.
"""
from __future__ import annotations

import torch
from torch import Tensor

_SWIN_MASKS: dict[tuple, Tensor] = {}


def swin(m, x: Tensor) -> Tensor:
    """Swin W-MSA / SW-MSA as released (sizes must be multiples of the window, as there)."""
    B, H, W, C = x.shape
    M, h, d = m.window_size, m.num_heads, m.head_dim
    s = m.effective_shift(H, W)
    nW, T = (H // M) * (W // M), M * M
    if s:
        x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
    win = x.view(B, H // M, M, W // M, M, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, T, C)
    qkv = m.qkv(win).reshape(-1, T, 3, h, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0] * m.scale, qkv[1], qkv[2]
    attn = q @ k.transpose(-2, -1)
    bias = m.relative_position_bias_table[m.relative_position_index.view(-1)].view(T, T, h).permute(2, 0, 1)
    attn = attn + bias.unsqueeze(0)
    if s:
        key = (H, W, M, s, x.device, x.dtype)
        if key not in _SWIN_MASKS:  # once per resolution, as their buffer
            img = torch.zeros(1, H, W, 1, device=x.device)
            n = 0
            for hs in (slice(0, -M), slice(-M, -s), slice(-s, None)):
                for ws in (slice(0, -M), slice(-M, -s), slice(-s, None)):
                    img[:, hs, ws, :] = n
                    n += 1
            mw = img.view(1, H // M, M, W // M, M, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, T)
            diff = mw.unsqueeze(1) - mw.unsqueeze(2)
            _SWIN_MASKS[key] = diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0).to(x.dtype)
        mask = _SWIN_MASKS[key]
        attn = attn.view(-1, nW, h, T, T) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, h, T, T)
    attn = attn.softmax(dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(-1, T, C)
    out = m.proj(out)
    out = out.view(B, H // M, W // M, M, M, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
    if s:
        out = torch.roll(out, shifts=(s, s), dims=(1, 2))
    return out


def slide(m, x: Tensor) -> Tensor:
    """Slide attention as released; the merged conv when ``m`` is re-parameterised (deploy form)."""
    B, H, W, C = x.shape
    h, d, k2 = m.num_heads, m.head_dim, m.kernel_size**2
    qkv = m.qkv(x).permute(0, 3, 1, 2).reshape(B, 3, h, d, H, W)  # channels first from here on
    q = qkv[:, 0].reshape(B, h, d, 1, H, W) * m.scale
    k = qkv[:, 1].reshape(B * h, d, H, W)
    v = qkv[:, 2].reshape(B * h, d, H, W)
    if m.shift is not None:
        k, v = m.shift(k), m.shift(v)
    else:
        k = m.shift_fixed(k) + m.shift_learned(k)
        v = m.shift_fixed(v) + m.shift_learned(v)
    k = k.reshape(B, h, d, k2, H, W) + m.relative_position_bias.view(1, h, 1, k2, 1, 1)
    v = v.reshape(B, h, d, k2, H, W)
    attn = (q * k).sum(2, keepdim=True).softmax(dim=3)
    out = (attn * v).sum(3).reshape(B, C, H, W).permute(0, 2, 3, 1)
    return m.proj(out)


def _contiguous_stripes(maps: Tensor, sh: int, sw: int) -> Tensor:
    """(B, C', H, W) -> (B·nS, sh·sw, C'), materialised (their img2windows ends in ``.contiguous()``)."""
    B, Cb, H, W = maps.shape
    return maps.view(B, Cb, H // sh, sh, W // sw, sw).permute(0, 2, 4, 3, 5, 1).contiguous().reshape(-1, sh * sw, Cb)


def cswin(m, x: Tensor) -> Tensor:
    """CSWin as released: explicit attention in stripes per branch, LePE on V's stripes.

    The released branch materialises each step: every token-major -> channels-first transpose, every
    stripe cut, the head split of q and k, and V and LePE in (heads, tokens, d) order are followed by
    ``.contiguous()``, and so are they here (the copies are part of the computation being measured; an
    earlier version of this yardstick let them stay views, which made it ~1.3x faster than the released
    code at sw=1).
    """
    B, H, W, C = x.shape
    h, d, half = m.num_heads // 2, m.head_dim, C // 2
    qkv = m.qkv(x.reshape(B, H * W, C)).reshape(B, H * W, 3, C).permute(2, 0, 1, 3)  # 3, B, L, C
    (vh, vw), (hh, hw) = m.stripe_shapes(H, W)
    outs = []
    for branch, (sh, sw) in enumerate(((vh, vw), (hh, hw))):
        q, k, v = (qkv[i][..., branch * half : (branch + 1) * half] for i in range(3))  # B, L, C/2 views
        T = sh * sw
        q, k = (_contiguous_stripes(t.transpose(-2, -1).contiguous().view(B, half, H, W), sh, sw)
                .reshape(-1, T, h, d).permute(0, 2, 1, 3).contiguous() for t in (q, k))
        vs = (v.transpose(-2, -1).contiguous().view(B, half, H // sh, sh, W // sw, sw)
              .permute(0, 2, 4, 1, 3, 5).contiguous().reshape(-1, half, sh, sw))
        lepe = m.lepe[branch](vs).reshape(-1, h, d, T).permute(0, 1, 3, 2).contiguous()
        v = vs.reshape(-1, h, d, T).permute(0, 1, 3, 2).contiguous()
        attn = ((q * m.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        out = (attn @ v + lepe).transpose(1, 2).reshape(-1, T, half)
        out = out.view(B, H // sh, W // sw, sh, sw, half).permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H * W, half)
        outs.append(out)
    return m.proj(torch.cat(outs, dim=-1)).view(B, H, W, C)


YARDSTICKS = {"swin": swin, "slide": slide, "cswin": cswin}


def check(name: str, module, x: Tensor, atol: float = 1e-4) -> float:
    """Max |authors' − ours| on one input (the yardstick must compute the same function)."""
    with torch.no_grad():
        err = (YARDSTICKS[name](module, x) - module(x)).abs().max().item()
    if not err <= atol:
        raise AssertionError(f"{name} yardstick differs from the module by {err:.3g} > {atol:g}")
    return err
