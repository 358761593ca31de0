"""Before/after and vs-authors tables of the native kernels (issue 11), measured in one run.

Three implementations of each configuration run on the same weights and input, interleaved (the
order rotates every repeat), on one thread: ``ours`` (this checkout), ``before`` (the mechanisms
package at commit 3a8355a, imported from a ``git worktree`` of it) and ``authors`` (the released
computation rebuilt in ``benchmarks/authors.py``). A repeat times a block of calls per implementation
(the block sized to ~``--block`` seconds); ratios are per repeat and reported as median [min, max].

    git worktree add /tmp/k11-before 3a8355a        # once
    python benchmarks/kernel_tables.py --before /tmp/k11-before [--repeats 5] > results/kernels/tables.md

Tables: (1) the issue's configurations, authors' time / ours (above 1: ours faster) and before / ours;
(2) highres shapes (dim 64, 2 heads, batch 1): swin-shifted / swin and pale / cswin latency, before and
after; (3) efficiency at 112² fp32 forward (2·MACs / time / the matmul peak measured in this run);
(4) Slide's and Swin's peak tensor memory at the highres sizes (profiler allocator events, as the
``memory`` metric), before and after.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

import mechanisms

sys.path.insert(0, str(Path(__file__).resolve().parent))
import authors  # noqa: E402

from attnbench.devices import matmul_peak_gflops  # noqa: E402
from attnbench.metrics.memory import profiler_peak_bytes, tensor_bytes  # noqa: E402

MIB = 2**20


def load_before(root: Path):
    """The mechanisms package of another checkout, imported as ``mechanisms_before``."""
    spec = importlib.util.spec_from_file_location("mechanisms_before", root / "mechanisms" / "__init__.py",
                                                  submodule_search_locations=[str(root / "mechanisms")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["mechanisms_before"] = module
    spec.loader.exec_module(module)
    return module


CLASSES = {"swin": ("swin", "SwinAttention"), "slide": ("slide", "SlideAttention"), "cswin": ("cswin", "CSWinAttention"),
           "pale": ("pale", "PaleAttention"), "axial": ("axial", "AxialAttention"),
           "global": ("global_attention", "GlobalAttention")}


def build_pair(before_pkg, name: str, dim: int, heads: int, deploy: bool, **opts):
    """(ours, before) with the same weights; ``deploy`` merges Slide's convs in both."""
    torch.manual_seed(0)
    ours = mechanisms.build(name, dim, heads, **opts)
    with torch.no_grad():  # move trainable parameters off their init so every term matters
        for p in ours.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    mod, cls = CLASSES[name]
    old = getattr(getattr(before_pkg, mod), cls)(dim, heads, **opts)
    old.load_state_dict(ours.state_dict())
    if deploy and name == "slide":
        ours, old = ours.deploy(), old.reparameterize()
    return ours, old


def make_step(fn: Callable, module, x: torch.Tensor, train: bool) -> Callable[[], None]:
    if train:
        module.train()
        xg = x.clone().requires_grad_(True)
        g = torch.randn_like(fn(xg)).detach()

        def step() -> None:
            xg.grad = None
            module.zero_grad(set_to_none=True)
            fn(xg).backward(g)

        return step
    module.eval()

    def fwd() -> None:
        with torch.no_grad():
            fn(x)

    return fwd


def race(steps: dict[str, Callable[[], None]], repeats: int, block_s: float) -> dict[str, list[float]]:
    """Per-call seconds of each step, ``repeats`` interleaved blocks each (rotating order)."""
    names = list(steps)
    calls = {}
    for n in names:  # warm up and size the block
        steps[n]()
        t = time.perf_counter()
        steps[n]()
        calls[n] = max(1, int(block_s / max(time.perf_counter() - t, 1e-6)))
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names[r % len(names):] + names[: r % len(names)]:
            t = time.perf_counter()
            for _ in range(calls[n]):
                steps[n]()
            out[n].append((time.perf_counter() - t) / calls[n])
    return out


def ratio(num: list[float], den: list[float]) -> str:
    rs = [a / b for a, b in zip(num, den)]
    return f"{statistics.median(rs):.2f} [{min(rs):.2f}, {max(rs):.2f}]"


def ms(ts: list[float]) -> str:
    return f"{statistics.median(ts) * 1e3:.1f}"


ISSUE_CONFIGS = [  # (row label, mechanism, batch, side, dim, heads, options, deploy)
    ("Swin W-MSA, M=7, 56², C=96, 3 heads, B=2", "swin", 2, 56, 96, 3, {}, False),
    ("Swin SW-MSA, shift 3, same", "swin", 2, 56, 96, 3, {"shift": 3}, False),
    ("Swin SW-MSA, 28², C=192, 6 heads, B=4", "swin", 4, 28, 192, 6, {"shift": 3}, False),
    ("CSWin sw=1, 56², C=64, 2 heads, B=2", "cswin", 2, 56, 64, 2, {"split_size": 1}, False),
    ("CSWin sw=2, 28², C=128, 4 heads, B=2", "cswin", 2, 28, 128, 4, {"split_size": 2}, False),
    ("CSWin sw=7, 14², C=256, 8 heads, B=2", "cswin", 2, 14, 256, 8, {"split_size": 7}, False),
    ("Slide k=3, 56², C=96, 3 heads, B=2 (training form)", "slide", 2, 56, 96, 3, {}, False),
    ("Slide k=3, 56², C=96, 3 heads, B=2 (deploy form)", "slide", 2, 56, 96, 3, {}, True),
    ("Slide k=3, 28², C=192, 6 heads, B=4 (training form)", "slide", 4, 28, 192, 6, {}, False),
    ("Slide k=3, 28², C=192, 6 heads, B=4 (deploy form)", "slide", 4, 28, 192, 6, {}, True),
]


def table_authors(before_pkg, repeats: int, block_s: float) -> None:
    print("## 1. Against the released computation (authors' time / ours; before / ours)\n")
    print("Above 1: ours is faster. Slide's deploy rows run the merged conv in all three; a forward row of "
          "the training form is what `mode: forward` measured before the deploy form existed.\n")
    print("| configuration | mode | ours ms | before ms | authors ms | authors / ours | before / ours |")
    print("|---|---|---|---|---|---|---|")
    for label, name, B, side, dim, heads, opts, deploy in ISSUE_CONFIGS:
        ours, old = build_pair(before_pkg, name, dim, heads, deploy, **opts)
        x = torch.randn(B, side, side, dim)
        authors.check(name, ours, x)
        for mode in ("forward", "forward + backward"):
            train = mode != "forward"
            t = race({"ours": make_step(ours, ours, x, train), "before": make_step(old, old, x, train),
                      "authors": make_step(lambda y, m=ours: authors.YARDSTICKS[name](m, y), ours, x, train)},
                     repeats, block_s)
            print(f"| {label} | {mode} | {ms(t['ours'])} | {ms(t['before'])} | {ms(t['authors'])} | "
                  f"{ratio(t['authors'], t['ours'])} | {ratio(t['before'], t['ours'])} |", flush=True)
    print()


def table_pairs(before_pkg, sides: list[int], repeats: int, block_s: float) -> None:
    print("## 2. Highres shapes (dim 64, 2 heads, batch 1, float32): latency ratios within one implementation\n")
    print("| size | mode | swin-shifted / swin, ours | before | pale / cswin, ours | before |")
    print("|---|---|---|---|---|---|")
    for side in sides:
        x = torch.randn(1, side, side, 64)
        mods = {}
        for key, name, opts in (("swin", "swin", {}), ("shifted", "swin", {"shift": 3}), ("cswin", "cswin", {}),
                                ("pale", "pale", {})):
            mods[key] = build_pair(before_pkg, name, 64, 2, False, **opts)
        for mode in ("forward", "train"):
            train = mode == "train"
            steps = {f"{k}-{which}": make_step(m, m, x, train) for k, pair in mods.items()
                     for which, m in zip(("ours", "before"), pair)}
            t = race(steps, repeats if side < 224 else max(3, repeats // 2), block_s)
            print(f"| {side}² | {mode} | {ratio(t['shifted-ours'], t['swin-ours'])} | "
                  f"{ratio(t['shifted-before'], t['swin-before'])} | {ratio(t['pale-ours'], t['cswin-ours'])} | "
                  f"{ratio(t['pale-before'], t['cswin-before'])} |", flush=True)
    print()


def table_efficiency(before_pkg, repeats: int, block_s: float) -> None:
    peak = matmul_peak_gflops("cpu", torch.float32, 1)
    print(f"## 3. Efficiency at 112² float32 forward (dim 64, 2 heads, batch 1)\n\nMatmul peak measured in this run: "
          f"{peak:.1f} GFLOP/s (1 thread). Efficiency = 2 × analytic MACs of the form that ran / median time / peak.\n")
    print("| mechanism | MACs (G) | ours ms | ours efficiency | before ms | before efficiency |")
    print("|---|---|---|---|---|---|")
    x = torch.randn(1, 112, 112, 64)
    for label, name, opts in (("global", "global", {}), ("swin", "swin", {}), ("swin-shifted", "swin", {"shift": 3}),
                              ("cswin", "cswin", {}), ("axial", "axial", {}), ("pale", "pale", {}),
                              ("slide", "slide", {})):
        if name == "global":
            continue  # 12544² logits: minutes per call on one core, and not a windowed mechanism
        ours, old = build_pair(before_pkg, name, 64, 2, True, **opts)
        old_train_form = build_pair(before_pkg, name, 64, 2, False, **opts)[1]  # what `before` measured in forward
        t = race({"ours": make_step(ours, ours, x, False), "before": make_step(old_train_form, old_train_form, x, False)},
                 repeats, block_s)
        macs, macs_before = ours.flops(112, 112)["total"], old_train_form.flops(112, 112)["total"]
        eff = lambda m, ts: 2 * m / statistics.median(ts) / 1e9 / peak  # noqa: E731
        print(f"| {label} | {macs / 1e9:.3f} | {ms(t['ours'])} | {eff(macs, t['ours']):.0%} | {ms(t['before'])} "
              f"({macs_before / 1e9:.3f} G) | {eff(macs_before, t['before']):.0%} |", flush=True)
    print()


def peak_mib(module, x: torch.Tensor, train: bool) -> float:
    step = make_step(module, module, x, train)
    step()
    tensors = [x] if not train else [x, x]
    return (tensor_bytes(module, *tensors) + profiler_peak_bytes(step)) / MIB


def table_memory(before_pkg, sides: list[int]) -> None:
    print("## 4. Peak tensor memory, Slide vs Swin (dim 64, 2 heads, batch 1, float32; MiB)\n")
    print("Forward: the deploy form (ours) and the training form (before, as `mode: forward` measured it).\n")
    print("| size | mode | swin | slide ours | slide / swin | slide before | before / swin |")
    print("|---|---|---|---|---|---|---|")
    for side in sides:
        x = torch.randn(1, side, side, 64)
        for mode in ("forward", "train"):
            train = mode == "train"
            swin = peak_mib(build_pair(before_pkg, "swin", 64, 2, False)[0], x, train)
            ours = peak_mib(build_pair(before_pkg, "slide", 64, 2, not train)[0], x, train)
            old = peak_mib(build_pair(before_pkg, "slide", 64, 2, False)[1], x, train)
            print(f"| {side}² | {mode} | {swin:.1f} | {ours:.1f} | {ours / swin:.2f} | {old:.1f} | {old / swin:.2f} |",
                  flush=True)
    print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, default=Path("/tmp/k11-before"), help="checkout of commit 3a8355a")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--block", type=float, default=0.2, help="seconds per timed block")
    ap.add_argument("--sides", default="56,112,224", help="highres sizes for tables 2 and 4")
    ap.add_argument("--tables", default="1,2,3,4")
    args = ap.parse_args()
    torch.set_num_threads(1)
    before_pkg = load_before(args.before)
    sides = [int(s) for s in args.sides.split(",")]
    print(f"# Kernel tables (issue 11)\n\ntorch {torch.__version__}, CPU, 1 thread, {args.repeats} interleaved repeats, "
          f"blocks of ~{args.block:g} s; ratios are medians [min, max] over repeats.\n")
    which = set(args.tables.split(","))
    if "1" in which:
        table_authors(before_pkg, args.repeats, args.block)
    if "2" in which:
        table_pairs(before_pkg, sides, args.repeats, args.block)
    if "3" in which:
        table_efficiency(before_pkg, args.repeats, args.block)
    if "4" in which:
        table_memory(before_pkg, sides)


if __name__ == "__main__":
    main()
