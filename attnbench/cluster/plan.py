"""The shard plan: which cases go to which job of the array, and to which GPU inside it.

Rules, and why:
- A *lane* is one timing resource: one GPU, or one CPU node. Its cases run one after another
  (one worker at a time), so timing cases never share a GPU or a CPU socket. A job with G GPUs has G
  lanes (one task per GPU, ``CUDA_VISIBLE_DEVICES`` set per task); a CPU job has one lane and asks
  Slurm for the node exclusively.
- Cases are grouped by device first: a GPU job never spends its GPU on CPU cases. Devices get
  shards in proportion to their estimated cost (at least one each).
- A *chain* (one configuration at all its sizes, ``runner.Calibration.config``) stays in one lane,
  in the suite's size order, so the skip rule "the same configuration at a smaller size already timed
  out" still works inside the lane.
- Chains are dealt to lanes longest first, each to the least loaded lane (LPT, within 4/3 of the
  optimal makespan). The cost of a case is one unit (worker start-up and the timing budget, which
  dominate at small sizes) plus its forward GFLOPs, times 3 for training.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..case import Case


@dataclass
class Lane:
    """The cases one GPU (or one CPU node) runs, in order."""

    shard: int
    rank: int
    device: str
    cases: list[Case] = field(default_factory=list)
    cost: float = 0.0

    @property
    def name(self) -> str:
        return f"s{self.shard:03d}-t{self.rank}"


@dataclass
class Shard:
    """One job of the array: ``gpus`` GPUs (0 on CPU), one lane per GPU."""

    index: int
    device: str
    gpus: int
    lanes: list[Lane]

    @property
    def cases(self) -> list[Case]:
        return [c for lane in self.lanes for c in lane.cases]

    @property
    def cost(self) -> float:
        return max((lane.cost for lane in self.lanes), default=0.0)


def case_cost(case: Case) -> float:
    """Relative cost of a case: 1 unit + forward GFLOPs (x3 when training)."""
    from ..predict import predict

    return 1.0 + 2 * predict(case).macs * (3 if case.mode == "train" else 1) / 1e9


def _allocate(costs: dict[str, float], total: int) -> dict[str, int]:
    """Shards per device: at least one each, the rest in proportion to cost (largest remainder)."""
    devices = list(costs)
    n = max(total, len(devices))
    out = {d: 1 for d in devices}
    spare = n - len(devices)
    whole = sum(costs.values()) or 1.0
    quota = {d: spare * costs[d] / whole for d in devices}
    for d in devices:
        out[d] += int(quota[d])
    left = n - sum(out.values())
    for d in sorted(devices, key=lambda d: quota[d] - int(quota[d]), reverse=True)[:left]:
        out[d] += 1
    return out


def make_plan(cases: list[Case], shards: int, gpus_per_job: int | None = None,
              cost: Callable[[Case], float] = case_cost) -> list[Shard]:
    """Split ``cases`` (suite order) into at most ``shards`` jobs (more only when there are more devices)."""
    from ..runner import Calibration

    order = {c.key(): i for i, c in enumerate(cases)}
    by_device: dict[str, list[Case]] = {}
    for c in cases:
        by_device.setdefault(c.device, []).append(c)
    costs = {d: sum(cost(c) for c in cs) for d, cs in by_device.items()}
    per_device = _allocate(costs, shards)
    plan: list[Shard] = []
    for device, dev_cases in by_device.items():
        gpus = (1 if gpus_per_job is None else gpus_per_job) if device == "cuda" else 0
        chains: dict[tuple, list[Case]] = {}
        for c in dev_cases:
            chains.setdefault(Calibration.config(c), []).append(c)
        n_jobs = min(per_device[device], len(chains))
        first = len(plan)
        jobs = [Shard(first + j, device, gpus, [Lane(first + j, r, device) for r in range(max(gpus, 1))])
                for j in range(n_jobs)]
        lanes = [lane for job in jobs for lane in job.lanes]
        weighted = sorted(((sum(cost(c) for c in ch), ch) for ch in chains.values()),
                          key=lambda t: (-t[0], order[t[1][0].key()]))
        for w, chain in weighted:
            lane = min(lanes, key=lambda ln: (ln.cost, ln.shard, ln.rank))
            lane.cases.extend(chain)
            lane.cost += w
        for job in jobs:
            job.lanes = [ln for ln in job.lanes if ln.cases]
            for ln in job.lanes:
                ln.cases.sort(key=lambda c: order[c.key()])
            if job.gpus:  # never ask for a GPU that would idle
                job.gpus = len(job.lanes)
        plan += [job for job in jobs if job.lanes]
    for i, job in enumerate(plan):  # renumber densely after dropping empty jobs
        job.index = i
        for ln in job.lanes:
            ln.shard = i
    return plan
