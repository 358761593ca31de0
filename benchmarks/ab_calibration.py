"""Measure the regression gate on this machine: A/A false alarms, detection of injected slowdowns, cost.

Why a script and not a test: it runs for tens of minutes of real timing on whatever machine runs it
(that is the point: the figures are the machine's), so it is run once, in the background, and its
table is committed:

    nohup python benchmarks/ab_calibration.py --out results/ab-calibration > /tmp/ab-calibration.log 2>&1 &

What it does, in a throwaway git repository built under --work (a copy of ``mechanisms/``, the
calibration suite, and ``abcal_injected.py``, a test-only plugin):

* commit ``base``; commit ``slow``, which changes only ``abcal_injected.py``: its mechanisms repeat
  global attention's forward 20 times per call, and ``slow`` makes ``inj5_*`` repeat it 21 times
  (+5 % real work) and ``inj10_*`` 22 times (+10 %). Nothing sleeps.
* ``--repeats`` (5) times: ``ab base base`` (A/A) and ``ab base slow`` (detection); in between,
  ``--runs`` (4) ordinary runs of base and one fewer of slow, with ``timing.rounds: 10``, alternating
  in time, for ``compare`` of two stored runs: A/A = every pair of base runs, detection = every
  (base run, slow run) pair.
* cost: wall time of ``ab`` against two ordinary runs (``timing.rounds: 1``, the cheap default) on
  the smoke suite and the calibration suite.

Verdicts are recomputed from the stored samples at several thresholds (the paired ratios of each ab
session are its per-round medians, stored in ``latency_round_ms``), so one set of measurements
gives every row of the table. "Within-run" applies compare's rule to the pooled blocks of the same
stored runs, as compare does for runs without rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import io
import itertools
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

HARNESS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HARNESS))

from attnbench.ab import AB_DEFAULT_CONFIDENCE, AB_DEFAULT_THRESHOLD, DEFAULT_ROUNDS  # noqa: E402
from attnbench.paired import compare_rounds, confirmed_verdict, paired_verdict  # noqa: E402
from attnbench.rounds import CONFIRM_SAMPLES, ROUND_SAMPLES  # noqa: E402
from attnbench.stats import compare_samples  # noqa: E402
from attnbench.store import load_run  # noqa: E402

THRESHOLDS = (0.02, 0.03, 0.05, 0.10)
CONFIDENCES = (0.95, 0.99)
INJECTED = {"inj5_a": 5, "inj5_b": 5, "inj10_a": 10, "inj10_b": 10}

PLUGIN = '''"""Test-only mechanisms for benchmarks/ab_calibration.py: global attention run REPEATS times per call.

The calibration's ``slow`` commit raises a repeat count by 1 (+5 %) or 2 (+10 %): real work, no sleep.
"""
from mechanisms.global_attention import GlobalAttention
from mechanisms.registry import register

REPEATS = {repeats}


class _Repeated(GlobalAttention):
    def forward(self, x):
        for _ in range(REPEATS[self.mechanism_name] - 1):
            super().forward(x)
        return super().forward(x)


{classes}
'''

SUITE = {
    "name": "abcal", "description": "ab calibration: 7 mechanisms x 2 sizes + 4 test-only injected ones",
    "device": "cpu", "dtype": "float32", "mode": "forward", "batch_size": 1, "dim": 32, "num_heads": 2,
    "resolutions": [14, 28], "metrics": ["flops", "params", "time"],
    "timing": {"min_run_time": 1.0, "threads": 1, "warmup": 1, "rounds": 1, "clock": "cpu"},
    "limits": {"max_memory_gb": 2, "timeout_s": 300}, "cases_per_worker": 1000,
    "mechanisms": ["global", {"name": "swin", "window_size": 7},
                   {"name": "swin", "window_size": 7, "shift": 3, "label": "swin-shifted"},
                   {"name": "cswin", "split_size": 7}, "axial", {"name": "pale", "pale_size": 7},
                   {"name": "slide", "kernel_size": 3}, *INJECTED],
}


def plugin_source(slow: bool) -> str:
    repeats = {name: 20 + (pct // 5 if slow else 0) for name, pct in INJECTED.items()}
    classes = "\n\n".join(f'@register("{n}")\nclass {n.title().replace("_", "")}(_Repeated):\n    pass\n'
                          for n in INJECTED)
    return PLUGIN.format(repeats=json.dumps(repeats), classes=classes)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(HARNESS), *filter(None, [e.get("PYTHONPATH")])])
    return e


def build_repo(work: Path) -> tuple[Path, str, str]:
    repo = work / "repo"
    shutil.copytree(HARNESS / "mechanisms", repo / "mechanisms", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "suites").mkdir()
    shutil.copy(HARNESS / "suites" / "smoke.yaml", repo / "suites" / "smoke.yaml")
    (repo / "suites" / "abcal.yaml").write_text(yaml.safe_dump(SUITE, sort_keys=False))
    rounds = dict(SUITE, timing={**SUITE["timing"], "rounds": 10})
    (repo / "suites" / "abcal-rounds.yaml").write_text(yaml.safe_dump(rounds, sort_keys=False))
    (repo / "abcal_injected.py").write_text(plugin_source(slow=False))
    (repo / ".gitignore").write_text("__pycache__/\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "bench@example.com")
    git(repo, "config", "user.name", "bench")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    base = git(repo, "rev-parse", "HEAD")
    (repo / "abcal_injected.py").write_text(plugin_source(slow=True))
    git(repo, "commit", "-qam", "slow: inj5_* +5 %, inj10_* +10 % real work")
    return repo, base, git(repo, "rev-parse", "HEAD")


def export_tree(repo: Path, commit: str, dest: Path) -> Path:
    data = subprocess.run(["git", "archive", "--format=tar", commit], cwd=repo, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest)
    return dest


def timed(cmd: list[str], cwd: Path, log) -> tuple[int, float]:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    wall = time.monotonic() - t0
    log(f"  {' '.join(cmd[2:6])}... -> exit {proc.returncode} in {wall:.0f} s")
    if proc.returncode not in (0, 1):
        log(proc.stderr[-2000:])
        raise SystemExit(f"command failed: {cmd}")
    return proc.returncode, wall


def ab(repo: Path, base: str, head: str, suite: str, out: Path, seed: int, log) -> tuple[Path, int, float]:
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.rglob("ab.csv"))
    code, wall = timed([sys.executable, "-m", "attnbench", "ab", base, head, suite, "--out", str(out),
                        "--seed", str(seed), "--import", "abcal_injected"], repo, log)
    (new,) = set(out.rglob("ab.csv")) - before
    return new.parent, code, wall


def ordinary(tree: Path, suite: str, out: Path, log) -> tuple[Path, float]:
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.rglob("results.csv"))
    script = ("import sys, abcal_injected; from attnbench.commands.run import run; "
              f"sys.exit(run({suite!r}, out={str(out)!r}, report=False))")
    _, wall = timed([sys.executable, "-c", script, "run", suite], tree, log)
    (new,) = set(out.rglob("results.csv")) - before
    return new.parent, wall


# ------------------------------------------------------------------------------------- analysis
def ab_trials(run_dir: Path) -> list[dict]:
    """One row per case of an ab session: its per-round ratios, re-judged at every threshold."""
    run = load_run(run_dir)
    res = run.results
    out = []
    for _, h in res[res["label"].str.endswith(" [head]")].iterrows():
        label = h["label"][: -len(" [head]")]
        b = res[(res["label"] == f"{label} [base]") & (res["height"] == h["height"])].iloc[0]
        rb = run.samples[(b["case_key"], ROUND_SAMPLES)]
        rh = run.samples[(h["case_key"], ROUND_SAMPLES)]
        cb = run.samples.get((b["case_key"], CONFIRM_SAMPLES)) or []
        ch = run.samples.get((h["case_key"], CONFIRM_SAMPLES)) or []
        n = min(len(cb), len(ch))
        out.append({"label": label, "size": int(h["height"]), "ratios": np.asarray(rh) / np.asarray(rb),
                    "confirm": np.asarray(ch[:n]) / np.asarray(cb[:n])})
    return out


def pair_trials(base_dir: Path, new_dir: Path) -> list[dict]:
    b, n = load_run(base_dir), load_run(new_dir)
    out = []
    for _, row in n.results.iterrows():
        key = row["case_key"]
        out.append({"label": row["label"], "size": int(row["height"]),
                    "rounds": (b.samples[(key, "latency_round_ms")], n.samples[(key, "latency_round_ms")]),
                    "blocks": (b.samples[(key, "latency_ms")], n.samples[(key, "latency_ms")])})
    return out


def judge(kind: str, trial: dict, threshold: float, confidence: float) -> str:
    if kind == "ab":
        return confirmed_verdict(trial["ratios"], trial["confirm"], threshold=threshold, confidence=confidence).verdict
    if kind == "screening":
        return paired_verdict(trial["ratios"], threshold=threshold, confidence=confidence).verdict
    if kind == "rounds":
        return compare_rounds(*trial["rounds"], threshold=threshold, confidence=confidence).verdict
    return compare_samples(*trial["blocks"], threshold=threshold, confidence=confidence).verdict


def table(aa: dict[str, list[dict]], det: dict[str, list[dict]]) -> pd.DataFrame:
    rows = []
    for kind, name in (("ab", "ab (paired rounds + confirmation)"), ("screening", "ab, screening rounds only"),
                       ("rounds", "compare, timing.rounds: 10"),
                       ("within", "compare, within-run samples")):
        for c, t in itertools.product(CONFIDENCES, THRESHOLDS):
            a = [judge(kind, x, t, c) for x in aa[kind]]
            d = [(x["label"], judge(kind, x, t, c)) for x in det[kind]]
            hit5 = [v == "regression" for lab, v in d if INJECTED.get(lab) == 5]
            hit10 = [v == "regression" for lab, v in d if INJECTED.get(lab) == 10]
            other = [v == "regression" for lab, v in d if lab not in INJECTED]
            rows.append({"method": name, "confidence": c, "threshold": t,
                         "A/A false regressions": f"{sum(v == 'regression' for v in a)}/{len(a)}",
                         "A/A false rate": sum(v == "regression" for v in a) / max(len(a), 1),
                         "A/A any flag": f"{sum(v in ('regression', 'improvement') for v in a)}/{len(a)}",
                         "5% caught": f"{sum(hit5)}/{len(hit5)}", "5% rate": sum(hit5) / max(len(hit5), 1),
                         "10% caught": f"{sum(hit10)}/{len(hit10)}", "10% rate": sum(hit10) / max(len(hit10), 1),
                         "others flagged in detection": f"{sum(other)}/{len(other)}"})
    return pd.DataFrame(rows)


def session_dirs(folder: Path) -> list[Path]:
    """Finished sessions or runs under ``folder`` (those with their final file), oldest first."""
    found = {p.parent for p in folder.rglob("ab.csv")} or {p.parent for p in folder.rglob("results.csv")
                                                             if _finished_run(p.parent)}
    return sorted(found, key=lambda d: d.name)


def _finished_run(run_dir: Path) -> bool:
    """Every case has a row and, with timing.rounds, all its rounds (a run still going has not)."""
    run = load_run(run_dir)
    rounds = int((run.suite.get("timing") or {}).get("rounds", 1))
    n_cases = 7 * len(run.suite.get("resolutions", [])) + len(INJECTED) * len(run.suite.get("resolutions", []))
    if run.suite.get("name") != "abcal":
        return True
    ok = run.results[run.results["status"] == "ok"]
    return len(run.results) == n_cases and (rounds == 1 or bool((ok["timing_rounds"] == rounds).all()))


def wall_s(run_dir: Path) -> float:
    """Seconds a stored run or session took: ab's own figure, else env.json creation to the last write."""
    md = run_dir / "ab.md"
    if md.exists():
        m = re.search(r" in (\d+) s; run ", md.read_text())
        if m:
            return float(m.group(1))
    created = datetime.fromisoformat(json.loads((run_dir / "env.json").read_text())["created_at"])
    return (run_dir / "results.csv").stat().st_mtime - created.timestamp()


def analyze(work: Path, out: Path, log, command: str) -> str:
    """The table from whatever finished under ``work`` (so a long run can be read part way)."""
    from tabulate import tabulate

    # ab-aa*, ab-det*: sessions of this script, and of any extra runner pointed at the same repository
    aa_s = [d for f in sorted(work.glob("ab-aa*")) for d in session_dirs(f)]
    det_s = [d for f in sorted(work.glob("ab-det*")) for d in session_dirs(f)]
    base_runs, slow_runs = session_dirs(work / "runs-base"), session_dirs(work / "runs-slow")
    aa = {"ab": [t for d in aa_s for t in ab_trials(d)],
          "rounds": [t for i, j in itertools.combinations(range(len(base_runs)), 2)
                     for t in pair_trials(base_runs[i], base_runs[j])]}
    det = {"ab": [t for d in det_s for t in ab_trials(d)],
           "rounds": [t for b in base_runs for sl in slow_runs for t in pair_trials(b, sl)]}
    aa["within"], det["within"] = aa["rounds"], det["rounds"]
    aa["screening"], det["screening"] = aa["ab"], det["ab"]
    confirmed = {"A/A": sum(len(t["confirm"]) > 0 for t in aa["ab"]), "detection": sum(len(t["confirm"]) > 0
                                                                                     for t in det["ab"])}
    tab = table(aa, det)
    cost = []
    for name, ab_dir, runs_dir in (("smoke", "ab-smoke", "runs-smoke"), ("abcal", "ab-aa", "runs-cheap")):
        sessions, runs = session_dirs(work / ab_dir), session_dirs(work / runs_dir)
        if sessions and len(runs) >= 2:
            n_cases = len(load_run(sessions[0]).results) // 2
            w_ab = float(np.median([wall_s(d) for d in sessions]))
            w_two = wall_s(runs[0]) + wall_s(runs[1])
            cost.append({"suite": f"{name} ({n_cases} cases)", f"ab wall s (R={DEFAULT_ROUNDS})": round(w_ab),
                         "two runs wall s": round(w_two), "ratio": round(w_ab / w_two, 2),
                         "sessions": len(sessions)})
    exits = {f"A/A sessions exiting 1 (ab's defaults: {AB_DEFAULT_THRESHOLD:.0%}, {AB_DEFAULT_CONFIDENCE:.0%}, "
             f"{DEFAULT_ROUNDS} rounds)":
             sum(_regressed(d) for d in aa_s),
             "detection sessions exiting 1": sum(_regressed(d) for d in det_s)}
    delivered = {lab: float(np.exp(np.median([np.median(np.log(t["ratios"])) for t in det["ab"]
                                              if t["label"] == lab]))) for lab in INJECTED if det["ab"]}
    out.mkdir(parents=True, exist_ok=True)
    tab.to_csv(out / "table.csv", index=False)
    pd.DataFrame(cost).to_csv(out / "cost.csv", index=False)
    shown = tab.drop(columns=["A/A false rate", "5% rate", "10% rate"])
    n_cases = len(aa["ab"]) // max(len(aa_s), 1)
    md = [f"# ab calibration ({work.name})", "", f"Command: `{command}`; load average now {os.getloadavg()[0]:.1f}.", "",
          f"Suite abcal: {n_cases} cases (7 mechanisms x 14², 28², plus inj5_a/b (+5 %) and inj10_a/b (+10 %) "
          "x 2 sizes; forward, float32, clock: cpu, "
          f"{load_run(aa_s[0]).suite['timing']['min_run_time'] if aa_s else '?'} s timing budget per case). "
          f"A/A: {len(aa_s)} `ab base base` sessions; every pair of {len(base_runs)} ordinary base runs with "
          f"timing.rounds: 10. Detection: {len(det_s)} `ab base slow` sessions; every pair of a base run and one of "
          f"{len(slow_runs)} slow runs (base and slow runs alternate in time; pairs share runs, so they are not "
          "independent). The slow commit repeats global attention's forward 21 (inj5) or 22 (inj10) instead of 20 times "
          "per call; nothing else changes. Verdicts are recomputed from the stored samples at each threshold. "
          f"ab's sessions ran at {session_settings(aa_s + det_s)}: a case "
          "not unchanged there (inconclusive, or flagged) got confirmation rounds "
          f"(A/A: {confirmed['A/A']} of {len(aa['ab'])} cases, detection: {confirmed['detection']} of "
          f"{len(det['ab'])}). At a higher threshold the recomputed verdict is exact (a case inconclusive at 3 % is "
          "inconclusive at 2 %); at another confidence a case inconclusive there but not at the sessions' has no "
          "confirmation rounds and stays inconclusive (and one inconclusive only at the sessions' is judged by its "
          "confirmation rounds). The screening-only rows are the verdicts without confirmation.", "",
          "## False alarms and detection", "",
          tabulate(shown, headers="keys", tablefmt="github", showindex=False, floatfmt=".2f"), "",
          f"Sessions at the default threshold: {exits}.", "",
          "Slowdown actually delivered (median over detection sessions of each session's median paired ratio): "
          + ", ".join(f"{k} {v - 1:+.1%}" for k, v in delivered.items()), "",
          f"## Cost (wall time; ab: its own session time at the default {DEFAULT_ROUNDS} rounds; runs: env.json to last write)", "",
          tabulate(pd.DataFrame(cost), headers="keys", tablefmt="github", showindex=False) if cost else "not measured",
          ""]
    text = "\n".join(md)
    (out / "table.md").write_text(text)
    (out / "figures.json").write_text(json.dumps({"exits": exits, "delivered": delivered, "cost": cost, "confirmed": confirmed,
                                                  "table": tab.to_dict("records")}, indent=2, default=str))
    log(f"wrote {out / 'table.md'}")
    return text


def session_settings(sessions: list[Path]) -> str:
    """The threshold and confidence the sessions ran at (their env.json), e.g. "2 %, 99 %"."""
    found = {(e["threshold"], e["confidence"]) for e in
             (json.loads((d / "env.json").read_text())["ab"] for d in sessions)}
    return "; ".join(f"{t:.0%}, {c:.0%}" for t, c in sorted(found)) or "no session"


def _regressed(session: Path) -> bool:
    return bool((pd.read_csv(session / "ab.csv")["verdict"] == "regression").any())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HARNESS / "results" / "ab-calibration")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new one under /tmp)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--analyze", type=Path, default=None, metavar="WORK",
                        help="measure nothing: write the table from what finished under WORK (a --work folder)")
    parser.add_argument("--runs", type=int, default=4, help="ordinary base runs (one fewer slow runs) for compare")
    parser.add_argument("--min-run-time", type=float, default=0.5, help="timing budget per case (seconds)")
    parser.add_argument("--skip-smoke", action="store_true", help="do not measure the cost on the smoke suite")
    parser.add_argument("--quick", action="store_true", help="a minutes-long trial of the script itself (1 size, "
                        "short budgets); its figures mean nothing")
    args = parser.parse_args()
    SUITE["timing"]["min_run_time"] = args.min_run_time
    if args.quick:
        SUITE.update(resolutions=[14], timing={**SUITE["timing"], "min_run_time": 0.2})
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    work = args.work or Path(f"/tmp/ab-calibration-{stamp}")
    work.mkdir(parents=True, exist_ok=True)
    out = args.out / stamp
    out.mkdir(parents=True, exist_ok=True)
    logf = open(out / "log.txt", "w")

    def log(msg: str) -> None:
        line = f"{datetime.now():%H:%M:%S} {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    command = " ".join(["python benchmarks/ab_calibration.py", *sys.argv[1:]])
    if args.analyze:
        print(analyze(args.analyze, out, log, command))
        return 0
    repo, base, slow = build_repo(work)
    trees = {"base": export_tree(repo, base, work / "tree-base"), "slow": export_tree(repo, slow, work / "tree-slow")}
    log(f"throwaway repo {repo}: base {base[:7]}, slow {slow[:7]}; load {os.getloadavg()}")

    if not args.skip_smoke:
        log("cost: smoke")
        ab(repo, base, base, "suites/smoke.yaml", work / "ab-smoke", 100, log)
        for _ in range(2):
            ordinary(trees["base"], "suites/smoke.yaml", work / "runs-smoke", log)

    # Ordinary runs: base before the first repeat and after each of the first `--runs - 1` repeats, slow
    # after each of the first `--runs - 1` repeats, so base and slow runs alternate in time.
    if args.repeats:  # --repeats 0 --work DIR measures only the smoke cost
        ordinary(trees["base"], "suites/abcal-rounds.yaml", work / "runs-base", log)
    for k in range(args.repeats):
        log(f"repeat {k + 1}/{args.repeats}; load {os.getloadavg()}")
        ab(repo, base, base, "suites/abcal.yaml", work / "ab-aa", k, log)
        ab(repo, base, slow, "suites/abcal.yaml", work / "ab-det", k, log)
        if k < args.runs - 1:
            ordinary(trees["slow"], "suites/abcal-rounds.yaml", work / "runs-slow", log)
            ordinary(trees["base"], "suites/abcal-rounds.yaml", work / "runs-base", log)
        if k < 2:  # two cheap default runs, for the cost comparison
            ordinary(trees["base"], "suites/abcal.yaml", work / "runs-cheap", log)
    print(analyze(work, out, log, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
