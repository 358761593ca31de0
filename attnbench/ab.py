"""``attnbench ab``: measure two versions of the mechanisms in one interleaved session and judge the pairs.

Why: on a shared machine most timing noise is drift over seconds to minutes that moves a whole run,
so two runs minutes apart cannot be told apart from a code change (issue 16 measured 3 false alarms
in 4 A/A run pairs). Measuring both versions of every case side by side, alternating, in R rounds
spread over the session, makes drift hit both alike; each round gives one head/base ratio per case
and the verdict comes from those R paired ratios (``attnbench.paired``).

How a session runs:
1. Both refs are resolved and ``mechanisms/`` plus the repository's plugin packages that the suite's
   mechanisms come from are exported at each (``attnbench.abtrees``); the harness is the running
   one. A ref at HEAD with uncommitted changes to those paths is refused (they would be ignored).
2. The suite (from the working tree) is validated against each side in an interpreter that imports
   that side's tree (``attnbench.abprobe``): cases, analytic MACs/params, predicted skips.
3. One worker process per side, of the same shape (threads, memory cap, imports), with its side's
   tree first on ``sys.path``. Both are started and idle before anything is timed, only one of
   them runs at a time, and both are replaced by fresh processes at every round. Why every round:
   a process carries its own bias (memory layout, library caches): in one A/A measured here with
   one long-lived worker per side, slide's latency differed by 51 % between two identical trees,
   consistently in all 10 rounds. Fresh processes per round turn that bias into between-round
   noise, which the interval sees, instead of a false regression. The workers are forked from a
   server that has imported torch and the harness (``worker_context``, ``FORKSERVER_PRELOAD``), so
   a fresh worker is ready in about 0.1 s here instead of an interpreter start-up of about 1.5 s.
   Forked workers would all share one memory layout per side, so each first shuffles its own,
   seeded by session seed, round and side (``worker.shuffle_layout``), before importing its tree.
4. Rounds: every round visits its cases in a fresh seeded random order; per case the side order
   runs AB, BA, BA, AB, ... over the case's rounds from a seeded random start (ABBA
   counterbalancing cancels a linear drift and any first-measured advantage). The schedule is
   stored in ``schedule.csv``. The suite's timing budget (``timing.min_run_time``) is split over
   the rounds. The first round also runs the suite's other measuring metrics (memory...) on both
   sides, one after the other.
5. Cost. From the second round on, a case whose call is short next to its round budget is
   *staged*: both sides' workers build it, warm it up and size its blocks at the same time (nothing
   is timed then), and only then is each side re-warmed and timed alone (``stage_case``). In a fresh
   process the first call of a case costs up to 5x a steady one, so this halves the untimed part of
   a round. A case whose one call outlasts its share of the budget is timed in
   fewer rounds (``rounds_for_call``: as many as its whole budget holds calls, never fewer than
   ``--min-rounds``), spread over the whole session; a round cannot time less than one call, so
   at all R rounds such a case would cost R x 2 calls a side where an ordinary run spends one budget.
6. Confirmation. A case whose paired ratios leave it anything but *unchanged* is timed again,
   after all rounds, in as many confirmation rounds as it had (``--confirm-rounds``)
   (``paired.confirmed_verdict``). An *inconclusive* one (the estimate passes the threshold, the
   interval holds 1) is judged from those alone: a noise burst on one side of two rounds in 16 is
   enough to hide a real +5 % slowdown, and on a shared machine bursts come and go. A *flagged* one
   keeps its flag unless they contradict it: a suite of 200 cases at 99 % expects one false flag a
   session, and a check must not fail on one look. Only those few cases pay for the second look.
7. One run directory: ``results.csv`` with a row per case and side (label ``<label> [base]`` /
   ``[head]``; with ``--variant`` the two labels themselves), ``samples.jsonl`` (blocks and round
   medians), ``env.json`` (both commits, the seed), ``ab.csv`` (verdicts), ``ab.md`` (the report),
   ``schedule.csv`` (with which rounds were confirmation rounds) and, for an A/A session,
   ``calibration.csv``.
"""
from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import UserError, devices, store
from .case import Case
from .executor import Outcome, _death, _Slot
from .paired import min_rounds as interval_min_rounds
from .paired import needs_confirmation
from .rounds import RoundCollector, round_budget
from .worker import GO, Job, WorkerInit

# ab's defaults, from benchmarks/ab_calibration.py on the 2-core VM (results/ab-calibration/, docs/
# regression.md): at 10 rounds one wild round (a noise burst that doubles or thins one side's time)
# is enough to make a real +10 % inconclusive, because the signed-rank interval at 95 % tolerates only
# 8 of the 55 Walsh averages below 1; 16 rounds tolerate 29 of 136, so a wild round (16) no longer
# decides. The threshold is the smallest change worth failing a check for: the paired interval already
# keeps A/A false alarms rare, so it can sit at 2 % and a +5 % change is caught (estimate above 2 %)
# where a 5 % threshold would catch it about half the time. ``compare`` keeps its own 5 % default.
DEFAULT_ROUNDS = 16
AB_DEFAULT_THRESHOLD = 0.02
# 99 %, not compare's 95 %: a false regression needs the interval to clear 1 by chance, which the
# signed-rank interval bounds at (1 - confidence)/2 a case whatever the machine's noise; at 95 % that
# is 2.5 %, and five calibrations measured 6 A/A false regressions in 550 (1.1 %, all estimates of
# +2.2-2.9 % with the interval just above 1). At 99 % (0.5 %) the same rounds gave none, and the few
# real slowdowns it leaves inconclusive are what confirmation rounds are for.
AB_DEFAULT_CONFIDENCE = 0.99
# Fewest rounds for a case whose one call outlasts its share of the budget (``rounds_for_call``).
# Resampling the kernels suite's A/A rounds (wall clock, ~4 % round spread) with a +10 % shift
# multiplied in: 8 rounds flag it 86-100 % of the time by latency band, 6 rounds 73-86 %; the
# smallest slowdown caught with 95 % probability is ~6 % at 8 rounds against ~4 % at 16.
DEFAULT_MIN_ROUNDS = 8
SIDES = ("base", "head")


@dataclass
class Side:
    name: str  # "base" | "head"
    ref: "Any"  # abtrees.Ref
    tree: Path
    probe: dict[str, Any] = field(default_factory=dict)
    cases: list[Case] = field(default_factory=list)


@dataclass
class Pair:
    """One compared case: the base side's case and the head side's, measured alternately."""

    base: Case
    head: Case
    base_row: Case  # as stored (label suffixed with the side)
    head_row: Case
    failed: bool = False


@dataclass
class Session:
    """Everything a finished ``ab`` session produced (what the report renders)."""

    run_dir: Path
    sides: dict[str, Side]
    pairs: list[Pair]
    rows: dict[str, dict[str, Any]]  # stored case key -> row
    ratios: dict[int, list[float]]  # pair index -> per-round head/base ratios
    only_base: list[Case]
    only_head: list[Case]
    rounds: int
    seed: int
    variant: tuple[str, str] | None
    wall_s: float
    rounds_of: dict[int, int] = field(default_factory=dict)  # pair index -> rounds it was timed in
    round_floor: int = DEFAULT_MIN_ROUNDS  # fewest rounds a case whose call outlasts its share gets
    confirm_ratios: dict[int, list[float]] = field(default_factory=dict)  # inconclusive pair -> its confirmation ratios
    notes: list[str] = field(default_factory=list)

    @property
    def same_code(self) -> bool:
        return self.sides["base"].ref.commit == self.sides["head"].ref.commit and self.variant is None


# ------------------------------------------------------------------------------------- schedule
def spread_rounds(count: int, rounds: int) -> list[int]:
    """``count`` of the session's round indices 0..rounds-1, evenly spaced and always with round 0, so a
    case timed in fewer rounds is still measured across the whole session, not only at its start."""
    count = max(1, min(int(count), rounds))
    if count == 1:
        return [0]
    return sorted({round(k * (rounds - 1) / (count - 1)) for k in range(count)})


def make_schedule(n_pairs: int, rounds: int, seed: int, rounds_of: dict[int, int] | None = None
                  ) -> list[tuple[int, int, str]]:
    """(round, pair index, side) in execution order: a seeded case order per round, ABBA per case.

    ``rounds_of`` (pair -> rounds) leaves a pair out of some rounds (``spread_rounds``); its side order
    alternates over its own rounds, so every case is counterbalanced however many rounds it gets. The
    random draws do not depend on ``rounds_of``: round 0 is the same schedule with or without it.
    """
    rng = np.random.default_rng(seed)
    first = rng.integers(0, 2, size=n_pairs)  # 0: base first in the pair's first round
    member = {i: set(spread_rounds((rounds_of or {}).get(i, rounds), rounds)) for i in range(n_pairs)}
    seen = [0] * n_pairs  # rounds of each pair scheduled so far
    out: list[tuple[int, int, str]] = []
    for r in range(rounds):
        for i in rng.permutation(n_pairs):
            i = int(i)
            if r not in member[i]:
                continue
            flip = seen[i] % 4 in (1, 2)  # AB, BA, BA, AB, ...
            seen[i] += 1
            base_first = (first[i] == 0) != flip
            order = SIDES if base_first else SIDES[::-1]
            out += [(r, i, order[0]), (r, i, order[1])]
    return out


def confirmation_schedule(counts: dict[int, int], first_round: int, seed: int) -> list[tuple[int, int, str]]:
    """(round, pair index, side) of the confirmation rounds: ``counts`` (pair -> rounds) numbered on
    from ``first_round``, in ``make_schedule``'s order (seeded case order per round, ABBA per case,
    fewer rounds spread), with its own seed so the confirmation does not replay the screening's order."""
    idx = sorted(counts)
    if not idx:
        return []
    total = max(counts.values())
    sub = make_schedule(len(idx), total, seed + 1, {k: counts[i] for k, i in enumerate(idx)})
    return [(first_round + r, idx[k], s) for r, k, s in sub]


def cases_to_confirm(ratios: dict[int, list[float]], rounds_of: dict[int, int], confirm_rounds: int | None,
                     failed: set[int], threshold: float, confidence: float) -> dict[int, int]:
    """Pair -> confirmation rounds, for each pair that is not unchanged after its rounds (inconclusive,
    or flagged: ``paired.confirmed_verdict``): as many rounds as it had (``confirm_rounds`` None) or
    ``confirm_rounds``; none when ``confirm_rounds`` is 0."""
    if confirm_rounds == 0:
        return {}
    out = {}
    for i, r in ratios.items():
        if i in failed or not r:
            continue
        if needs_confirmation(r, threshold=threshold, confidence=confidence):
            out[i] = confirm_rounds or rounds_of.get(i, len(r))
    return out


def stage_case(call_s: float, round_budget_s: float) -> bool:
    """Whether a case's later rounds are staged: only when its call is short next to a round's budget.

    Why: a staged worker waits, idle, while the other side is timed, so it re-warms before timing
    (``attnbench.metrics.timing.prepare_step``), which is affordable only for short calls. Staging a
    long call without that re-warm made its rounds noisier: in a kernels-suite A/A the round spread
    of the cases whose call outlasts their round budget rose from 3.9 % to 5.2 % (median), while the
    re-warmed short cases stayed at 4.0-4.1 %. Long calls run each side's whole job in turn, as the
    first round does.
    """
    from .metrics.timing import REWARM_FRACTION

    return math.isfinite(call_s) and 0 < call_s < REWARM_FRACTION * round_budget_s


def rounds_for_call(call_s: float, round_budget_s: float, rounds: int, floor: int) -> int:
    """Rounds a case is timed in: all of them while one call fits in a round's share of the budget;
    beyond that, as many as the case's whole budget holds calls, but never fewer than ``floor``.

    Why: a round times at least one call in a fresh process, after an untimed first call, so a case
    whose call outlasts its share costs ``rounds`` x 2 calls a side instead of the budget it has in
    an ordinary run (global 56² batch 8 train: ~60 s against ~2 s). Between-round noise did not
    shrink with longer calls here (robust sd of the log ratios ~4 % in every latency band of the
    kernels suite's A/A), so fewer rounds cost power, not correctness: the interval widens with them,
    and the A/A calibration reports each case's rounds and smallest detectable slowdown.
    """
    if not (call_s > 0 and math.isfinite(call_s)) or call_s <= round_budget_s:
        return rounds
    return int(min(rounds, max(floor, math.ceil(rounds * round_budget_s / call_s))))


# -------------------------------------------------------------------------------------- workers
# What the fork server imports before it forks a worker: what every worker would otherwise import
# again in every round, and nothing from a side's tree (each side's ``mechanisms/`` and plugins are
# imported after the fork, from that side's checkout; tests/test_ab_staged.py checks this list
# imports none of them). Measured here, in a fresh worker: torch's benchmark timer pulls in
# ``torch.utils.cpp_extension`` (~0.25 s), and the first ``backward(grad)`` imports sympy through
# ``torch.fx.experimental.symbolic_shapes`` (~0.24 s); on the smoke suite, whose rounds are ~0.1 s
# of timing, that was a third of each round.
FORKSERVER_PRELOAD = (
    "torch",
    "numpy",
    "torch.utils.benchmark",
    "torch.fx.experimental.symbolic_shapes",
    "attnbench.worker",
    "attnbench.metrics.timing",
    "attnbench.metrics.workload",
)


def worker_context() -> mp.context.BaseContext:
    """Where workers come from: a fork server that has imported torch, where the platform has one.

    Why: every round replaces both sides' workers (see the module docstring), and a spawned
    interpreter spends about 1.5 s here importing torch before it can measure anything; over 10
    rounds that is most of the cost of a short session. A child forked from a server that imported
    torch and the harness (``FORKSERVER_PRELOAD``, nothing of a side's tree) is still a fresh
    process with fresh allocator state, for a few milliseconds. The server never initialises CUDA
    or an OpenMP pool, so forking it is safe. Without ``forkserver`` (Windows), workers are spawned
    as before.
    """
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(list(FORKSERVER_PRELOAD))
    return ctx


class SideWorker:
    """One worker process for one side; started ahead and waited for, so start-up is never timed."""

    def __init__(self, init: WorkerInit, timeout_s: float) -> None:
        self.init = init
        self.timeout_s = timeout_s
        self.slot: _Slot | None = None
        self.ready = False
        self._ctx = worker_context()

    def launch(self, layout_seed: str | None = None) -> None:
        """Spawn the process (it imports torch and the side's tree) with its memory layout shuffled
        by ``layout_seed`` (``worker.shuffle_layout``); ``start`` waits for it."""
        if self.slot is None:
            self.init = replace(self.init, layout_seed=layout_seed)
            self.slot = _Slot(self._ctx, self.init, 10**9)
            self.ready = False

    def start(self) -> None:
        self.launch()
        if self.ready:
            return
        ready = wait([self.slot.conn, self.slot.proc.sentinel], timeout=600)
        if self.slot.conn in ready:
            try:
                if self.slot.conn.recv() == "ready":
                    self.ready = True
                    return
            except (EOFError, OSError):
                pass
        self.slot.proc.join(timeout=5)
        status, reason = _death(self.slot.proc.exitcode, self.init.log_path)
        self.close(kill=True)
        raise UserError(f"a worker for {self.init.paths[0] if self.init.paths else 'this tree'} failed to start: "
                        f"{reason}")

    def send(self, message: Any) -> float:
        """Send a job (or ``GO``); returns when, for ``reply``'s timeout."""
        self.start()
        try:
            self.slot.conn.send(message)
        except OSError:
            pass
        return time.monotonic()

    def reply(self, started: float) -> Outcome:
        """The worker's answer to what was sent at ``started``: its outcome, ``prepared`` for a staged
        job it holds ready, or how it died or overran (the process is then gone)."""
        slot = self.slot
        while True:
            ready = wait([slot.conn, slot.proc.sentinel], timeout=max(0.05, self.timeout_s - (time.monotonic() - started)))
            elapsed = time.monotonic() - started
            if slot.conn in ready or slot.conn.poll():
                try:
                    res = slot.conn.recv()
                except (EOFError, OSError):
                    res = None
                if isinstance(res, dict):
                    if res["status"] == "prepared":
                        return Outcome("prepared", None, {}, {}, res["wall_s"])
                    if res["status"] != "ok":
                        self.close(kill=True)  # a failure gets a fresh process, as in LocalExecutor
                    return Outcome(res["status"], res["error"], res["columns"], res["samples"], res["wall_s"])
            if not slot.proc.is_alive():
                slot.proc.join(timeout=5)
                status, reason = _death(slot.proc.exitcode, self.init.log_path)
                self.close(kill=True)
                return Outcome(status, reason, {}, {}, elapsed)
            if elapsed > self.timeout_s:
                self.close(kill=True)
                return Outcome("timeout", f"case did not finish within limits.timeout_s={self.timeout_s:g} s; "
                               "worker killed", {}, {}, elapsed)

    def run(self, job: Job) -> Outcome:
        return self.reply(self.send(job))

    def close(self, kill: bool = False) -> None:
        if self.slot is None:
            return
        self.slot.kill() if kill else self.slot.stop()
        self.slot = None


# --------------------------------------------------------------------------------------- setup
def _plugin_paths(repo: Path, modules: list[str]) -> tuple[list[str], list[str]]:
    """Repository paths (top-level package or module) of plugin modules, and modules found outside it."""
    import importlib

    inside, outside = [], []
    for name in modules:
        mod = sys.modules.get(name) or importlib.import_module(name)
        origin = Path(getattr(mod, "__file__", "") or "/").resolve()
        try:
            rel = origin.relative_to(repo)
        except ValueError:
            outside.append(name)
            continue
        inside.append(rel.parts[0])
    return sorted(set(inside)), outside


def _probe(side: Side, request: dict[str, Any], harness_root: Path, workdir: Path) -> dict[str, Any]:
    req = workdir / f"probe-{side.name}.json"
    res = workdir / f"probe-{side.name}.out.json"
    req.write_text(json.dumps({**request, "tree": str(side.tree)}), encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(side.tree), str(harness_root), *filter(None, [env.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, "-m", "attnbench.abprobe", str(req), str(res)], cwd=side.tree, env=env,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not res.exists():
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"could not load the suite at {side.name} {side.ref.name!r} ({side.ref.short}): {tail}")
    return json.loads(res.read_text(encoding="utf-8"))


def _geometry(c: Case) -> tuple:
    return (c.height, c.width, c.batch_size, c.dim, c.num_heads, c.dtype, c.device, c.mode, c.task)


def pair_cases(base: list[Case], head: list[Case], variant: tuple[str, str] | None
               ) -> tuple[list[tuple[Case, Case]], list[Case], list[Case]]:
    """Match base and head cases: by case key (else by label and geometry); with a variant, label A's
    cases against label B's at the same geometry."""
    if variant:
        a = {_geometry(c): c for c in base if c.label == variant[0]}
        b = {_geometry(c): c for c in head if c.label == variant[1]}
        for label, side in ((variant[0], a), (variant[1], b)):
            if not side:
                labels = sorted({c.label for c in base + head})
                raise UserError(f"--variant: no case of the suite has the label {label!r}; labels: {', '.join(labels)}")
        pairs = [(a[g], b[g]) for g in a if g in b]
        return pairs, [a[g] for g in a if g not in b], [b[g] for g in b if g not in a]
    head_by_key = {c.key(): c for c in head}
    head_by_id = {(c.label, *_geometry(c)): c for c in head}
    pairs, only_base, used = [], [], set()
    for c in base:
        h = head_by_key.get(c.key()) or head_by_id.get((c.label, *_geometry(c)))
        if h is None or h.key() in used:
            only_base.append(c)
            continue
        used.add(h.key())
        pairs.append((c, h))
    return pairs, only_base, [c for c in head if c.key() not in used]


def check_args(rounds: int, threshold: float, confidence: float, floor: int | None = None,
               confirm_rounds: int | None = None) -> int:
    """Refuse impossible settings; returns the round floor in force (never above ``rounds``, never
    below what the interval needs at ``confidence``)."""
    if not threshold >= 0:
        raise UserError(f"--threshold {threshold}: give a non-negative fraction, e.g. 0.05 for 5 %")
    if not 0.5 <= confidence < 1:
        raise UserError(f"--confidence {confidence}: give a value in [0.5, 1), e.g. 0.99")
    need = interval_min_rounds(confidence)
    if rounds < need:
        raise UserError(f"--rounds {rounds}: the signed-rank interval needs at least {need} rounds at "
                        f"{confidence:.0%} confidence; use --rounds {need} or more (default {DEFAULT_ROUNDS})")
    if confirm_rounds is not None and confirm_rounds != 0 and confirm_rounds < need:
        raise UserError(f"--confirm-rounds {confirm_rounds}: the signed-rank interval needs at least {need} rounds "
                        f"at {confidence:.0%} confidence; use --confirm-rounds {need} or more, or 0 to turn "
                        "confirmation off")
    if floor is None:
        floor = max(DEFAULT_MIN_ROUNDS, need)
    if floor < need:
        raise UserError(f"--min-rounds {floor}: the signed-rank interval needs at least {need} rounds at "
                        f"{confidence:.0%} confidence; use --min-rounds {need} or more (default {DEFAULT_MIN_ROUNDS})")
    return min(floor, rounds)


# ------------------------------------------------------------------------------------- session
def run_session(base_ref: str, head_ref: str, suite_path: str | Path, *, rounds: int = DEFAULT_ROUNDS,
                out: str | Path = "results", seed: int = 0, variant: tuple[str, str] | None = None,
                imports: tuple[str, ...] = (), min_run_time: float | None = None, repo: str | Path = ".",
                threshold: float = AB_DEFAULT_THRESHOLD, confidence: float = AB_DEFAULT_CONFIDENCE,
                min_rounds: int | None = None, confirm_rounds: int | None = None,
                log: Callable[[str], None] = lambda s: None) -> Session:
    """Run an A/B session and store it; returns the Session (``abreport`` turns it into verdicts)."""
    import importlib

    from . import abtrees
    from .runner import matmul_peaks, worker_imports
    from .suite import load_suite

    round_floor = check_args(rounds, threshold, confidence, min_rounds, confirm_rounds)
    if min_run_time is not None and not min_run_time > 0:
        raise UserError(f"--min-run-time {min_run_time}: give seconds > 0")
    t0 = time.monotonic()
    root = abtrees.repo_root(repo)
    refs = {"base": abtrees.resolve(root, base_ref), "head": abtrees.resolve(root, head_ref)}
    suite_path = Path(suite_path).resolve()
    for name in imports:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise UserError(f"--import {name}: {exc}") from None
    suite = load_suite(suite_path)  # the working tree's view: names the plugins to export
    if "time" not in suite.metrics:
        raise UserError(f"{suite_path}: ab compares latency, but the suite has no 'time' metric; add it to metrics:")
    devs = devices.resolve_devices(suite.model.device, None)
    plugin_modules = sorted(set(imports) | set(worker_imports(suite.expand(devs), suite.metrics)))
    inside, outside = _plugin_paths(root, plugin_modules)
    compared = sorted({"mechanisms", *inside})
    abtrees.check_not_ignoring_changes(root, list(refs.values()), compared)
    for ref in refs.values():
        if not any(abtrees.exists_at(root, ref.commit, p) for p in compared):
            raise UserError(f"ref {ref.name!r} ({ref.short}) has none of {', '.join(compared)}; nothing to compare there")

    threads = suite.threads
    dtypes = sorted({c.dtype for c in suite.expand(devs)} | {"float32"})
    peaks = {d: matmul_peaks(d, dtypes, threads) for d in devs if devices.is_available(d)}
    workdir = Path(tempfile.mkdtemp(prefix="attnbench-ab-"))
    try:
        sides: dict[str, Side] = {}
        for name, ref in refs.items():
            if name == "head" and ref.commit == refs["base"].commit:  # A/A or --variant on one ref: one tree
                sides[name] = Side(name, ref, sides["base"].tree)
                continue
            sides[name] = Side(name, ref, workdir / name)
            abtrees.export(root, ref.commit, compared, sides[name].tree)
        harness_root = Path(__file__).resolve().parents[1]
        request = {"suite": str(suite_path), "imports": plugin_modules, "devices": devs, "peaks": peaks}
        for side in sides.values():
            side.probe = _probe(side, {**request, "expect_mechanisms": (side.tree / "mechanisms").is_dir()},
                                harness_root, workdir)
            if "error" in side.probe:
                raise UserError(f"suite {suite_path.name} does not validate at {side.name} {side.ref.name!r} "
                                f"({side.ref.short}): {side.probe['error']}")
            side.cases = [Case.from_dict(d) for d in side.probe["cases"]]
        raw_pairs, only_base, only_head = pair_cases(sides["base"].cases, sides["head"].cases, variant)
        if not raw_pairs:
            raise UserError(f"base and head of {suite_path.name} have no case in common; nothing to compare")
        pairs = [Pair(b, h, *_row_cases(b, h, variant)) for b, h in raw_pairs]
        run_dir = store.create_run_dir(Path(out), f"{suite.name}-ab", devs[0],
                                       sha=f"{refs['base'].short}-{refs['head'].short}")
        env = devices.capture_env(devs[0], threads)
        env.update({
            "git_commit": refs["head"].short, "git_dirty": False, "matmul_peak_gflops": peaks.get(devs[0], {}),
            "matmul_peak_gflops_by_device": peaks,
            "ab": {"base_ref": refs["base"].name, "base_commit": refs["base"].commit, "head_ref": refs["head"].name,
                   "head_commit": refs["head"].commit, "rounds": rounds, "min_rounds": round_floor,
                   "confirm_rounds": "as many as the case had" if confirm_rounds is None else confirm_rounds,
                   "seed": seed,
                   "order": "seeded random case order per round; per case AB,BA,BA,AB,... from a seeded start",
                   "layout": "every worker's memory layout shuffled, seeded by seed/round/side (worker.shuffle_layout)",
                   "variant": list(variant) if variant else None, "compared_paths": compared,
                   "plugins_outside_repository": outside, "threshold": threshold, "confidence": confidence},
        })
        store.write_env(run_dir, env)
        store.write_suite(run_dir, suite.as_dict())
        session = _measure(suite, sides, pairs, run_dir, rounds=rounds, seed=seed, threads=threads, peaks=peaks,
                           min_run_time=min_run_time, round_floor=round_floor, threshold=threshold,
                           confidence=confidence, confirm_rounds=confirm_rounds, log=log)
        session.only_base, session.only_head = only_base, only_head
        session.variant = variant
        if outside:
            session.notes.append(f"plugin module(s) {', '.join(outside)} live outside this repository: the same "
                                 "code on both sides")
        session.wall_s = time.monotonic() - t0
        return session
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)


def _row_cases(b: Case, h: Case, variant: tuple[str, str] | None) -> tuple[Case, Case]:
    if variant:
        return b, h
    return replace(b, label=f"{b.label} [base]"), replace(h, label=f"{h.label} [head]")


def _initial_rows(sides: dict[str, Side], pairs: list[Pair], threads: int) -> dict[str, dict[str, Any]]:
    """A row per case and side before anything runs: predicted skips on either side (which end the
    pair), the analytic columns from the probe, and ``pending`` for what will be measured."""
    rows: dict[str, dict[str, Any]] = {}
    for p in pairs:
        for s, case, row_case in (("base", p.base, p.base_row), ("head", p.head, p.head_row)):
            static = sides[s].probe["static"].get(case.key(), {})
            skip = sides[s].probe["skips"].get(case.key())
            rows[row_case.key()] = {"case_key": row_case.key(), **row_case.id_row(),
                                    "status": skip[0] if skip else "pending", "error": skip[1] if skip else None,
                                    "threads": threads, "wall_s": 0.0, **static}
            if skip:
                p.failed = True
    return rows


def _write_schedule(run_dir: Path, schedule: list[tuple[int, int, str]], pairs: list[Pair],
                    staged: set[int] = frozenset(), rounds: int | None = None) -> None:
    """schedule.csv: the order the session measured in (round, case, side, staged or whole job, and
    whether a confirmation round: round >= ``rounds``), so it can be audited."""
    store.atomic_write_text(run_dir / "schedule.csv", "position,round,case_key,side,staged,confirmation\n" + "".join(
        f"{n},{r},{(pairs[i].base_row if s == 'base' else pairs[i].head_row).key()},{s},{r > 0 and i in staged},"
        f"{rounds is not None and r >= rounds}\n"
        for n, (r, i, s) in enumerate(schedule)))


def _finish_rows(run_dir: Path, collectors: dict[str, Any], pairs: list[Pair], rows: dict[str, dict[str, Any]]) -> None:
    """Append each case's samples once (every block and the round medians) and close the rows of
    cases whose other side failed before they were measured."""
    for s, coll in collectors.items():
        for p in pairs:
            row_case = p.base_row if s == "base" else p.head_row
            _, samples = coll.snapshot(row_case.key())
            if samples:
                store.append_samples(run_dir, row_case.key(), row_case.label, samples)
    for row in rows.values():
        if row["status"] == "pending":
            row["status"], row["error"] = "error", "not measured: the other side of this case failed first"


def _measure(suite: Any, sides: dict[str, Side], pairs: list[Pair], run_dir: Path, *, rounds: int, seed: int,
             threads: int, peaks: dict[str, dict[str, float]], min_run_time: float | None, round_floor: int,
             threshold: float = AB_DEFAULT_THRESHOLD, confidence: float = AB_DEFAULT_CONFIDENCE,
             confirm_rounds: int | None = None, log: Callable[[str], None] = lambda s: None) -> Session:
    from . import metrics as metric_registry

    limits = suite.model.limits
    first_metrics = [m for m in suite.metrics if metric_registry.get(m).runs_module]  # static ones came from the probe
    grid_case = {c.key(): c for c in suite.expand(sorted({p.head.device for p in pairs}))}  # carry their grid's options
    rows: dict[str, dict[str, Any]] = {}
    collectors = {s: RoundCollector() for s in SIDES}
    ratios: dict[int, list[float]] = {i: [] for i in range(len(pairs))}
    confirm_ratios: dict[int, list[float]] = {}
    round_median: dict[tuple[int, int, str], float] = {}
    order = [p.base_row for p in pairs] + [p.head_row for p in pairs]
    state_keys = [c.key() for c in order]

    last_flush = [time.monotonic()]

    def flush(every_s: float = 0.0) -> None:
        """Rewrite results.csv, at most once per ``every_s`` seconds: a rewrite takes ~7 ms, and after
        every job it was a sixth of a smoke-suite session, with the workers idle meanwhile."""
        if time.monotonic() - last_flush[0] >= every_s:
            store.write_results(run_dir, [rows[k] for k in state_keys if k in rows])
            last_flush[0] = time.monotonic()

    rows.update(_initial_rows(sides, pairs, threads))
    flush()

    def options(case: Case) -> dict[str, Any]:
        opts = {m: (o.model_dump(mode="json") if o is not None else None)
                for m, o in suite.metric_options_for(grid_case.get(case.key(), case)).items()}
        opts["time"]["min_run_time"] = min_run_time or round_budget(opts["time"]["min_run_time"], rounds)
        return opts

    workers = {s: SideWorker(WorkerInit(threads=threads, max_memory_gb=limits.max_memory_gb,
                                        imports=tuple(sides[s].probe.get("imports", [])),
                                        log_path=str(run_dir / f"worker-{s}.log"), paths=(str(sides[s].tree),)),
                             timeout_s=limits.timeout_s)
               for s in SIDES}

    def record(r: int, i: int, s: str, outcome: Outcome) -> None:
        p = pairs[i]
        row_case = p.base_row if s == "base" else p.head_row
        row = rows[row_case.key()]
        if outcome.status != "ok":
            p.failed = True
            row.update({**outcome.columns, "status": outcome.status,
                        "error": (f"confirmation round {r - rounds + 1}: " if r >= rounds else f"round {r + 1}: " if r
                                  else "") + str(outcome.error)})
            flush()
            return
        confirming = r >= rounds
        cols, _ = collectors[s].add(row_case.key(), outcome.columns, outcome.samples, confirming=confirming)
        row.update({**cols, "status": "ok", "error": None,
                    "wall_s": round(float(row.get("wall_s") or 0) + outcome.wall_s, 3)})
        round_median[(r, i, s)] = float(np.median(outcome.samples.get("latency_ms") or [math.nan]))
        if (r, i, "base") in round_median and (r, i, "head") in round_median:
            ratio = round_median[(r, i, "head")] / round_median[(r, i, "base")]
            (confirm_ratios.setdefault(i, []) if confirming else ratios[i]).append(ratio)
        flush(every_s=2.0)

    def measure_pair(r: int, i: int, sides_order: tuple[str, str]) -> None:
        """Round 0, and every round of a case whose call is long next to its round budget, runs each
        side's whole job in turn (round 0 has the suite's other metrics too). Other rounds are staged:
        both workers build and warm up at once, untimed, then each side re-warms and is timed alone."""
        p = pairs[i]
        for s, w in workers.items():  # both start together (nothing is timed meanwhile) ...
            w.launch(layout_seed=f"{seed}/{r}/{s}")  # a layout of its own per side and round
        for w in workers.values():  # ... and are idle and ready before anything is timed
            w.start()
        cases = {"base": p.base, "head": p.head}
        jobs = {s: Job(case=cases[s].to_dict(), metrics=first_metrics if r == 0 else ["time"], options=options(cases[s]),
                       staged=i in staged, env={"matmul_peak_gflops": peaks.get(p.head.device, {})})
                for s in sides_order}
        if i not in staged:
            for s in sides_order:
                record(r, i, s, workers[s].run(jobs[s]))
                if p.failed:
                    return
            return
        sent = {s: workers[s].send(jobs[s]) for s in sides_order}
        prepared = {s: workers[s].reply(sent[s]) for s in sides_order}
        failed = [s for s in sides_order if prepared[s].status != "prepared"]
        if failed:
            for s in sides_order:
                if s in failed:
                    record(r, i, s, prepared[s])
                else:
                    workers[s].close()  # drops its prepared job
            return
        for s in sides_order:
            outcome = workers[s].reply(workers[s].send(GO))  # its wall_s already counts the preparation
            record(r, i, s, outcome)
            if p.failed:
                for other in sides_order:
                    if other != s:
                        workers[other].close()
                return

    def done(r: int) -> str:
        if r < rounds:
            return f"round {r + 1}/{rounds} done ({time.monotonic() - t0:.0f} s)"
        return f"confirmation round {r - rounds + 1}/{confirm_total[0]} done ({time.monotonic() - t0:.0f} s)"

    def run(schedule: list[tuple[int, int, str]], t0: float, current: list[int]) -> None:
        for n in range(0, len(schedule), 2):
            (r, i, s1), (_, _, s2) = schedule[n], schedule[n + 1]
            if r != current[0]:
                log(done(current[0]))
                flush()
                current[0] = r
                for w in workers.values():  # fresh processes every round, both sides: see the module docstring
                    w.close()
            if not pairs[i].failed:
                measure_pair(r, i, (s1, s2))

    t0 = time.monotonic()
    current = [0]
    rounds_of: dict[int, int] = {}
    staged: set[int] = set()  # pairs staged after round 0 (see ``stage_case``)
    confirm_total = [0]
    try:
        first = [e for e in make_schedule(len(pairs), rounds, seed) if e[0] == 0]
        _write_schedule(run_dir, first, pairs)
        run(first, t0, current)
        for i, p in enumerate(pairs):  # the case's call time, from its first round, sets its rounds
            calls = [round_median.get((0, i, s), math.nan) / 1e3 for s in SIDES]
            budget = float(options(p.head)["time"]["min_run_time"])
            call_s = float(np.mean(calls))
            rounds_of[i] = rounds_for_call(call_s, budget, rounds, round_floor)
            if stage_case(call_s, budget):
                staged.add(i)
        schedule = make_schedule(len(pairs), rounds, seed, rounds_of)
        _write_schedule(run_dir, schedule, pairs, staged, rounds)
        run([e for e in schedule if e[0] > 0], t0, current)
        log(done(rounds - 1))
        counts = cases_to_confirm(ratios, rounds_of, confirm_rounds, {i for i, p in enumerate(pairs) if p.failed},
                                  threshold, confidence)
        if counts:
            confirm_total[0] = max(counts.values())
            log(f"{len(counts)} case(s) not unchanged: {confirm_total[0]} confirmation round(s)")
            extra = confirmation_schedule(counts, rounds, seed)
            _write_schedule(run_dir, schedule + extra, pairs, staged, rounds)
            for w in workers.values():  # a confirmation round is a round: fresh processes
                w.close()
            current[0] = rounds
            run(extra, t0, current)
            log(done(current[0]))
    finally:
        flush()  # whatever ended the session (Ctrl-C included), the rows measured so far are on disk
        for w in workers.values():
            w.close()
    _finish_rows(run_dir, collectors, pairs, rows)
    flush()
    return Session(run_dir=run_dir, sides=sides, pairs=pairs, rows=rows, ratios=ratios, only_base=[], only_head=[],
                   rounds=rounds, seed=seed, variant=None, wall_s=0.0, rounds_of=rounds_of, round_floor=round_floor,
                   confirm_ratios=confirm_ratios)
