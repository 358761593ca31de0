"""Nothing lost, nothing crashes (issue 12): each fault class driven through the CLI as a user meets it.

Runs, kills and resumes are real processes (``python -m attnbench`` or the same CLI with test
mechanisms registered), with real files, real signals and a real file-size limit for the full disk.
Checks that need no process of their own (damaged files, bad paths, bad values) call the CLI's
``main`` with an argv, exactly what the console script does. docs/robustness.md describes each fault.
"""
from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from attnbench import store
from attnbench.cli import main

REPO = Path(__file__).resolve().parents[1]
HELPERS = Path(__file__).parent / "helpers"
if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))

import robust_mechanisms  # noqa: E402,F401  (test_nap, test_unplannable)

# The CLI with the test mechanisms registered, as a plugin user would have it.
CLI_WITH_PLUGINS = ("import sys; sys.path.insert(0, %r); import robust_mechanisms; "
                    "from attnbench.cli import main; sys.exit(main(sys.argv[1:]))" % str(HELPERS))

TINY = """\
name: tiny
device: cpu
resolutions: [4, 5]
dim: 8
num_heads: 2
metrics: [params, time]
timing: {min_run_time: 0.01, warmup: 1}
cases_per_worker: 10
mechanisms: [global, axial]
"""

NAP = """\
name: nap
device: cpu
resolutions: [8, 9, 10]
dim: 8
num_heads: 2
metrics: [params, time]
timing: {min_run_time: 0.01, warmup: 1}
limits: {timeout_s: %s}
cases_per_worker: 10
mechanisms: [test_nap]
"""


def cli(*args: str, plugins: bool = False, env: dict | None = None, timeout: float = 120,
        preexec=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", CLI_WITH_PLUGINS, *args] if plugins else [sys.executable, "-m", "attnbench", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, preexec_fn=preexec)


def one_line_error(stderr: str) -> str:
    """The single error line of a failed command (and no traceback)."""
    assert "Traceback" not in stderr, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("attnbench: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """(suite file, run dir) of one finished 4-case run, made once through the CLI."""
    root = tmp_path_factory.mktemp("tiny")
    suite = root / "tiny.yaml"
    suite.write_text(TINY)
    proc = cli("run", str(suite), "--out", str(root / "results"), "--no-report")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = (root / "results" / "tiny").iterdir()
    return suite, run_dir


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_run[1], tmp_path / "run"))


def _resume(suite: Path, run_dir: Path, **kw) -> subprocess.CompletedProcess:
    return cli("run", str(suite), "--resume", str(run_dir), "--no-report", **kw)


# ---------------------------------------------------------------------- results.csv, row by row
def test_results_files_are_0644_and_integers_stay_integers(tiny_run):
    _, run_dir = tiny_run
    umask = os.umask(0)
    os.umask(umask)
    for name in ("results.csv", "env.json", "suite.yaml", "samples.jsonl"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    header, *rows = (run_dir / "results.csv").read_text().splitlines()
    cols = header.split(",")
    assert cols[-1] == "row_crc32"
    assert [r.split(",")[cols.index("height")] for r in rows] == ["4", "4", "5", "5"]


def test_cut_and_edited_rows_are_left_out_with_a_warning_and_run_again_by_resume(tiny_run, run_copy):
    suite, _ = tiny_run
    csv = run_copy / "results.csv"
    lines = csv.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split(",")
    cells = lines[1].split(",")
    cells[header.index("wall_s")] = "999.0"  # wall_s of the first row, changed by hand
    lines[1] = ",".join(cells)
    third = lines[3]
    cut = third[: third.index(",float32")]  # `<key>,global,global,native,{},5,5,25,1,8,2`: row 4 is lost
    csv.write_text("".join(lines[:3]) + cut)

    proc = cli("report", str(run_copy), "--no-plots")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert f"results.csv: line 2 (case {cells[0]}): row checksum does not match" in proc.stderr
    key = third.split(",")[0]
    assert f"results.csv: line 4 (case {key}): half-written row (cut off: 11 of {len(header)} fields); row left out" in proc.stderr

    proc = _resume(suite, run_copy)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "4 cases (1 already done, 0 skipped, 3 to run)" in proc.stdout
    assert "2 damaged row(s) of results.csv will be run again; the file as it was is kept in" in proc.stdout
    assert (run_copy / "results.csv.damaged").read_text().endswith(cut)  # nothing repaired, nothing thrown away
    after = store.read_results(run_copy)
    assert len(after) == 4 and set(after["status"]) == {"ok"} and 999.0 not in list(after["wall_s"])
    assert str(after["height"].dtype) == "Int64"
    header, *rows = csv.read_text().splitlines()
    assert all(",4,4,16,1,8,2," in r or ",5,5,25,1,8,2," in r for r in rows), rows  # ints written as ints


# --------------------------------------------------------------------------------- samples.jsonl
def test_a_torn_samples_line_is_skipped_and_its_case_run_again(tiny_run, run_copy, capsys):
    suite, _ = tiny_run
    jsonl = run_copy / "samples.jsonl"
    text = jsonl.read_text()
    jsonl.write_text(text[: len(text) - 40])  # the last case's line torn, no newline at the end
    last_key = text.splitlines()[-1].split('"')[3]

    proc = _resume(suite, run_copy)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "samples.jsonl: line 4 is torn or damaged; skipped" in proc.stderr
    assert f"({last_key}): its raw samples (latency_ms) are missing from samples.jsonl" in proc.stdout
    assert "(3 already done, 0 skipped, 1 to run)" in proc.stdout
    # the new line starts on a fresh line: every case has its samples, none glued onto the torn one
    lines = jsonl.read_text().splitlines()
    assert len(lines) == 5 and lines[-1].startswith('{"case_key": "%s"' % last_key)
    assert main(["compare", str(run_copy), str(run_copy)]) == 0
    out = capsys.readouterr().out
    assert "no raw samples" not in out, out


# ------------------------------------------------------------------- killed workers and parents
def _start_nap_run(tmp_path: Path, timeout_s: int = 60, wait: bool = True) -> tuple[subprocess.Popen, Path, Path]:
    suite = tmp_path / "nap.yaml"
    suite.write_text(NAP % timeout_s)
    flag = tmp_path / "nap.flag"
    flag.write_text("")
    proc = subprocess.Popen([sys.executable, "-c", CLI_WITH_PLUGINS, "run", str(suite), "--out", str(tmp_path / "out"),
                             "--no-report"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "ATTNBENCH_TEST_NAP": str(flag)})
    pid_file = Path(str(flag) + ".pid")
    if not wait:
        return proc, suite, flag
    deadline = time.monotonic() + 90
    while not pid_file.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert pid_file.exists(), proc.communicate()[1] if proc.poll() is not None else "the worker never napped"
    time.sleep(0.1)  # the pid is written before the nap starts
    return proc, suite, flag


def _gone(pid: int, within: float) -> bool:
    import psutil

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_a_stray_kill_9_of_a_worker_is_not_oom_skips_nothing_and_is_run_again(tmp_path):
    proc, suite, flag = _start_nap_run(tmp_path)
    worker = int(Path(str(flag) + ".pid").read_text().split()[0])
    os.kill(worker, signal.SIGKILL)
    flag.unlink()  # later cases (and the re-run) do not nap
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err  # a case errored
    (run_dir,) = (tmp_path / "out" / "nap").iterdir()
    rows = store.read_results(run_dir).set_index("height")
    assert rows.loc[8, "status"] == "error"
    assert rows.loc[8, "error"].startswith("worker killed (signal 9), not by the kernel OOM killer (no OOM-kill counter")
    assert list(rows.loc[[9, 10], "status"]) == ["ok", "ok"]  # no "already ended in oom" skips

    proc = subprocess.run([sys.executable, "-c", CLI_WITH_PLUGINS, "run", str(suite), "--resume", str(run_dir),
                           "--no-report"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "its worker was killed by a signal, not by the case" in proc.stdout
    assert "(2 already done, 0 skipped, 1 to run)" in proc.stdout
    assert set(store.read_results(run_dir)["status"]) == {"ok"}


def test_workers_die_with_their_parent(tmp_path):
    proc, _, flag = _start_nap_run(tmp_path)
    worker, death_signal = map(int, Path(str(flag) + ".pid").read_text().split())
    if sys.platform == "linux":  # armed by the worker itself; elsewhere the watchdog thread alone
        assert death_signal == signal.SIGKILL
    os.kill(proc.pid, signal.SIGKILL)  # only the parent, as a crash or an OOM kill of it would
    proc.communicate(timeout=30)
    try:
        assert _gone(worker, within=5), "the worker outlived its parent"
    finally:
        flag.unlink()
        if not _gone(worker, within=0.1):
            os.kill(worker, signal.SIGKILL)


def test_a_skip_inferred_from_another_row_is_tried_again_by_resume(tmp_path):
    suite = tmp_path / "hog.yaml"
    suite.write_text("name: hog\ndevice: cpu\nresolutions: [8, 9, 10]\ndim: 8\nnum_heads: 2\nmetrics: [params, time]\n"
                     "timing: {min_run_time: 0.01, warmup: 1}\nlimits: {max_memory_gb: 0.25}\ncases_per_worker: 10\nmechanisms: [test_flag_hog]\n")
    flag = tmp_path / "hog.flag"
    flag.write_text("")
    proc = cli("run", str(suite), "--out", str(tmp_path / "out"), "--no-report", plugins=True,
               env={"ATTNBENCH_TEST_HOG": str(flag)})
    (run_dir,) = (tmp_path / "out" / "hog").iterdir()
    rows = store.read_results(run_dir).set_index("height")
    assert list(rows["status"]) == ["oom"] * 3, proc.stdout + proc.stderr
    assert rows.loc[9, "error"] == "not run: the same configuration at 8x8 already ended in oom"
    # The evidence row goes (as a damaged row would; here it is deleted, the other rows' checksums intact):
    # the skips inferred from it must not stay "done".
    flag.unlink()
    csv = run_dir / "results.csv"
    header, first, *rest = csv.read_text().splitlines(keepends=True)
    csv.write_text(header + "".join(rest))
    proc = _resume(suite, run_dir, plugins=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("its skip was inferred from another row") == 2
    assert "(0 already done, 0 skipped, 3 to run)" in proc.stdout
    assert set(store.read_results(run_dir)["status"]) == {"ok"}


# ----------------------------------------------------------------------------- write faults
def _file_size_limit(limit: int):
    def preexec() -> None:  # in the child: files may not grow past `limit` bytes (a full disk, per file)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


def test_a_full_disk_ends_the_run_with_one_line_keeping_rows_and_resume_finishes(tiny_run, tmp_path):
    suite, done = tiny_run
    # files may grow to the header and two rows of results.csv (and no less than env.json needs)
    lines = (done / "results.csv").read_text().splitlines(keepends=True)
    limit = max(len("".join(lines[:3])) + 60, (done / "env.json").stat().st_size + 10)
    assert limit < (done / "results.csv").stat().st_size
    proc = cli("run", str(suite), "--out", str(tmp_path), "--no-report", preexec=_file_size_limit(limit))
    assert proc.returncode == 2
    line = one_line_error(proc.stderr)
    (run_dir,) = (tmp_path / "tiny").iterdir()
    assert re.search(rf"cannot write {re.escape(str(run_dir))}/(results\.csv|samples\.jsonl): File too large \(EFBIG\)",
                     line), line
    assert f"Rows already written stay in {run_dir / 'results.csv'}" in line
    assert f"continue with: attnbench run {suite} --resume {run_dir}" in line
    kept = store.read_results(run_dir)
    assert 1 <= len(kept) < 4 and set(kept["status"]) == {"ok"}
    proc = _resume(suite, run_dir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = store.read_results(run_dir).set_index("case_key")
    assert len(after) == 4
    assert list(after.loc[list(kept["case_key"]), "wall_s"]) == list(kept["wall_s"])  # kept rows untouched


# ------------------------------------------------------------------------------- output paths
@pytest.fixture
def read_only_dir(tmp_path) -> Path:
    """A folder no one may write to: a read-only tmpfs as root (root ignores modes), else mode 0555."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)],
                          capture_output=True).returncode != 0:
            pytest.skip("root cannot mount a read-only tmpfs here")
        yield ro
        subprocess.run(["umount", str(ro)], check=False)
        return
    ro.chmod(0o555)
    yield ro
    ro.chmod(0o755)


def test_run_out_naming_a_file_is_one_line_in_a_real_process(tiny_run, tmp_path):
    suite, _ = tiny_run
    afile = tmp_path / "afile"
    afile.write_text("")
    proc = cli("run", str(suite), "--out", str(afile))
    assert proc.returncode == 2
    assert "Not a directory (ENOTDIR); a part of the path is a file, not a folder" in one_line_error(proc.stderr)


@pytest.mark.parametrize("where, expected", [
    ("read_only", "(EROFS)" if os.geteuid() == 0 else "(EACCES)"),
    ("too_long", "File name too long (ENAMETOOLONG)"),
])
def test_run_out_in_a_bad_place_is_one_line(where, expected, tiny_run, tmp_path, request, capsys):
    suite, _ = tiny_run
    out = request.getfixturevalue("read_only_dir") if where == "read_only" else tmp_path / ("x" * 300)
    assert main(["run", str(suite), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert expected in one_line_error(err) and "--out" in err


def test_tasks_preview_out_problems_are_one_line(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert main(["tasks", "preview", "--out", str(afile), "--sizes", "16", "--task", "pairmatch", "-n", "2"]) == 2
    assert f"cannot create the --out folder {afile}: File exists (EEXIST)" in one_line_error(capsys.readouterr().err)
    assert main(["tasks", "preview", "--out", str(tmp_path / ("y" * 300)), "--sizes", "16", "--task", "pairmatch",
                 "-n", "2"]) == 2
    assert "(ENAMETOOLONG)" in one_line_error(capsys.readouterr().err)


def test_history_plots_of_very_long_labels_get_short_file_names(tmp_path, capsys):
    from synthetic_runs import case, ok_row, write_run

    label = "swin-" + "w" * 300
    for i, lat in enumerate((1.0, 1.02, 0.99)):
        c = case(label, 8, mechanism="swin")
        write_run(tmp_path / "s" / f"run{i}", [ok_row(c, lat)], samples={c.key(): [lat, lat * 1.01, lat * 0.99]},
                  env={"created_at": f"2026-01-0{i + 1}T00:00:00+00:00"})
    assert main(["history", str(tmp_path / "s")]) == 0, capsys.readouterr().err
    plots = list((tmp_path / "s" / "history").glob("*.png"))
    assert len(plots) == 1 and len(plots[0].name) < 140


# ---------------------------------------------------------------------------- damaged files
DAMAGE = {
    "truncated": lambda text: text[: len(text) // 2],
    "empty": lambda text: "",
    "garbage": lambda text: "\x00\x17garbage\xff" * 10,
}


# A cut or empty results.csv is not an error for --resume: it runs the missing cases (tests above).
DAMAGED_READS = [(n, d, c) for n in ("results.csv", "env.json") for d in DAMAGE
                 for c in ("resume", "report", "compare", "history")
                 if not (c == "resume" and n == "results.csv" and d != "garbage")]


@pytest.mark.parametrize("name,damage,command", DAMAGED_READS)
def test_damaged_result_files_give_one_line_never_a_traceback(name, damage, command, tiny_run, run_copy, capsys):
    suite, _ = tiny_run
    path = run_copy / name
    path.write_text(DAMAGE[damage](path.read_text()))
    argv = {"resume": ["run", str(suite), "--resume", str(run_copy), "--no-report"],
            "report": ["report", str(run_copy), "--no-plots"],
            "compare": ["compare", str(run_copy), str(run_copy)],
            "history": ["history", str(run_copy.parent), "--no-plots"]}[command]
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert all(ln.startswith("attnbench: ") for ln in err.splitlines()), err
    assert str(path) in err, err  # the file is named, as an error or as a warning
    if name == "env.json" or damage == "garbage":  # nothing to trust: stop, say which file and what to do
        assert code == 2 and "damaged" in one_line_error(err) + err, err
    else:  # cut or empty results.csv: its whole rows are read, the rest named and left out
        assert code in (0, 1) or (code == 2 and "have no case in common" in one_line_error(err)), err


def test_a_folder_with_only_env_and_suite_is_not_a_run(tiny_run, tmp_path, capsys):
    _, run_dir = tiny_run
    suite_dir = tmp_path / "tiny"
    shutil.copytree(run_dir, suite_dir / "a-run")
    stub = suite_dir / "stub"
    stub.mkdir()
    for name in ("env.json", "suite.yaml"):
        shutil.copy(run_dir / name, stub / name)
    assert store.list_runs(suite_dir) == [suite_dir / "a-run"]
    assert main(["history", str(suite_dir), "--no-plots"]) == 0
    assert "(1 runs," in capsys.readouterr().out


# ---------------------------------------------------------- the outermost handler, early failure
def test_a_crash_before_the_first_case_leaves_no_folder_one_line_and_a_log(tmp_path, capsys, monkeypatch):
    suite = tmp_path / "bug.yaml"
    suite.write_text("name: bug\ndevice: cpu\nresolutions: [4]\ndim: 8\nnum_heads: 2\nmetrics: [params]\n"
                     "mechanisms: [test_unplannable]\n")
    monkeypatch.setenv("ATTNBENCH_TEST_UNPLANNABLE", "1")  # the bug shows (here and in the subprocess)
    proc = cli("run", str(suite), "--out", str(tmp_path / "out"), plugins=True, env={"ATTNBENCH_LOG_DIR": str(tmp_path)})
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("attnbench: internal error: RuntimeError: deliberate bug in unavailable_reason")
    (log,) = tmp_path.glob("attnbench-error-*.log")
    assert f"the traceback is in {log}" in proc.stderr
    assert "Traceback" in log.read_text() and "unavailable_reason" in log.read_text()
    assert list((tmp_path / "out" / "bug").iterdir()) == []  # no folder with only env.json and suite.yaml

    # --debug shows the traceback in place
    assert main(["--debug", "run", str(suite), "--out", str(tmp_path / "out")]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    assert list((tmp_path / "out" / "bug").iterdir()) == []


# ------------------------------------------------------------------ values, YAML, the Python API
@pytest.mark.parametrize("yaml_text, expected", [
    ("limits: {timeout_s: .inf}", "key 'limits.timeout_s': must be a finite number, got inf"),
    ("limits: {max_memory_gb: .nan}", "key 'limits.max_memory_gb': must be a finite number, got nan"),
    ("timing: {min_run_time: .inf}", "key 'timing.min_run_time': must be a finite number, got inf"),
    ("seed: 99999999999999999999", "key 'seed': must be <= 4294967295, got 99999999999999999999"),
    ("seed: -1", "key 'seed': must be >= 0, got -1"),
    ("tasks: [pairmach]\nmetrics: [accuracy]", "key 'tasks': unknown task 'pairmach'; did you mean 'pairmatch'?"),
    ("dim: 16\ndim: 32", "not valid YAML at line 4, column 1: duplicate key 'dim' (first set at line 3); keep one"),
    ("limits:\n  timeout_s: 5\n  timeout_s: 6",
     "not valid YAML at line 5, column 3: duplicate key 'timeout_s' (first set at line 4); keep one"),
])
def test_values_that_would_fail_at_run_time_are_rejected_up_front(yaml_text, expected, tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(f"name: s\nmechanisms: [global]\n{yaml_text}\n")
    assert main(["run", str(suite), "--dry-run"]) == 2
    assert one_line_error(capsys.readouterr().err).startswith(f"attnbench: error: {suite}: {expected}")


def test_yaml_merge_keys_are_not_duplicates(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nbase: &b {timeout_s: 5}\nmechanisms: [global]\nlimits: {<<: *b, max_memory_gb: 1}\n")
    assert main(["run", str(suite), "--dry-run"]) == 2  # `base` is an unknown key, but the merge parsed
    assert "key 'base': unknown key" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["global", "swin", "axial"])
def test_the_api_rejects_empty_maps_and_mismatched_dtypes_with_valueerror(name):
    import mechanisms

    module = mechanisms.build(name, 16, 2)
    for shape in ((1, 0, 7, 16), (1, 7, 0, 16)):
        with pytest.raises(ValueError, match=rf"^{name}: input \(B, H, W, C\) needs B, H and W >= 1, got "):
            module(torch.randn(*shape))
    with pytest.raises(ValueError, match=rf"^{name}: input dtype torch.float64 does not match the module's torch.float32"):
        module(torch.randn(1, 7, 7, 16, dtype=torch.float64))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast mixes dtypes on purpose
        assert module(torch.randn(1, 7, 7, 16, dtype=torch.bfloat16)).shape == (1, 7, 7, 16)


def test_sigkill_is_oom_only_when_an_oom_kill_counter_rose():
    """The classification itself, on this machine's real counter files: a counter that rose since the job
    started is evidence (named in the row); unchanged counters, or none readable, are not."""
    from attnbench.executor import _death
    from attnbench.lifeline import oom_counters

    now = oom_counters()
    if not now:
        pytest.skip("no OOM-kill counter is readable here")
    path, count = next(iter(now.items()))
    status, reason = _death(-signal.SIGKILL, None, {path: count - 1})
    assert status == "oom" and reason.startswith(f"worker killed by the kernel OOM killer ({path} oom_kill {count - 1} -> ")
    status, reason = _death(-signal.SIGKILL, None, now)
    assert (status, reason) == ("error", "worker killed (signal 9), not by the kernel OOM killer (no OOM-kill counter "
                                         "rose while it ran); --resume runs it again")
    status, reason = _death(-signal.SIGKILL, None, {})
    assert status == "error" and "no OOM-kill counter is readable here" in reason
