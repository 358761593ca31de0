"""Which attention path Swin should run per device and dtype: explicit q·kᵀ or SDPA (issue 11).

Times both paths of ``SwinAttention`` (``mechanisms.swin.EXPLICIT``) interleaved, one thread, forward
(inference) and a training step, plain and shifted, and prints median ratios explicit / SDPA with their
spread (below 1: explicit is faster). Run: ``python benchmarks/swin_paths.py [--device cuda] [--repeats 7]``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import mechanisms
from mechanisms import swin as swin_module

CONFIGS = [  # (batch, side, dim, heads): the Swin configurations and a highres one
    (2, 56, 96, 3),
    (4, 28, 192, 6),
    (1, 112, 64, 2),
]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def step_time(module, x, train: bool, device: str, reps: int = 3) -> float:
    """Median of ``reps`` calls (seconds)."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        if train:
            module(x).sum().backward()
        else:
            with torch.no_grad():
                module(x)
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, device {args.device}, 1 thread; ratio = explicit / SDPA time "
          f"(median of {args.repeats} interleaved repeats, [min, max])")
    print("| dtype | config | shift | mode | explicit ms | SDPA ms | ratio | spread |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        for B, side, dim, heads in CONFIGS:
            for shift in (0, 3):
                torch.manual_seed(0)
                m = mechanisms.build("swin", dim, heads, shift=shift).to(args.device, dtype)
                x = torch.randn(B, side, side, dim, device=args.device, dtype=dtype, requires_grad=True)
                for mode in ("forward", "train"):
                    m.train(mode == "train")
                    ratios, t = [], {True: [], False: []}
                    for _ in range(args.repeats):
                        for explicit in (True, False):
                            swin_module.EXPLICIT[(torch.device(args.device).type, dtype)] = explicit
                            step_time(m, x, mode == "train", args.device, reps=1)  # warm
                            t[explicit].append(step_time(m, x, mode == "train", args.device))
                        ratios.append(t[True][-1] / t[False][-1])
                    swin_module.EXPLICIT.clear()
                    print(f"| {dtype_name} | B{B} {side}² C{dim} h{heads} | {shift} | {mode} | "
                          f"{statistics.median(t[True]) * 1e3:.2f} | {statistics.median(t[False]) * 1e3:.2f} | "
                          f"{statistics.median(ratios):.2f} | [{min(ratios):.2f}, {max(ratios):.2f}] |", flush=True)


if __name__ == "__main__":
    main()
