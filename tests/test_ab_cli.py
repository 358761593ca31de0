"""``attnbench ab`` as a user meets it: a subprocess in a throwaway git repository built here.

The repository holds a copy of ``mechanisms/`` and a tiny suite; a second commit makes ``global``
do four forwards per call (real work, 4x slower). The CI recipe (docs/ci/attnbench-ab.yml) is run
as written on it and must fail the check naming that case only; bad refs, uncommitted changes that
would be ignored and a suite that does not validate at one ref each give one line and exit 2.
Thresholds are wide (50 %) and the suite times with the thread's CPU time (``clock: cpu``) because
the machine is shared: under a load average of 9 wall-clock rounds of this tiny suite stretched 5x.
The wiring is tested here, the statistics in test_paired.py, the error rates in
benchmarks/ab_calibration.py.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

TINY = """\
name: tiny
device: cpu
dtype: float32
mode: forward
dim: 32
num_heads: 2
resolutions: [14]
metrics: [flops, params, time]
timing: {min_run_time: 0.3, threads: 1, warmup: 1, clock: cpu}
limits: {max_memory_gb: 2, timeout_s: 120}
cases_per_worker: 100
mechanisms:
  - global
  - {name: swin, window_size: 7}
"""

SLOW_GLOBAL = """

# test-only change: four forwards per call (real work, not a sleep)
_forward_once = GlobalAttention.forward


def _forward_four_times(self, x):
    for _ in range(3):
        _forward_once(self, x)
    return _forward_once(self, x)


GlobalAttention.forward = _forward_four_times
"""


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [e.get("PYTHONPATH")])])
    e["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), e.get("PATH", "")])
    return e


def attnbench(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnbench", *args], cwd=repo, env=env(), capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def throwaway() -> tuple[Path, str, str]:
    """(repo, base sha, head sha): base = a copy of mechanisms/, head = global made 4x slower.

    In a folder of its own rather than pytest's tmp_path: these tests run for minutes, and on a machine
    shared by several users another pytest session may prune the numbered tmp_path folders meanwhile.
    """
    with tempfile.TemporaryDirectory(prefix="attnbench-ab-test-") as tmp:
        yield _build_throwaway(Path(tmp) / "repo")


@pytest.fixture
def tmp_path() -> Path:  # same reason: a folder no other pytest session prunes
    with tempfile.TemporaryDirectory(prefix="attnbench-ab-test-") as tmp:
        yield Path(tmp)


def _build_throwaway(repo: Path) -> tuple[Path, str, str]:
    shutil.copytree(REPO / "mechanisms", repo / "mechanisms", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "suites").mkdir()
    (repo / "suites" / "tiny.yaml").write_text(TINY)
    (repo / ".gitignore").write_text("results/\n__pycache__/\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "user.name", "test")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    base = git(repo, "rev-parse", "HEAD")
    with open(repo / "mechanisms" / "global_attention.py", "a") as fh:
        fh.write(SLOW_GLOBAL)
    git(repo, "commit", "-qam", "global: four forwards per call")
    return repo, base, git(repo, "rev-parse", "HEAD")


def recipe_step() -> dict:
    workflow = yaml.safe_load((REPO / "docs" / "ci" / "attnbench-ab.yml").read_text())
    steps = workflow["jobs"]["ab"]["steps"]
    (step,) = [s for s in steps if "attnbench ab" in s.get("run", "")]
    return step


@pytest.mark.slow
def test_ci_recipe_fails_the_check_on_the_slowed_mechanism(throwaway, tmp_path):
    repo, base, head = throwaway
    step = recipe_step()
    summary = tmp_path / "summary.md"
    e = {**env(), **step["env"], "BASE_SHA": base, "HEAD_SHA": head, "SUITE": "suites/tiny.yaml",
         "THRESHOLD": "0.5", "ROUNDS": "8", "GITHUB_STEP_SUMMARY": str(summary)}
    proc = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=repo, env=e, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 1, proc.stderr
    md = summary.read_text()
    assert "**REGRESSION: 1 regression(s)" in md
    table = {tuple(c.strip() for c in line.split("|")[2:4]): line.split("|")[1].strip()
             for line in md.splitlines() if line.startswith("| ") and "latency_ms" in line}
    assert table == {("global 14x14 float32 forward", "latency_ms"): "regression",
                     ("swin 14x14 float32 forward", "latency_ms"): "unchanged"}
    # the flagged case is checked by 8 confirmation rounds before it fails the check
    assert f"attnbench ab: base {base[:7]} vs head {head[:7]}; 2 cases x 8 rounds (+ 8 confirmation rounds for 1 case) in " in md
    assert "; confirmed: regression in 8 confirmation rounds (+" in md
    (run_dir,) = (repo / "ab-results" / "tiny-ab").iterdir()
    results = pd.read_csv(run_dir / "results.csv").set_index("label")
    assert sorted(results.index) == ["global [base]", "global [head]", "swin [base]", "swin [head]"]
    assert set(results["status"]) == {"ok"}
    assert results["timing_rounds"].to_dict() == {"global [base]": 16, "global [head]": 16, "swin [base]": 8,
                                                  "swin [head]": 8}
    schedule = pd.read_csv(run_dir / "schedule.csv")
    assert len(schedule) == 2 * 2 * 8 + 2 * 8 and list(schedule["confirmation"]) == [False] * 32 + [True] * 16
    assert list(schedule["staged"]) == [False] * 4 + [True] * 44  # short calls: staged after round 0
    env_json = yaml.safe_load((run_dir / "env.json").read_text())
    assert (env_json["ab"]["base_commit"], env_json["ab"]["head_commit"]) == (base, head)
    verdicts = pd.read_csv(run_dir / "ab.csv")
    lat = verdicts[verdicts["metric"] == "latency_ms"].set_index("case")["verdict"].to_dict()
    assert lat == {"global 14x14 float32 forward": "regression", "swin 14x14 float32 forward": "unchanged"}
    # the stored session is an ordinary run directory for report and history
    rep = attnbench(repo, "report", str(run_dir), "--no-plots", "--baseline", "global [base]")
    assert rep.returncode == 0, rep.stderr
    assert "global [head]" in (run_dir / "report.md").read_text()
    hist = attnbench(repo, "history", str(run_dir.parent), "--no-plots")
    assert hist.returncode == 0, hist.stderr


@pytest.mark.slow
def test_same_commit_twice_reports_calibration(throwaway, tmp_path):
    repo, base, _ = throwaway
    proc = attnbench(repo, "ab", base, base, "suites/tiny.yaml", "--rounds", "8", "--threshold", "0.5",
                     "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "Calibration (A/A: the same commit on both sides)" in proc.stdout
    assert "False alarms: 0 of 2 cases (0.0%) flagged at threshold 50.0%" in proc.stdout
    (run_dir,) = (tmp_path / "tiny-ab").iterdir()
    cal = pd.read_csv(run_dir / "calibration.csv")
    assert list(cal["case"]) == ["global 14x14 float32 forward", "swin 14x14 float32 forward"]
    assert (cal["detectable_at_threshold"] >= 0.5).all()  # never below the threshold itself
    assert "round 8/8 done" in proc.stderr


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_bad_ref_is_one_line_exit_2(throwaway):
    repo, _, _ = throwaway
    line = one_line_error(attnbench(repo, "ab", "no-such-branch", "HEAD", "suites/tiny.yaml"))
    assert line == (f"attnbench: error: ref 'no-such-branch' is not a commit in {repo} (see `git branch -a` / "
                    "`git log`); fetch it first or check the spelling")


def test_uncommitted_change_that_would_be_ignored_is_refused(throwaway):
    repo, _, _ = throwaway
    path = repo / "mechanisms" / "swin.py"
    text = path.read_text()
    try:
        path.write_text(text + "\n# local edit\n")
        line = one_line_error(attnbench(repo, "ab", "HEAD~1", "HEAD", "suites/tiny.yaml"))
    finally:
        path.write_text(text)
    assert line == ("attnbench: error: uncommitted changes to mechanisms/swin.py would be ignored: ab measures "
                    f"committed code and 'HEAD' is HEAD ({git(repo, 'rev-parse', '--short=7', 'HEAD')}); commit or "
                    "stash them first")


@pytest.mark.slow
def test_suite_invalid_at_one_ref_is_one_line_exit_2(throwaway, tmp_path):
    repo, _, _ = throwaway
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(repo), str(clone))
    git(clone, "config", "user.email", "test@example.com")
    git(clone, "config", "user.name", "test")
    with open(clone / "mechanisms" / "global_attention.py", "a") as fh:
        fh.write('\n\n@register("full")\nclass FullAttention(GlobalAttention):\n    """global under a new name"""\n')
    (clone / "suites" / "full.yaml").write_text(TINY.replace("name: tiny", "name: full").replace("  - global\n",
                                                                                              "  - full\n"))
    git(clone, "add", "-A")
    git(clone, "commit", "-qm", "add full")
    line = one_line_error(attnbench(clone, "ab", "HEAD~1", "HEAD", "suites/full.yaml"))
    base = git(clone, "rev-parse", "--short=7", "HEAD~1")
    assert line.startswith(f"attnbench: error: suite full.yaml does not validate at base 'HEAD~1' ({base}): ")
    assert "unknown mechanism 'full'" in line or "'full'" in line


@pytest.mark.slow
def test_variant_pairs_two_labels_of_one_commit(throwaway, tmp_path):
    repo, _, head = throwaway
    suite = tmp_path / "variant.yaml"
    suite.write_text(TINY.replace("name: tiny", "name: variant").replace(
        "  - global\n  - {name: swin, window_size: 7}\n",
        "  - {name: swin, window_size: 7, label: plain}\n  - {name: swin, window_size: 7, shift: 3, label: shifted}\n"))
    proc = attnbench(repo, "ab", "HEAD", "HEAD", str(suite), "--variant", "plain", "shifted", "--rounds", "8",
                     "--threshold", "0.5", "--out", str(tmp_path / "out"), "--format", "md")
    assert proc.returncode in (0, 1), proc.stderr
    assert f"attnbench ab: base HEAD ({head[:7]}) vs head HEAD ({head[:7]}), variant plain vs shifted; " \
           "1 cases x 8 rounds in " in proc.stdout
    (row,) = [line for line in proc.stdout.splitlines() if "latency_ms" in line]
    assert "| plain vs shifted 14x14 float32 forward |" in row
    assert "Calibration" not in proc.stdout  # two configurations are not an A/A
    (run_dir,) = (tmp_path / "out" / "variant-ab").iterdir()
    assert sorted(pd.read_csv(run_dir / "results.csv")["label"]) == ["plain", "shifted"]


def test_cli_defaults_are_the_sessions_defaults():
    """The CLI keeps its own copy of ab's defaults (so `attnbench --help` stays light): they must agree."""
    from attnbench import ab as session
    from attnbench.commands import ab as command

    assert (command.DEFAULT_ROUNDS, command.DEFAULT_MIN_ROUNDS, command.AB_DEFAULT_THRESHOLD,
            command.AB_DEFAULT_CONFIDENCE) == (session.DEFAULT_ROUNDS, session.DEFAULT_MIN_ROUNDS,
                                               session.AB_DEFAULT_THRESHOLD, session.AB_DEFAULT_CONFIDENCE)


@pytest.mark.slow
def test_case_longer_than_its_round_budget_gets_the_floor_of_rounds(throwaway, tmp_path):
    """A 1 µs share per round is shorter than any call, so every case gets --min-rounds rounds, spread
    over the whole session (first and last round included), and the report says how many it had."""
    repo, base, _ = throwaway
    proc = attnbench(repo, "ab", base, base, "suites/tiny.yaml", "--rounds", "10", "--min-rounds", "8",
                     "--min-run-time", "0.000001", "--threshold", "0.5", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "tiny-ab").iterdir()
    assert set(pd.read_csv(run_dir / "results.csv")["timing_rounds"]) == {8}
    schedule = pd.read_csv(run_dir / "schedule.csv")
    for _, rounds in schedule.groupby("case_key")["round"]:
        assert sorted(set(rounds)) == [0, 1, 3, 4, 5, 6, 8, 9] and len(rounds) == 8
    assert not schedule["staged"].any()  # calls long next to the round budget: whole jobs in turn
    assert yaml.safe_load((run_dir / "env.json").read_text())["ab"]["min_rounds"] == 8
    cal = pd.read_csv(run_dir / "calibration.csv")
    assert set(cal["rounds"]) == {8}
    assert "10 rounds (8 for 2 cases whose call outlasts a round's budget)" in proc.stdout


@pytest.mark.slow
def test_cases_not_unchanged_get_confirmation_rounds_and_are_judged_with_them(throwaway, tmp_path):
    """At threshold 0 no A/A case is unchanged (it is inconclusive, or flagged when all its rounds lean
    one way), so confirmation runs; every case that is not unchanged, and only those, gets the rounds
    asked for, after the session's own rounds, and its verdict is recomputed from both looks."""
    from attnbench.paired import confirmed_verdict, needs_confirmation
    from attnbench.rounds import CONFIRM_SAMPLES, ROUND_SAMPLES
    from attnbench.store import load_run

    repo, base, _ = throwaway
    proc = attnbench(repo, "ab", base, base, "suites/tiny.yaml", "--rounds", "8", "--confirm-rounds", "9",
                     "--threshold", "0", "--out", str(tmp_path))
    assert proc.returncode in (0, 1), proc.stderr
    (run_dir,) = (tmp_path / "tiny-ab").iterdir()
    run = load_run(run_dir)
    schedule = pd.read_csv(run_dir / "schedule.csv")
    assert yaml.safe_load((run_dir / "env.json").read_text())["ab"]["confirm_rounds"] == 9
    verdicts = pd.read_csv(run_dir / "ab.csv").set_index("case_key")
    confirmed = 0
    for label in ("global", "swin"):
        keys = {s: run.results.set_index("label").loc[f"{label} [{s}]", "case_key"] for s in ("base", "head")}
        screen = [run.samples[(keys[s], ROUND_SAMPLES)] for s in ("base", "head")]
        ratios = list(np.asarray(screen[1]) / np.asarray(screen[0]))
        extra = schedule[(schedule["case_key"] == keys["head"]) & schedule["confirmation"]]
        if not needs_confirmation(ratios, threshold=0.0, confidence=0.99):
            assert extra.empty and (keys["head"], CONFIRM_SAMPLES) not in run.samples
            continue
        confirmed += 1
        assert sorted(extra["round"]) == list(range(8, 17)) and extra["round"].min() > schedule["round"][
            ~schedule["confirmation"]].max()
        again = [run.samples[(keys[s], CONFIRM_SAMPLES)] for s in ("base", "head")]
        assert len(again[0]) == len(again[1]) == 9
        est = confirmed_verdict(ratios, list(np.asarray(again[1]) / np.asarray(again[0])), threshold=0.0,
                                confidence=0.99)
        row = verdicts.loc[keys["head"]]
        row = row[row["metric"] == "latency_ms"].iloc[0] if isinstance(row, pd.DataFrame) else row
        assert row["verdict"] == est.verdict and row["ratio"] == pytest.approx(est.ratio)
        assert "confirmation rounds" in row["note"]
        assert int(run.results.set_index("case_key").loc[keys["head"], "timing_rounds"]) == 17
    assert confirmed >= 1
    assert f"2 cases x 8 rounds (+ 9 confirmation rounds for {confirmed} case" in proc.stdout
    assert "confirmation round 9/9 done" in proc.stderr


@pytest.mark.parametrize("flag, value, fix", [
    ("--rounds", "4", "use --rounds 8 or more (default 16)"),
    ("--min-rounds", "3", "use --min-rounds 8 or more (default 8)"),
    ("--confirm-rounds", "3", "use --confirm-rounds 8 or more, or 0 to turn confirmation off"),
])
def test_too_few_rounds_of_any_kind_is_one_line_exit_2(throwaway, flag, value, fix):
    repo, _, _ = throwaway
    line = one_line_error(attnbench(repo, "ab", "HEAD", "HEAD", "suites/tiny.yaml", flag, value))
    assert line == (f"attnbench: error: {flag} {value}: the signed-rank interval needs at least 8 rounds at 99% "
                    f"confidence; {fix}")
