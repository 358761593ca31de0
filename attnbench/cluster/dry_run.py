"""``attnbench run SUITE --executor submitit --dry-run``: the shard plan, with no scheduler and no job.

Why it needs neither Slurm nor submitit: the plan is pure data (``plan.make_plan``), so a user can
check on a laptop how a sweep will be split before taking it to the cluster.
"""
from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table

from .. import devices
from . import ClusterOptions
from .plan import make_plan
from .submitit_executor import remote_devices


def print_shard_plan(suite, opts: ClusterOptions, device: str | None = None, console: Console | None = None):
    from ..runner import plan

    console = console or Console()
    remote = opts.cluster == "slurm"
    devs = remote_devices(suite.model.device, device, opts.gpus_per_job) if remote else \
        devices.resolve_devices(suite.model.device, device)
    cases = suite.expand(devs)
    # No matmul peak here: only the memory prediction skips cases; time bounds are applied in the jobs.
    the_plan = plan(suite, cases, {}, check_devices=not remote)
    to_run = [c for c in cases if c.key() not in the_plan.skips]
    shards = make_plan(to_run, opts.shards, opts.gpus_per_job)
    console.print(f"[bold]attnbench[/bold] {suite.name}: {len(cases)} cases on {', '.join(devs)}; "
                  f"{len(the_plan.skips)} skipped before submission "
                  f"({', '.join(f'{n} {s}' for s, n in Counter(s for s, _ in the_plan.skips.values()).items()) or 'none'}), "
                  f"{len(to_run)} in {len(shards)} shard(s) on cluster '{opts.cluster}'")
    if remote and "auto" in (suite.model.device if isinstance(suite.model.device, list) else [suite.model.device]) \
            and device is None:
        console.print(f"device 'auto' means {devs[0]} on the cluster ({'no' if devs[0] == 'cpu' else 'GPU'} jobs; "
                      "set --device or --gpus-per-job 0 for CPU jobs)")
    table = Table(title="shard plan (one lane = one GPU or one CPU node; a lane runs its cases one at a time)")
    for col in ("shard", "device", "GPUs", "lane", "cases", "est. cost", "first case", "last case"):
        table.add_column(col, justify="right" if col in ("shard", "GPUs", "cases", "est. cost") else "left")
    for s in shards:
        for ln in s.lanes:
            table.add_row(str(s.index), s.device, str(s.gpus), ln.name, str(len(ln.cases)), f"{ln.cost:.0f}",
                          ln.cases[0].describe(), ln.cases[-1].describe())
    console.print(table)
    costs = [s.cost for s in shards]
    if costs:
        console.print(f"balance: the longest shard has {max(costs):.0f} cost units, the shortest {min(costs):.0f} "
                      "(1 unit per case + its GFLOPs, x3 for training)")
    arrays = sorted({(s.device, s.gpus) for s in shards})
    params = [f"{len(arrays)} job array(s)", f"timeout {opts.job_timeout_min:g} min per job",
              f"{suite.threads} CPU(s) per task"]
    if opts.partition:
        params.append(f"partition {opts.partition}")
    if opts.max_parallel:
        params.append(f"at most {opts.max_parallel} jobs at once")
    if any(d == "cpu" for d, _ in arrays) and remote:
        params.append("CPU jobs ask for whole nodes (--exclusive)")
    console.print("submission: " + ", ".join(params))
    console.print("[bold]dry run: no job is submitted[/bold] and nothing is written")
    return shards
