"""Slide attention (Slide-Transformer, Pan et al., CVPR 2023): local k×k attention from depthwise convs.

Why this file looks the way it does: the paper replaces Im2Col (gather the k² neighbours of every
query) by k² shifted copies of the key/value maps, each made by a depthwise conv with a one-hot
kernel, and adds a learnable conv of the same shape ("deformed shifting") whose weights are merged
into the fixed one for inference. Everything below follows the released code
(LeapLabTHU/Slide-Transformer, ``slide_swin.py`` ``SlideAttention``) except the qkv channel layout,
which attnbench standardises to (3, heads, d).

Key facts kept from the official code: the same two convs serve K and V; heads are folded into the
batch so conv weights are shared by all heads; the relative position term (heads, k²) is added to the
*keys*; zero padding inside the convs, and border offsets are **not** masked, so a border query also
attends "virtual" keys whose value is just the conv bias.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .base import AttentionBase, AttentionPattern, attend, is_int, total, trunc_normal_
from .reference import DenseForm
from .flex import FlexSpec
from .registry import register
from .slide_kernel import Geometry, inference_block_elements, slide_attention, train_block_elements


def window_rule(radius: int):
    """Mask rule: the (2·radius+1)² neighbourhood of the query, clipped to the grid."""

    def rule(head: Tensor, qr: Tensor, qc: Tensor, kr: Tensor, kc: Tensor) -> Tensor:
        near = ((qr - kr).abs() <= radius) & ((qc - kc).abs() <= radius)
        return near & (head >= 0)  # broadcast over heads by arithmetic (flex's compiler cannot lower expand here)

    k = 2 * radius + 1
    rule.__name__ = f"slide_k{k}x{k}"
    rule.__doc__ = f"Note: k is allowed when |row(q) - row(k)| <= {radius} and |col(q) - col(k)| <= {radius}."
    return rule


def one_hot_shift_weight(channels: int, kernel_size: int, **dd: Any) -> Tensor:
    """Depthwise weight (channels·k², 1, k, k): output c·k² + i copies input c at offset (i//k - k//2, i%k - k//2)."""
    k2 = kernel_size * kernel_size
    eye = torch.eye(k2, **dd).view(k2, 1, kernel_size, kernel_size)
    return eye.repeat(channels, 1, 1, 1)


def shift_matrices(H: int, W: int, kernel_size: int, **dd: Any) -> Tensor:
    """Dense (k², N, N) shift operators: ``[i] @ x`` reads token n + offset_i, zero outside the grid."""
    r = kernel_size // 2
    row = torch.arange(H * W, device=dd.get("device")) // W
    col = torch.arange(H * W, device=dd.get("device")) % W
    mats = []
    for i in range(kernel_size * kernel_size):
        dr, dc = i // kernel_size - r, i % kernel_size - r
        mats.append((row[None, :] == row[:, None] + dr) & (col[None, :] == col[:, None] + dc))
    return torch.stack(mats).to(dd.get("dtype") or torch.get_default_dtype())


@register("slide")
class SlideAttention(AttentionBase):
    """Slide attention: each query attends its k×k neighbourhood, keys/values made by depthwise shift convs.

    Keys and values for the k² offsets come from a depthwise conv (d -> k²·d, kernel k, zero padding)
    with frozen one-hot weights and a trainable bias, plus (``deformable=True``) a learnable conv of the
    same shape; ``reparameterize()`` merges the two into one conv for inference. A (heads, k²) relative
    position term is added to the keys; softmax runs over the k² offsets; border offsets read zero
    padding (key = conv bias + position term, value = conv bias) and are not masked, as in the official code.
    Ω = 4NC² + 2k²NC + 2k⁴NC per shift conv branch (K and V).

    Args:
        kernel_size: odd neighbourhood size k (the released Slide-Swin uses 3).
        deformable: add the learnable ("deformed") shift branch; False keeps only the fixed one-hot shifts.
        backend: 'native' (the shift conv as GEMMs by row blocks, never holding the k² shifted copies; see mechanisms/slide_kernel.py), 'im2col' (F.unfold neighbourhoods; the learnable branch, if any, is applied as a k²×k² per-channel mix of the unfolded neighbours) or 'masked' (dense SDPA; exact, see README).
    """

    backends = ("native", "im2col", "masked", "flex")

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        kernel_size: int = 3,
        deformable: bool = True,
        backend: str = "native",
        **common: Any,
    ) -> None:
        super().__init__(dim, num_heads, backend=backend, **common)
        if not is_int(kernel_size) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(
                f"slide: kernel_size must be a positive odd int (the window is centred on the query), got {kernel_size!r}; use e.g. 3"
            )
        if not isinstance(deformable, bool):
            raise ValueError(f"slide: deformable must be True or False, got {deformable!r}")
        dd = {"device": common.get("device"), "dtype": common.get("dtype")}
        self.kernel_size = kernel_size
        self.deformable = deformable
        self.reparameterized = False
        d, k2 = self.head_dim, kernel_size * kernel_size
        self.shift_fixed: nn.Conv2d | None = self._shift_conv(**dd)
        with torch.no_grad():
            self.shift_fixed.weight.copy_(one_hot_shift_weight(d, kernel_size, **dd))
        self.shift_fixed.weight.requires_grad_(False)  # frozen one-hot kernels; the bias stays trainable
        self.shift_learned: nn.Conv2d | None = self._shift_conv(**dd) if deformable else None
        self.shift: nn.Conv2d | None = None  # the single merged conv, after reparameterize()
        self.relative_position_bias = nn.Parameter(torch.zeros(num_heads, k2, **dd))
        trunc_normal_(self.relative_position_bias, std=0.02)

    def _shift_conv(self, **dd: Any) -> nn.Conv2d:
        d, k = self.head_dim, self.kernel_size
        return nn.Conv2d(d, k * k * d, k, padding=k // 2, groups=d, bias=True, **dd)

    # ---------------------------------------------------------------------- re-parameterisation
    @torch.no_grad()
    def reparameterize(self) -> "SlideAttention":
        """Merge the fixed and learnable shift convs into one (conv is linear: weights and biases add).

        After this the forward runs the single conv and ``flops`` counts one conv per K and V. Idempotent.
        """
        if self.reparameterized:
            return self
        weight, bias = self.shift_weight_bias()
        merged = self._shift_conv(device=weight.device, dtype=weight.dtype)
        merged.weight.copy_(weight.reshape_as(merged.weight))
        merged.bias.copy_(bias.reshape(-1))
        merged.weight.requires_grad_(self.deformable)  # without the learnable branch it stays the frozen one-hot
        self.shift = merged
        self.shift_fixed = None
        self.shift_learned = None
        self.reparameterized = True
        return self

    def deploy(self) -> "SlideAttention":
        """The served form: a copy with the two shift convs merged into one (this module is unchanged)."""
        if self.reparameterized:
            return self
        return copy.deepcopy(self).reparameterize()

    def shift_weight_bias(self) -> tuple[Tensor, Tensor]:
        """Effective shift as (d, k², k²) mixing weights [channel, output offset, input offset] and (d, k²) bias."""
        d, k2 = self.head_dim, self.kernel_size**2
        if self.shift is not None:
            return self.shift.weight.view(d, k2, k2), self.shift.bias.view(d, k2)
        weight, bias = self.shift_fixed.weight.view(d, k2, k2), self.shift_fixed.bias.view(d, k2)
        if self.shift_learned is not None:
            weight = weight + self.shift_learned.weight.view(d, k2, k2)
            bias = bias + self.shift_learned.bias.view(d, k2)
        return weight, bias

    def _shifted(self, maps: Tensor) -> Tensor:
        """(b, d, H, W) -> (b, d·k², H, W): the k² shifted (and deformed) copies, channel c·k² + i."""
        if self.shift is not None:
            return self.shift(maps)
        out = self.shift_fixed(maps)
        if self.shift_learned is not None:
            out = out + self.shift_learned(maps)
        return out

    # ---------------------------------------------------------------------------------- forward
    def _heads_as_maps(self, t: Tensor, H: int, W: int) -> Tensor:
        """(B, heads, N, d) -> (B·heads, d, H, W): heads folded into the batch, as the official code does."""
        B = t.shape[0]
        return t.transpose(-2, -1).reshape(B * self.num_heads, self.head_dim, H, W)

    def _attend_offsets(self, q: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """q (B, h, N, d); keys, values (B, h, N, d, k²) -> (B, h, N, d): softmax over the k² offsets."""
        k2 = self.kernel_size**2
        keys = keys + self.relative_position_bias.view(1, self.num_heads, 1, 1, k2)
        logits = (q * self.scale).unsqueeze(-2) @ keys  # B, h, N, 1, k²
        attn = logits.softmax(dim=-1)
        if self._dropout_p():
            attn = F.dropout(attn, p=self._dropout_p())
        return (attn @ values.transpose(-2, -1)).squeeze(-2)  # B, h, N, d

    def shift_matrices_by_branch(self) -> list[Tensor]:
        """The shift convs as (k², d·k²) matrices, one per branch that runs: ``[i, c·k² + j] = W[c, i, j]``.

        Row i is output offset i of the depthwise conv; column c·k² + j is input channel c at kernel tap
        j, which is the channel order of ``F.unfold``. Training form: [fixed one-hot, learnable];
        deploy form (or ``deformable=False``): the one conv that runs.
        """
        d, k2 = self.head_dim, self.kernel_size**2
        convs = [self.shift] if self.shift is not None else [c for c in (self.shift_fixed, self.shift_learned) if c is not None]
        return [c.weight.view(d, k2, k2).transpose(0, 1).reshape(k2, d * k2) for c in convs]

    def forward(self, x: Tensor) -> Tensor:
        """The native backend runs channels-first from the qkv projection to the output projection (see
        ``_forward_native``); the other backends, and bad input, take the common path."""
        if self.backend != "native" or x.dim() != 4 or x.shape[-1] != self.dim:
            return super().forward(x)
        return self.proj_drop(self._forward_native(x))

    def _forward_native(self, x: Tensor) -> Tensor:
        """Slide without materialising the k² shifted copies of K and V, projections included.

        Channels first from the qkv projection on (as the released code), reached by GEMMs on the
        transposed operand (``bmm`` of the weight with xᵀ, and of the output with Wᵀ) instead of a
        transposing copy, which on CPUs cost more than the projection itself. The kernel itself is
        ``mechanisms.slide_kernel`` (row blocks, shifts as slices, the shift conv as GEMMs). Returns
        (B, H, W, C) after ``proj``.
        """
        B, H, W, C = x.shape
        h, d, ks = self.num_heads, self.head_dim, self.kernel_size
        N = H * W
        mats = self.shift_matrices_by_branch()
        g = Geometry(B=B, heads=h, d=d, H=H, W=W, ks=ks, branches=len(mats), scale=self.scale)
        tokens = x.reshape(B, N, C)
        if torch.is_grad_enabled() or torch.jit.is_tracing():  # (fvcore's jit handles take no out= GEMM)
            qkv = torch.bmm(self.qkv.weight.expand(B, -1, -1), tokens.transpose(1, 2))  # B, 3C, N
            if self.qkv.bias is not None:  # autograd: an in-place add on a slice would cost a full-size
                qkv = qkv + self.qkv.bias[:, None]  # gradient copy in backward
            maps = F.pad(qkv, (g.pad, g.pad))
            del qkv  # the padded copy replaces it (one 3C map alive, not two)
        else:  # GEMMs straight into the padded maps: padding a finished projection was a second pass
            maps = x.new_empty(B, 3 * C, N + 2 * g.pad)  # over it (a tenth of Slide's time at 112²)
            maps[..., : g.pad].zero_()
            maps[..., g.pad + N :].zero_()
            for b in range(B):  # mm takes a strided output in place; bmm copied it
                torch.mm(self.qkv.weight, tokens[b].t(), out=maps[b, :, g.pad : g.pad + N])
            if self.qkv.bias is not None:  # on the real positions only: the padding stays zero
                maps[..., g.pad : g.pad + N] += self.qkv.bias[:, None]
        maps = maps.view(B, 3, h, d, N + 2 * g.pad)
        _, bias = self.shift_weight_bias()  # (d, k²): the branches' biases summed
        key_bias = (bias.t()[None] + self.relative_position_bias[:, :, None]) * self.scale  # h, k², d
        out = slide_attention(maps, torch.cat(mats), torch.cat([m.t() for m in mats], 1), key_bias, bias, g,
                              self._dropout_p())  # B, h, d, N = B, C, N
        y = torch.bmm(out.reshape(B, C, N).transpose(1, 2), self.proj.weight.t().expand(B, -1, -1))  # B, N, C
        return (y + self.proj.bias).view(B, H, W, C)

    def _forward_im2col(self, x: Tensor) -> Tensor:
        """The paper's baseline: gather each k×k neighbourhood with F.unfold (zero padding), then attend.

        With a learnable branch, its conv is the per-channel k²×k² mix of the unfolded neighbours
        (exactly what a depthwise k×k conv computes), added to the unfolded copy (the one-hot branch);
        after ``reparameterize()`` one mix with the merged weights.
        """
        B, H, W, C = x.shape
        h, d, k, k2 = self.num_heads, self.head_dim, self.kernel_size, self.kernel_size**2
        q, kk, v = self.token_qkv(x)
        maps = torch.cat([self._heads_as_maps(kk, H, W), self._heads_as_maps(v, H, W)])  # 2·B·h, d, H, W
        cols = F.unfold(maps, k, padding=k // 2).view(2 * B * h, d, k2, H * W).transpose(-2, -1)  # ., d, N, k²
        weight, bias = self.shift_weight_bias()
        if not self.deformable:
            pass  # the one-hot shift is the unfold itself
        elif self.shift is not None:
            cols = cols @ weight.transpose(-2, -1)  # merged: one mix
        elif self.shift_learned is not None:
            cols = cols + cols @ self.shift_learned.weight.view(d, k2, k2).transpose(-2, -1)
        cols = cols + bias[:, None, :]
        shifted = cols.view(2, B, h, d, H * W, k2).transpose(3, 4)  # 2, B, h, N, d, k²
        out = self._attend_offsets(q, shifted[0], shifted[1])
        return self.merge_heads(out, H, W)

    def _forward_masked(self, x: Tensor) -> Tensor:
        """Dense SDPA with a mask; exact for both settings of ``deformable`` (see the two helpers)."""
        B, H, W, _ = x.shape
        q, k, v = self.token_qkv(x)
        if self.deformable:
            out = self._masked_slots(q, k, v, H, W)
        else:
            out = self._masked_tokens(q, k, v, H, W)
        return self.merge_heads(out, H, W)

    def _masked_tokens(self, q: Tensor, k: Tensor, v: Tensor, H: int, W: int) -> Tensor:
        """deformable=False: global SDPA over the N tokens plus the zero-padded border ("virtual") keys.

        Keys are the tokens of the map padded by r = k//2 on every side (padding keys are zero, as in
        the conv), with the k×k-neighbourhood mask. Slide's per-offset key bias b_i and position term
        rpb[h, i] become a query-dependent additive logit term scale·q·(b_i + rpb[h, i]) at the pair
        whose offset is i. The per-offset value bias needs the attention mass per offset: k² extra
        value channels hold a one-hot code of (row mod k, col mod k), which within one k×k window
        identifies the offset uniquely; the bias is then added as Σ_i mass_i · b_i.
        """
        B, h, N, d = q.shape
        ks, r = self.kernel_size, self.kernel_size // 2
        k2 = ks * ks
        Hp, Wp = H + 2 * r, W + 2 * r
        dev = q.device
        pad = lambda t: F.pad(t.view(B, h, H, W, d), (0, 0, r, r, r, r)).view(B, h, Hp * Wp, d)  # noqa: E731
        kp, vp = pad(k), pad(v)
        # Query and key coordinates on the padded grid.
        qrow = (torch.arange(N, device=dev) // W + r)[:, None]
        qcol = (torch.arange(N, device=dev) % W + r)[:, None]
        krow = (torch.arange(Hp * Wp, device=dev) // Wp)[None, :]
        kcol = (torch.arange(Hp * Wp, device=dev) % Wp)[None, :]
        dr, dc = krow - qrow, kcol - qcol
        allowed = (dr.abs() <= r) & (dc.abs() <= r)  # N, M
        offset = ((dr + r).clamp(0, ks - 1) * ks + (dc + r).clamp(0, ks - 1))  # N, M (valid where allowed)
        _, bias = self.shift_weight_bias()  # d, k²
        key_bias = bias[None] + self.relative_position_bias[:, None, :]  # h, d, k²
        per_offset = (q * self.scale) @ key_bias  # B, h, N, k²
        logit_bias = per_offset.gather(-1, offset.expand(B, h, N, Hp * Wp))
        logit_bias = logit_bias.masked_fill(~allowed, float("-inf"))
        residue = (krow.view(-1) % ks) * ks + (kcol.view(-1) % ks)  # M
        code = F.one_hot(residue, k2).to(vp.dtype).expand(B, h, Hp * Wp, k2)
        out = attend(q, kp, torch.cat([vp, code], -1), logit_bias, scale=self.scale, dropout_p=self._dropout_p())
        out, mass = out[..., :d], out[..., d:]  # mass: B, h, N, k² indexed by residue
        res = torch.arange(k2, device=dev)
        res_offset = ((res // ks - qrow + r) % ks) * ks + ((res % ks - qcol + r) % ks)  # N, k²: residue -> offset
        value_bias = bias.t()[res_offset]  # N, k², d
        return out + (mass.unsqueeze(-2) @ value_bias).squeeze(-2)

    def _masked_slots(self, q: Tensor, k: Tensor, v: Tensor, H: int, W: int) -> Tensor:
        """deformable=True: SDPA over the N·k² per-position slot keys, each query allowed its own k².

        The learnable branch makes the key of offset i at query n a per-channel mix of all k²
        neighbours of n, so it belongs to the query position, not to a key token; and the output is
        Σ_j (Σ_i a_i M[c, i, j]) v_c(n + δ_j), whose per-token weights differ per channel and are not a
        softmax. No single SDPA over token keys can express that, so the dense form runs over the
        k² slots of every position (exact; k² times the token-level cost).
        """
        B, h, N, d = q.shape
        k2 = self.kernel_size**2
        maps = torch.cat([self._heads_as_maps(k, H, W), self._heads_as_maps(v, H, W)])
        shifted = self._shifted(maps).view(2, B, h, d, k2, N).permute(0, 1, 2, 5, 4, 3)  # 2, B, h, N, k², d
        keys = shifted[0] + self.relative_position_bias.view(1, h, 1, k2, 1)
        keys, values = keys.reshape(B, h, N * k2, d), shifted[1].reshape(B, h, N * k2, d)
        own = torch.eye(N, dtype=torch.bool, device=q.device).repeat_interleave(k2, dim=1)  # N, N·k²
        return attend(q, keys, values, own, scale=self.scale, dropout_p=self._dropout_p())

    # ------------------------------------------------------------------------------- reference
    def dense_form(self, x: Tensor) -> DenseForm:
        """Slide for the float64 reference, with dense (N, N) shift matrices instead of convs.

        Every (query, offset) pair is its own key: key n·k² + i = Σ_j M[:, i, j] ⊙ (S_j k)_n + b_i +
        rpb[h, i] with S_j the zero-padded shift by offset j and M the (merged) mixing weights; the
        mask lets query n see only its own k² keys. Nothing here shares code with the conv path.
        """
        B, H, W, _ = x.shape
        q, k, v = self.token_qkv(x)  # B, h, N, d
        h, d, N, k2 = self.num_heads, self.head_dim, H * W, self.kernel_size**2
        S = shift_matrices(H, W, self.kernel_size, device=x.device, dtype=q.dtype)  # k², N, N
        weight, bias = self.shift_weight_bias()  # d, k², k²; d, k²

        def slots(t: Tensor) -> Tensor:  # B, h, N, d -> B, h, N·k², d
            neighbours = torch.einsum("jnm,bhmc->bhnjc", S, t)  # B, h, N, k²(in), d
            mixed = torch.einsum("cij,bhnjc->bhnic", weight, neighbours) + bias.t()  # B, h, N, k²(out), d
            return mixed

        keys = slots(k) + self.relative_position_bias.view(1, h, 1, k2, 1)
        values = slots(v)
        allowed = torch.eye(N, dtype=torch.bool, device=x.device).repeat_interleave(k2, dim=1)
        return DenseForm(
            q=q,
            k=keys.reshape(B, h, N * k2, d),
            v=values.reshape(B, h, N * k2, d),
            allowed=allowed.expand(h, N, N * k2),
        )

    def attention_memory_bytes(self, batch: int, H: int, W: int, element_size: int, train: bool,
                               device: str = "cpu") -> int:
        """What each backend materialises beyond the token activations (see ``flops`` for the shapes).

        native (``mechanisms.slide_kernel``): the zero-padded q/k/v maps, the attention weights (k² per
        query and head, kept for backward), and one row block's temporaries (about 2 block-sized
        tensors in inference, 6 in the backward), plus the maps' gradient in training.
        im2col: the k² unfolded copies of K and V, (2, B, h, N, d, k²), plus the copy their permute
        makes. flex (without the learnable branch): the zero-padded k and v maps and the per-tile
        copies and tables listed below. masked with the learnable branch: the same slot keys and values and (B, h, N, N·k²)
        logits, with an (N, N·k²) bool mask; without it: (B, h, N, M) logits over the M zero-padded
        map positions, their additive bias, and int64 coordinate broadcasts.
        """
        N, C, h, k2 = H * W, self.dim, self.num_heads, self.kernel_size**2
        keep = 4 if train else 2
        slots = 2 * batch * N * C * k2 * element_size
        if self.backend == "native":
            r = self.kernel_size // 2
            maps = 3 * batch * C * (N + 2 * (r * W + r)) * element_size
            attn = k2 * batch * h * N * element_size
            products = k2 * batch * C * N
            block = (train_block_elements(products) if train else inference_block_elements(products)) * element_size
            return maps * (2 if train else 1) + attn * (2 if train else 1) + block * (6 if train else 2)
        if self.backend == "im2col":
            return slots * keep
        if self.backend == "flex":
            r = self.kernel_size // 2
            padded = 2 * batch * C * (H + 2 * r) * (W + 2 * r) * element_size
            # per-tile key and value copies (about 2N keys: an 8x8 tile sees its 10x10 halo, padded
            # to the block size), the query copy, the per-query offset table and the values' k²
            # one-hot residue channels
            gathered = batch * element_size * (5 * C * N + 3 * h * N * k2)
            return padded + gathered
        if self.deformable:
            return slots + batch * h * N * N * k2 * element_size * keep + N * N * k2
        r = self.kernel_size // 2
        M = (H + 2 * r) * (W + 2 * r)
        return batch * h * N * M * element_size * (keep + 1) + N * M * (4 * 8 + 1)

    # ------------------------------------------------------------------------- what it attends
    def pattern(self, H: int, W: int) -> AttentionPattern:
        """The k×k neighbourhood clipped to the grid. Border queries also attend zero-padded virtual
        keys outside the grid (not tokens, so not in the pattern)."""
        self.check_size(H, W)
        return AttentionPattern(H, W, self.num_heads, window_rule(self.kernel_size // 2), f"slide_k{self.kernel_size}")

    def configured_unavailable_reason(self) -> str | None:
        if self.backend == "flex" and self.deformable:
            return ("slide: flex cannot express the learnable (deformed) shift branch exactly: it makes each "
                    "offset's key a per-channel mix of all k² neighbours, not a token key plus a bias (the "
                    "output weights per channel are not one softmax); use deformable=False or backend='native'")
        return None

    def flex_spec(self, H: int, W: int) -> FlexSpec:
        """k x k neighbourhoods: 8x8 query tiles, keys = the tile grown by k//2 on the zero-padded map
        (the convs' border offsets are virtual keys there)."""
        r = self.kernel_size // 2
        return FlexSpec(groups=None, reach=r, halo=r)

    def flex_offset_bias(self) -> tuple[Tensor, Tensor]:
        """Key bias b_i + rpb[h, i] and value bias b_i per offset i, each (heads, d, k²)."""
        _, bias = self.shift_weight_bias()  # d, k²
        key_bias = bias[None] + self.relative_position_bias[:, None, :]
        return key_bias, bias[None].expand(self.num_heads, -1, -1)

    def flops(self, H: int, W: int) -> dict[str, int]:
        """MACs of what the selected backend computes (bias adds are not counted, as in fvcore).

        native: q·k and attn·v over k² offsets, 2k²NC; each shift conv on K and on V costs k⁴NC
        (d·k² outputs × k² taps per head and position): 2k⁴NC after merging or with deformable=False,
        4k⁴NC with both branches. im2col: the unfold is free; the learnable branch (or the merged
        conv) is a k²×k² mix per channel, 2k⁴NC; none with deformable=False. masked, deformable=False:
        SDPA over N·(H+2r)(W+2r) pairs with value width d + k², plus 2k²NC for the per-offset bias
        terms; masked, deformable=True: the native shift convs plus SDPA over N·Nk² pairs.
        """
        self.check_size(H, W)
        N, C, k, h = H * W, self.dim, self.kernel_size, self.num_heads
        k2, k4 = k * k, k**4
        branches = 1 if (self.reparameterized or not self.deformable) else 2
        parts = {"linear": self.linear_macs(H, W)}
        if self.backend == "native":
            parts["shift_conv"] = 2 * branches * k4 * N * C
            parts["attention"] = 2 * k2 * N * C
        elif self.backend == "im2col":
            if self.deformable:
                parts["shift_mix"] = 2 * k4 * N * C
            parts["attention"] = 2 * k2 * N * C
        elif self.backend == "flex":  # token keys (deformable=False only) + per-offset bias terms
            parts["attention"] = 2 * k2 * N * C
            parts["offset_bias"] = 2 * k2 * N * C
        elif self.deformable:  # masked, slot keys
            parts["shift_conv"] = 2 * branches * k4 * N * C
            parts["attention"] = 2 * N * N * k2 * C
        else:  # masked, token keys
            M = (H + 2 * (k // 2)) * (W + 2 * (k // 2))
            parts["attention"] = N * M * C + N * M * (C + h * k2)
            parts["offset_bias"] = 2 * k2 * N * C
        return total(parts)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, kernel_size={self.kernel_size}, deformable={self.deformable}, "
            f"reparameterized={self.reparameterized}"
        )
