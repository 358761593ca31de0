"""Which linear the projections should run at inference: ``F.linear`` (addmm) or oneDNN's (issue 11).

Times both on the projection shapes of the highres suite and of the kernels suite's four stages,
interleaved, one thread, under ``no_grad``, and prints median ratios oneDNN / addmm with their spread
(below 1: oneDNN is faster). ``mechanisms.projection.ONEDNN_MAX_IN_FEATURES`` is set from this table.
Run: ``python benchmarks/linear_paths.py [--repeats 5]``.
"""
from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

from mechanisms.projection import onednn_linear_available

SHAPES = [  # (label, tokens, in_features, out_features)
    ("highres 112² qkv", 12544, 64, 192),
    ("highres 112² proj", 12544, 64, 64),
    ("stage 1 B2 56² qkv", 2 * 3136, 96, 288),
    ("stage 1 B2 56² proj", 2 * 3136, 96, 96),
    ("CSWin sw=2 B2 28² qkv (C=128)", 2 * 784, 128, 384),
    ("stage 2 B8 28² qkv", 8 * 784, 192, 576),
    ("CSWin sw=7 B2 14² qkv (C=256)", 2 * 196, 256, 768),
    ("stage 3 B1 14² qkv", 196, 384, 1152),
    ("stage 3 B8 14² proj", 8 * 196, 384, 384),
    ("stage 4 B8 7² qkv", 8 * 49, 768, 2304),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--block", type=float, default=0.3, help="seconds per timed block")
    args = ap.parse_args()
    if not onednn_linear_available():
        raise SystemExit("linear_paths: this torch build has no oneDNN linear (torch.ops.mkldnn._linear_pointwise)")
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, CPU, 1 thread, no_grad; ratio = oneDNN / addmm time "
          f"(median of {args.repeats} interleaved repeats, [min, max])\n")
    print("| dtype | shape | tokens × in → out | addmm ms | oneDNN ms | ratio | spread |")
    print("|---|---|---|---|---|---|---|")
    stmts = {"addmm": "F.linear(x, w, b)", "onednn": 'torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")'}
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        for label, tokens, fin, fout in SHAPES:
            torch.manual_seed(0)
            env = {"F": F, "torch": torch, "x": torch.randn(1, tokens, fin, dtype=dtype),
                   "w": torch.randn(fout, fin, dtype=dtype), "b": torch.randn(fout, dtype=dtype)}
            times: dict[str, list[float]] = {k: [] for k in stmts}
            with torch.no_grad():
                for r in range(args.repeats):
                    for key in (list(stmts) if r % 2 == 0 else list(stmts)[::-1]):
                        t = Timer(stmts[key], globals=env).blocked_autorange(min_run_time=args.block)
                        times[key].append(t.median)
            ratios = [a / b for a, b in zip(times["onednn"], times["addmm"])]
            print(f"| {dtype_name} | {label} | {tokens} × {fin} → {fout} | {statistics.median(times['addmm']) * 1e3:.3f} | "
                  f"{statistics.median(times['onednn']) * 1e3:.3f} | {statistics.median(ratios):.2f} | "
                  f"[{min(ratios):.2f}, {max(ratios):.2f}] |", flush=True)


if __name__ == "__main__":
    main()
