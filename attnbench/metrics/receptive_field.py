"""What a mechanism can see: keys per query, reach after stacked layers, and the effective receptive field.

Why three numbers: the pattern says which tokens *can* influence a query (structure, exact, from
``pattern(H, W)``); stacking says after how many blocks every token can influence every other (the
quantity behind "larger receptive field" claims); the effective receptive field (Luo et al., 2016)
says where the influence actually goes in a randomly initialised stack, where the residual path and
the softmax make far tokens count far less than the mask suggests.

Structure (``rf_keys_*``, ``rf_reach_fraction``, ``rf_layers_to_full``) is the union over heads of
the mechanism's declared pattern on the real H x W grid; virtual keys (Slide's zero-padded border
offsets) carry no token and are not counted. Blocks have residual connections, so a token always
keeps what it reached before. A shifted Swin entry alternates plain and shifted windows, as its
blocks do (the mechanism's ``layer_options``). ``rf_layers_to_full`` is empty when no depth suffices.

ERF: the gradient of the summed channels of the centre token's output with respect to the input,
|.| averaged over a batch of N(0, 1) inputs, channels and ``erf_seeds`` initialisations, normalised
to sum 1. ``rf_erf_area95`` is the smallest fraction of tokens holding 95% of that mass,
``rf_erf_nonzero`` the fraction with any gradient at all (the structural footprint of the stack).
The map itself goes to samples.jsonl as ``rf_erf_map`` (row-major H x W) for the report's heatmaps.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ..accuracy.backbone import Block, build_attention_stack, layer_options
from ..results_schema import Column, is_missing
from . import Metric, MetricContext, SummaryColumn, register


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    depth: int = Field(2, ge=1, description="blocks in the ERF stack (and the depth rf_reach_fraction_depth reports)")
    erf_seeds: int = Field(4, ge=1, description="random initialisations averaged in the ERF")
    erf_batch: int = Field(8, ge=1, description="N(0, 1) inputs per initialisation")
    mlp_ratio: float = Field(2.0, gt=0)
    max_layers: int = Field(512, ge=1, description="give up the layers-to-full search (as 'never') after this many")


# ------------------------------------------------------------------------------ structure
def union_mask(module: torch.nn.Module, H: int, W: int) -> np.ndarray:
    """(N, N) bool: query q may attend key k in at least one head."""
    return module.pattern(H, W).dense().any(dim=0).numpy()


def _neighbours(mask: np.ndarray) -> np.ndarray:
    """Padded (N, K) key lists of a mask plus the query itself (the residual); pad index N = empty."""
    mask = mask | np.eye(len(mask), dtype=bool)
    counts = mask.sum(1)
    K = int(counts.max())
    out = np.full((len(mask), K), len(mask), dtype=np.int64)
    rows, cols = np.nonzero(mask)
    slot = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    out[rows, slot] = cols
    return out


class Reach:
    """Which inputs reach each token after each layer, as packed bitsets (N x ceil(N/64) words).

    ``step`` applies one layer: R_l[q] = R_{l-1}[q] | OR_{k in M_l[q]} R_{l-1}[k]. A dense boolean
    matrix product costs N³ per layer (minutes at 56²); the bitset gather costs N·K·N/64.
    """

    def __init__(self, N: int) -> None:
        self.N = N
        self.words = -(-N // 64)
        bits = np.zeros((N + 1, self.words * 64), dtype=bool)  # row N: the empty set (padding)
        bits[np.arange(N), np.arange(N)] = True
        self.bits = np.packbits(bits, axis=1, bitorder="little").view(np.uint64)
        full = np.zeros(self.words * 64, dtype=bool)
        full[:N] = True
        self.full = np.packbits(full, bitorder="little").view(np.uint64)

    def step(self, neighbours: np.ndarray, chunk_elems: int = 4_000_000) -> None:
        new = np.empty_like(self.bits)
        new[self.N] = 0
        rows = max(1, chunk_elems // (neighbours.shape[1] * self.words))
        for start in range(0, self.N, rows):
            nb = neighbours[start:start + rows]
            new[start:start + len(nb)] = np.bitwise_or.reduce(self.bits[nb], axis=1)
        self.bits = new

    def counts(self) -> np.ndarray:
        """Number of inputs each token reaches, (N,)."""
        return np.unpackbits(self.bits[: self.N].view(np.uint8), axis=1, bitorder="little")[:, : self.N].sum(1)

    def complete(self) -> bool:
        return bool((self.bits[: self.N] == self.full).all())

    def sets(self) -> np.ndarray:
        """(N, N) bool: [q, k] is True when input token k reaches q."""
        return np.unpackbits(self.bits[: self.N].view(np.uint8), axis=1, bitorder="little")[:, : self.N].astype(bool)


def layer_masks(mechanism: str, options: dict[str, Any], dim: int, num_heads: int, H: int, W: int) -> list[np.ndarray]:
    """The union masks of one period of the block schedule (1 mask, or 2 for alternating Swin)."""
    period = 2 if layer_options(mechanism, options, 0) != layer_options(mechanism, options, 1) else 1
    return [union_mask(m, H, W) for m in build_attention_stack(mechanism, options, dim, num_heads, period)]


def reach_after(masks: list[np.ndarray], layers: int) -> Reach:
    """Reach after ``layers`` blocks of the periodic schedule ``masks``."""
    reach = Reach(len(masks[0]))
    nbrs = [_neighbours(m) for m in masks]
    for layer in range(layers):
        reach.step(nbrs[layer % len(nbrs)])
    return reach


def layers_to_full(masks: list[np.ndarray], max_layers: int = 512) -> int | None:
    """First depth at which every token reaches every other; None when no depth does."""
    N = len(masks[0])
    if masks[0].all():
        return 1
    reach = Reach(N)
    nbrs = [_neighbours(m) for m in masks]
    period = len(nbrs)
    previous = reach.bits.copy()
    for layer in range(1, max_layers + 1):
        reach.step(nbrs[(layer - 1) % period])
        if reach.complete():
            return layer
        if layer % period == 0:
            if np.array_equal(reach.bits, previous):  # a whole period added nothing: it never will
                return None
            previous = reach.bits.copy()
    return None


def structure(mechanism: str, options: dict[str, Any], dim: int, num_heads: int, H: int, W: int,
              depth: int = 2, max_layers: int = 512) -> dict[str, Any]:
    masks = layer_masks(mechanism, options, dim, num_heads, H, W)
    N = H * W
    keys = masks[0].sum(1)
    module = build_attention_stack(mechanism, options, dim, num_heads, 1)[0]
    per_head = module.pattern(H, W).dense().sum(-1).float()
    return {
        "rf_keys_mean": float(keys.mean()),
        "rf_keys_min": int(keys.min()),
        "rf_keys_max": int(keys.max()),
        "rf_keys_per_head_mean": float(per_head.mean()),
        "rf_reach_fraction": float(keys.mean() / N),
        "rf_reach_fraction_depth": float(reach_after(masks, depth).counts().mean() / N),
        "rf_layers_to_full": layers_to_full(masks, max_layers),
        "rf_depth": depth,
    }


# ------------------------------------------------------------------------------------ ERF
def erf_map(mechanism: str, options: dict[str, Any], dim: int, num_heads: int, H: int, W: int, *, depth: int,
            seeds: int, batch: int, mlp_ratio: float = 2.0, seed: int = 0, device: Any = "cpu") -> np.ndarray:
    """(H, W) ERF of the centre token through ``depth`` random blocks, normalised to sum 1."""
    total = torch.zeros(H, W, dtype=torch.float64)
    for s in range(seeds):
        torch.manual_seed(seed * 1000 + s)
        stack = torch.nn.Sequential(*[Block(a, dim, mlp_ratio) for a in
                                      build_attention_stack(mechanism, options, dim, num_heads, depth)]).to(device)
        gen = torch.Generator().manual_seed(seed * 1000 + s)
        x = torch.randn(batch, H, W, dim, generator=gen).to(device).requires_grad_(True)
        y = stack(x)
        y[:, H // 2, W // 2, :].sum().backward()
        g = x.grad.abs().mean(dim=(0, 3)).double().cpu()
        total += g / g.sum()
    return (total / seeds).numpy()


def area_fraction(erf: np.ndarray, mass: float = 0.95) -> float:
    """Smallest fraction of tokens whose ERF values sum to at least ``mass`` of the total."""
    flat = np.sort(erf.ravel())[::-1]
    cum = np.cumsum(flat) / flat.sum()
    return float((np.searchsorted(cum, mass - 1e-12) + 1) / flat.size)


def measure(ctx: MetricContext) -> dict[str, Any]:
    case, opts = ctx.case, ctx.options or Options()
    torch.set_num_threads(ctx.threads)
    H, W = case.height, case.width
    row = structure(case.mechanism, case.options_dict(), case.dim, case.num_heads, H, W, opts.depth, opts.max_layers)
    erf = erf_map(case.mechanism, case.options_dict(), case.dim, case.num_heads, H, W, depth=opts.depth,
                  seeds=opts.erf_seeds, batch=opts.erf_batch, mlp_ratio=opts.mlp_ratio, seed=case.seed, device=ctx.device)
    row.update({
        "rf_erf_area95": area_fraction(erf, 0.95),
        "rf_erf_area50": area_fraction(erf, 0.50),
        "rf_erf_nonzero": float((erf > 0).mean()),
    })
    ctx.add_samples("rf_erf_map", erf.ravel().tolist())
    return row


def _layers_cell(row: Any) -> str:
    v = row.get("rf_layers_to_full")
    if is_missing(v):
        return "" if is_missing(row.get("rf_keys_mean")) else "never"
    return f"{float(v):.0f}"


METRIC = register(Metric(
    name="receptive_field",
    measure=measure,
    doc="keys per query, layers to full reach, and the effective receptive field of a random stack",
    columns=(
        Column("rf_keys_min", "float", "keys"), Column("rf_keys_mean", "float", "keys"),
        Column("rf_keys_max", "float", "keys"), Column("rf_keys_per_head_mean", "float", "keys"),
        Column("rf_reach_fraction", "float", "fraction", "tokens one layer reaches, averaged over queries"),
        Column("rf_reach_fraction_depth", "float", "fraction", "the same after `depth` blocks"),
        Column("rf_depth", "int", "blocks"),
        Column("rf_layers_to_full", "int", "blocks", "blocks until every token reaches every token; empty = never"),
        Column("rf_erf_area95", "float", "fraction"), Column("rf_erf_area50", "float", "fraction"),
        Column("rf_erf_nonzero", "float", "fraction"),
    ),
    options=Options,
    options_key="receptive_field",
    summary=(SummaryColumn("layers to full", "rf_layers_to_full", render=_layers_cell),
             SummaryColumn("ERF95", "rf_erf_area95", ".2f")),
))
