"""Interleaved CPU latency of Swin-T, Swin-T with pale attention and Pale-T at 224², batch 1, fp32,
one thread (docs/backbones.md): 7 rounds, each timing every model (3 calls, median), so machine
load drifts over all three alike; prints medians, IQRs and the per-round ratio."""
import statistics

import torch
from torch.utils import benchmark

from mechanisms import backbones as bb

torch.set_num_threads(1)
torch.manual_seed(0)
models = {n: bb.build(n.split("/")[0], attention=(n.split("/")[1] if "/" in n else None)).eval()
          for n in ["swin-t", "swin-t/pale", "pale-t"]}
x = torch.randn(1, 3, 224, 224)
times: dict[str, list[float]] = {n: [] for n in models}
with torch.inference_mode():
    for m in models.values():
        m(x)
    for _ in range(7):
        for n, m in models.items():
            times[n].append(benchmark.Timer("m(x)", globals={"m": m, "x": x}, num_threads=1).timeit(3).median)
base = statistics.median(times["swin-t"])
for n, ts in times.items():
    q = statistics.quantiles(ts, n=4)
    print(f"{n:12s} median {statistics.median(ts) * 1e3:7.1f} ms  IQR {q[0] * 1e3:.1f}-{q[2] * 1e3:.1f} ms  "
          f"ratio to swin-t {statistics.median(ts) / base:.2f}")
ratios = [p / s for p, s in zip(times["swin-t/pale"], times["swin-t"])]
print(f"per-round ratio swin-t/pale : swin-t  median {statistics.median(ratios):.2f}  "
      f"min {min(ratios):.2f}  max {max(ratios):.2f}")
