"""Slide attention's native kernel: k×k local attention through a depthwise shift conv, by row blocks.

Why this shape (issue 11): the direct form materialises the k² shifted copies of K and V,
(2, B, heads, N, d, k²), which made Slide use 3.7x Swin's memory and run at 1-9% of the matmul peak.
Here nothing of that size exists:

- The maps (B, 3, h, d, L) are channels first and flattened row-major with r = k//2 zero rows plus r
  zeros on each side, so the shift by offset (dy, dx) is the contiguous slice starting at dy·W + dx. A
  horizontal shift then wraps into the next row at the left/right border; those reads must be the conv's
  zero padding, so the query (for keys) and the value mix (for values) are zeroed at wrapped columns.
- The shift conv is linear, so q·(conv_i k) = Σ_(c,j) W[c,i,j] · q_c k_c(n+δ_j): multiply the shifted
  keys by q channel-wise and one GEMM with the (k², d·k²) conv matrix gives all k² logits (the conv's
  k⁴NC MACs as a matmul, not a depthwise conv, which runs at a few % of the matmul peak on CPUs).
- Values take the conv transposed: Σ_i a_i (conv_i v)_c = Σ_j (Σ_i a_i W[c,i,j]) v_c(n+δ_j), a GEMM of
  the conv matrix with the attention, then a channel-wise multiply-and-sum with the shifted values.
- Conv biases and the position term are rank-k² products: key_bias·q and bias·attn.
- Two branches (training form) stack both conv matrices in the GEMMs; the deploy form runs the merged one.
- Heads and batch share the conv, so they ride along the GEMMs' long dimension: products are laid out
  (d, k², B, h, n) and the conv GEMMs are single ``mm`` calls (a batched GEMM of the same work ran 2-3x
  slower), which counters (fvcore, FlopCounterMode) see in full.
- Work goes by blocks of rows (r rows of halo each), so temporaries are O(block). Training uses a hand
  written backward (``SlideCore``) that keeps only the attention weights (k² per query and head) and
  recomputes the products per block; autograd through per-block slices would allocate a full-size
  gradient per block and slice.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

# Elements of one row block's products (B·C·k²·rows·W): about 4 MiB in fp32 for inference, cache-sized
# and small next to the map itself at every size we benchmark. Training holds about five such
# temporaries per block in the backward, so its blocks are half that at most, and at most an eighth of
# the map's products but not under a quarter of the inference block (peak memory within 2x Swin's at
# 56², where a step's other tensors are small). Measured on the 2-core Xeon, deploy form, forward +
# backward, 5 interleaved repeats (/tmp/k/slidetrainblk.py): 256 / 512 Ki / 1 / 2 Mi-element blocks
# took 97.8 / 78.3 / 85.4 / 95.8 ms at 28², C=192, B=4; 69.0 / 61.0 / 68.6 / 84.2 at 56², C=96, B=2;
# 76.4 / 67.7 / 76.8 / 93.6 at 112², C=64, B=1. A block is one operation per offset, so small ones pay
# per-call overhead, and large ones fall out of the cache.
ROW_BLOCK_ELEMENTS = 1 << 20
ROW_BLOCK_ELEMENTS_TRAIN = 1 << 19
# ... and in inference at most an eighth of the whole map's products. Measured on the 2-core Xeon,
# deploy form, dim 64, 2 heads, batch 1 (/tmp/slide_budget.py, 3 repeats): at 56² two 1 Mi-element
# blocks took 6.5-8.6 ms and 8.5-12.5 MiB, seven blocks of 256 Ki 5.3-5.5 ms and 5.5 MiB; at 112² and
# 224² the 1 Mi blocks stayed fastest (17-19 ms and 96-114 ms against 20-21 and 121-132 ms at 512 Ki).
MIN_BLOCKS = 8


def inference_block_elements(total: int) -> int:
    """Product elements of one inference row block, for a map whose products total ``total``."""
    return min(ROW_BLOCK_ELEMENTS, max(1, total // MIN_BLOCKS))


def train_block_elements(total: int) -> int:
    """Product elements of one training row block, for a map whose products total ``total``."""
    return min(ROW_BLOCK_ELEMENTS_TRAIN, max(ROW_BLOCK_ELEMENTS_TRAIN // 2, total // MIN_BLOCKS))


@dataclass(frozen=True)
class Geometry:
    """Where things are in the flattened, padded maps."""

    B: int
    heads: int
    d: int
    H: int
    W: int
    ks: int
    branches: int
    scale: float

    @property
    def r(self) -> int:
        return self.ks // 2

    @property
    def pad(self) -> int:
        return self.r * self.W + self.r

    @property
    def k2(self) -> int:
        return self.ks * self.ks

    def starts(self) -> list[int]:
        """Start of offset j's slice relative to the block's first padded position."""
        return [(j // self.ks) * self.W + j % self.ks for j in range(self.k2)]

    def blocks(self, train: bool = False) -> list[tuple[int, int]]:
        """(first position, positions) of each row block: the training or the inference block for this map."""
        per_row = max(1, self.B * self.heads * self.d * self.k2 * self.W)
        budget = (train_block_elements if train else inference_block_elements)(per_row * self.H)
        rows = max(1, min(self.H, budget // per_row))
        return [(r0 * self.W, (min(self.H, r0 + rows) - r0) * self.W) for r0 in range(0, self.H, rows)]

    def keep(self, device, dtype) -> list[Tensor]:
        """keep[b][x] = 1 when column x reads a real column under horizontal offset b - r."""
        col = torch.arange(self.W, device=device)
        return [((col + b - self.r >= 0) & (col + b - self.r < self.W)).to(dtype) for b in range(self.ks)]


def _views(maps: Tensor, g: Geometry, at: int, n: int) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """q (d, B, h, n) and the k² shifted key and value slices (d, B, h, n) of one block (views)."""
    q = maps[:, 0, ..., at + g.pad : at + g.pad + n].permute(2, 0, 1, 3)
    keys = [maps[:, 1, ..., at + s : at + s + n].permute(2, 0, 1, 3) for s in g.starts()]
    values = [maps[:, 2, ..., at + s : at + s + n].permute(2, 0, 1, 3) for s in g.starts()]
    return q, keys, values


def _masked(t: Tensor, keep: Tensor, g: Geometry, n: int) -> Tensor:
    """t (d, B, h, n) times the column mask ``keep`` (W,)."""
    return (t.reshape(g.d, g.B, g.heads, n // g.W, g.W) * keep).view(g.d, g.B, g.heads, n)


def _zero_wrapped_(grid: Tensor, g: Geometry, n: int) -> Tensor:
    """Zero, in place, the columns of a (d, k², B, h, n) tensor whose offset wraps across a row border."""
    view = grid.view(g.d, g.ks, g.ks, g.B, g.heads, n // g.W, g.W)
    for b in range(g.ks):
        if b < g.r:
            view[:, :, b, ..., : g.r - b] = 0
        elif b > g.r:
            view[:, :, b, ..., g.W - (b - g.r) :] = 0
    return grid


def _products(q_by_dx: list[Tensor], keys: list[Tensor], g: Geometry, n: int) -> Tensor:
    """u (d, k², B, h, n): u[c, j] = q_c · k_c(n + δ_j), zero where δ_j reads off the map's side."""
    u = keys[0].new_empty(g.d, g.k2, g.B, g.heads, n)
    for j, k in enumerate(keys):
        torch.mul(k, q_by_dx[j % g.ks], out=u[:, j])
    return u


def _heads_first(t: Tensor, g: Geometry, n: int) -> Tensor:
    """(x, B, h, n) -> (h, x, B·n), for the per-head position term."""
    return t.permute(2, 0, 1, 3).reshape(g.heads, t.shape[0], g.B * n)


def _attention(u: Tensor, q: Tensor, weight_k: Tensor, key_bias: Tensor, g: Geometry, n: int) -> Tensor:
    """Softmax over the k² offsets, (k², B·h·n)."""
    M = g.B * g.heads * n
    logits = torch.mm(weight_k, u.view(g.d * g.k2, M))  # branches·k², M
    if g.branches > 1:
        logits = logits.view(g.branches, g.k2, M).sum(0)
    position = torch.bmm(key_bias, _heads_first(q, g, n)).view(g.heads, g.k2, g.B, n).permute(1, 2, 0, 3)
    logits = logits.view(g.k2, g.B, g.heads, n) * g.scale + position
    return logits.softmax(dim=0).reshape(g.k2, M)


def _mix(attn: Tensor, weight_v: Tensor, g: Geometry, n: int) -> Tensor:
    """(d, k², B, h, n): [c, j] = Σ_i a_i W[c, i, j], zero where offset j wraps."""
    rep = attn.repeat(g.branches, 1) if g.branches > 1 else attn
    return _zero_wrapped_(torch.mm(weight_v, rep).view(g.d, g.k2, g.B, g.heads, n), g, n)


def forward_block(maps: Tensor, weight_k: Tensor, weight_v: Tensor, key_bias: Tensor, value_bias: Tensor,
                  g: Geometry, keep: list[Tensor], at: int, n: int) -> tuple[Tensor, Tensor]:
    """One block without autograd: (out (d, B, h, n), attention (k², B·h·n))."""
    q, keys, values = _views(maps, g, at, n)
    u = _zero_wrapped_(_products([q] * g.ks, keys, g, n), g, n)  # = products with the column-masked q
    attn = _attention(u, q, weight_k, key_bias, g, n)
    del u  # before the mix, which has its size: one block-sized temporary alive, not two
    mix = _mix(attn, weight_v, g, n)
    out = torch.mm(value_bias, attn).view(g.d, g.B, g.heads, n)
    for j, v in enumerate(values):
        out.addcmul_(mix[:, j], v)
    return out, attn


def forward_blocks(maps: Tensor, weight_k: Tensor, weight_v: Tensor, key_bias: Tensor, value_bias: Tensor,
                   g: Geometry, attn_all: Tensor | None = None, train: bool = False) -> Tensor:
    """(B, h, d, H·W) without autograd; the attention weights go to ``attn_all`` (k², B, h, H·W) if given."""
    keep = g.keep(maps.device, maps.dtype)
    out = maps.new_empty(g.B, g.heads, g.d, g.H * g.W)
    for at, n in g.blocks(train):
        o, a = forward_block(maps, weight_k, weight_v, key_bias, value_bias, g, keep, at, n)
        out[..., at : at + n] = o.permute(1, 2, 0, 3)
        if attn_all is not None:
            attn_all[..., at : at + n] = a.view(g.k2, g.B, g.heads, n)
    return out


class SlideCore(torch.autograd.Function):
    """maps (B, 3, h, d, L), conv matrices and biases -> (B, h, d, H·W), with a blockwise backward."""

    @staticmethod
    def forward(ctx, maps: Tensor, weight_k: Tensor, weight_v: Tensor, key_bias: Tensor, value_bias: Tensor,
                g: Geometry) -> Tensor:
        attn_all = maps.new_empty(g.k2, g.B, g.heads, g.H * g.W)
        out = forward_blocks(maps, weight_k, weight_v, key_bias, value_bias, g, attn_all, train=True)
        ctx.save_for_backward(maps, weight_k, weight_v, key_bias, value_bias, attn_all)
        ctx.g = g
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        maps, weight_k, weight_v, key_bias, value_bias, attn_all = ctx.saved_tensors
        g: Geometry = ctx.g
        keep = g.keep(maps.device, maps.dtype)
        d_maps = torch.zeros_like(maps)
        d_wk, d_wv = torch.zeros_like(weight_k), torch.zeros_like(weight_v)
        d_kb, d_vb = torch.zeros_like(key_bias), torch.zeros_like(value_bias)
        D, R = g.d * g.k2, g.branches * g.k2
        for at, n in g.blocks(train=True):
            M = g.B * g.heads * n
            q, keys, values = _views(maps, g, at, n)
            dq, dkeys, dvalues = _views(d_maps, g, at, n)
            grad = grad_out[..., at : at + n].permute(2, 0, 1, 3).contiguous()  # d, B, h, n
            attn = attn_all[..., at : at + n].reshape(g.k2, M)
            rep = attn.repeat(g.branches, 1) if g.branches > 1 else attn
            # out = value_bias·a + Σ_j mix_j ⊙ v_j
            mix = _mix(attn, weight_v, g, n)
            d_mix = grad.new_empty(g.d, g.k2, g.B, g.heads, n)
            for j, v in enumerate(values):
                dvalues[j].addcmul_(mix[:, j], grad)
                torch.mul(grad, v, out=d_mix[:, j])
            _zero_wrapped_(d_mix, g, n)
            grad2 = grad.view(g.d, M)
            d_attn = torch.mm(value_bias.t(), grad2)
            back = torch.mm(weight_v.t(), d_mix.view(D, M))  # branches·k², M
            d_attn = d_attn + (back.view(g.branches, g.k2, M).sum(0) if g.branches > 1 else back)
            d_wv += torch.mm(d_mix.view(D, M), rep.t())
            d_vb += torch.mm(grad2, attn.t())
            # softmax over the offsets, then logits = scale·(W_k u) + key_bias·q
            d_logits = attn * (d_attn - (attn * d_attn).sum(0, keepdim=True))
            d_heads = _heads_first(d_logits.view(g.k2, g.B, g.heads, n), g, n)  # h, k², B·n
            q_heads = _heads_first(q, g, n)  # h, d, B·n
            d_kb += torch.bmm(d_heads, q_heads.transpose(1, 2))
            dq_position = torch.bmm(key_bias.transpose(1, 2), d_heads).view(g.heads, g.d, g.B, n).permute(1, 2, 0, 3)
            d_raw = d_logits * g.scale
            d_raw = d_raw.repeat(g.branches, 1) if g.branches > 1 else d_raw  # R, M
            q_by_dx = [q if b == g.r else _masked(q, keep[b], g, n) for b in range(g.ks)]
            u = _products(q_by_dx, keys, g, n)
            d_wk += torch.mm(d_raw, u.view(D, M).t())
            d_u = torch.mm(weight_k.t(), d_raw).view(g.d, g.k2, g.B, g.heads, n)
            dq_by_dx = [torch.zeros_like(grad) for _ in range(g.ks)]
            for j, k in enumerate(keys):
                dkeys[j].addcmul_(d_u[:, j], q_by_dx[j % g.ks])
                dq_by_dx[j % g.ks].addcmul_(d_u[:, j], k)
            dq.add_(dq_position)
            for b in range(g.ks):
                dq.add_(dq_by_dx[b] if b == g.r else _masked(dq_by_dx[b], keep[b], g, n))
        assert R == weight_k.shape[0]
        return d_maps, d_wk, d_wv, d_kb, d_vb, None


def slide_rows_autograd(maps: Tensor, weight_k: Tensor, weight_v: Tensor, key_bias: Tensor, value_bias: Tensor,
                        g: Geometry, dropout_p: float) -> Tensor:
    """The same computation with plain autograd ops (slower, more memory in eager): the path with
    attention dropout, which the hand-written backward does not implement, and under torch.compile."""
    keep = g.keep(maps.device, maps.dtype)
    outs = []
    for at, n in g.blocks(train=True):
        q, keys, values = _views(maps, g, at, n)
        q_by_dx = [q if b == g.r else _masked(q, keep[b], g, n) for b in range(g.ks)]
        u = torch.stack([k * q_by_dx[j % g.ks] for j, k in enumerate(keys)], 1)
        attn = _attention(u, q, weight_k, key_bias, g, n)
        if dropout_p:
            attn = F.dropout(attn, p=dropout_p)
        rep = attn.repeat(g.branches, 1) if g.branches > 1 else attn
        mix = torch.mm(weight_v, rep).view(g.d, g.ks, g.ks, g.B, g.heads, n // g.W, g.W)
        mix = (mix * torch.stack(keep).view(1, 1, g.ks, 1, 1, 1, g.W)).view(g.d, g.k2, g.B, g.heads, n)
        out = torch.mm(value_bias, attn).view(g.d, g.B, g.heads, n)
        for j, v in enumerate(values):
            out = out + mix[:, j] * v
        outs.append(out)
    return torch.cat(outs, -1).permute(1, 2, 0, 3)


def slide_attention(maps: Tensor, weight_k: Tensor, weight_v: Tensor, key_bias: Tensor, value_bias: Tensor,
                    g: Geometry, dropout_p: float = 0.0) -> Tensor:
    """(B, h, d, H·W) output of Slide attention from the padded maps (see the module docstring)."""
    tensors = (maps, weight_k, weight_v, key_bias, value_bias)
    if torch.compiler.is_compiling():  # plain ops: the compiler fuses them and derives the backward itself
        return slide_rows_autograd(*tensors, g, dropout_p)
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
        return forward_blocks(*tensors, g)  # inference: plain ops (also what tracers and counters see)
    if dropout_p:
        return slide_rows_autograd(*tensors, g, dropout_p)
    return SlideCore.apply(*tensors, g)
