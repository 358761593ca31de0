"""compare on stored synthetic runs: matching, env guard, exact metrics, memory tolerance, exit codes."""
from __future__ import annotations

import pytest

from attnbench import UserError
from attnbench.cli import main
from attnbench.compare import compare_runs
from attnbench.store import load_run
from synthetic_runs import case, failed_row, lognormal_samples, ok_row, write_run


def _run(path, slow: dict[str, float] | None = None, env=None, overrides=None, seed=0, drop=(), extra=()):
    """global/swin at 8² and 16²; ``slow`` scales a label's latency, ``overrides`` patches rows by label+side."""
    slow, overrides = slow or {}, overrides or {}
    rows, samples = [], {}
    for i, label in enumerate(("global", "swin")):
        for side in (8, 16):
            if (label, side) in drop:
                continue
            c = case(label, side, window_size=4) if label == "swin" else case(label, side)
            lat = (1.0 + side / 8) * slow.get(label, 1.0)
            s = lognormal_samples(lat, 25, 0.03, seed + 31 * i + side)
            samples[c.key()] = s
            row = ok_row(c, lat, s, macs=1000 * side, params=4160, peak_memory_mib=10.0 * side,
                         memory_method="cpu_profiler_allocator")
            row.update(overrides.get((label, side), {}))
            if row["status"] != "ok":
                row = failed_row(c, row["status"], "out of memory")
            rows.append(row)
    rows += list(extra)
    return write_run(path, rows, samples, env=env)


@pytest.fixture
def base(tmp_path):
    return _run(tmp_path / "s" / "base", seed=0)


def test_aa_is_clean(tmp_path, base):
    new = _run(tmp_path / "s" / "new", seed=100)
    comp = compare_runs(load_run(base), load_run(new))
    assert comp.exit_code == 0
    lat = [f for f in comp.findings if f.metric == "latency_ms"]
    assert len(lat) == 4 and all(f.verdict == "unchanged" for f in lat)


def test_slowdown_is_named_and_fails(tmp_path, base, capsys):
    new = _run(tmp_path / "s" / "new", slow={"swin": 1.25}, seed=100)
    assert main(["compare", str(base), str(new)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("REGRESSION: 2 regression(s)")
    reg_lines = [line for line in out.splitlines() if line.startswith("regression")]
    assert len(reg_lines) == 2 and all("swin" in line and "latency_ms" in line for line in reg_lines)
    assert "+25" in reg_lines[0] or "+24" in reg_lines[0] or "+26" in reg_lines[0]


def test_markdown_format_for_ci(tmp_path, base, capsys):
    new = _run(tmp_path / "s" / "new", slow={"global": 0.7}, seed=100)
    assert main(["compare", str(base), str(new), "--format", "md"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("**OK: 0 regression(s), 2 improvement(s)")
    assert "in 4 matched cases" in out.splitlines()[0]
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in out.splitlines() if line.startswith("| ")]
    assert rows[0][:3] == ["verdict", "case", "metric"]
    assert [r[:3] for r in rows[1:3]] == [["improvement", "global 8x8 float32 forward", "latency_ms"],
                                          ["improvement", "global 16x16 float32 forward", "latency_ms"]]


def test_environment_mismatch_refused_or_warned(tmp_path, base, capsys):
    # torch and threads are part of the machine fingerprint: refused as different machines
    new = _run(tmp_path / "s" / "new", env={"torch": "9.9.9", "threads": 2}, seed=100)
    with pytest.raises(UserError, match="different machines.*torch.*threads.*--across-machines"):
        compare_runs(load_run(base), load_run(new))
    # the device itself is an environment field outside the fingerprint
    other = _run(tmp_path / "s" / "other", env={"device": "mps"}, seed=100)
    assert main(["compare", str(base), str(other)]) == 2
    assert "environments differ" in capsys.readouterr().err
    assert main(["compare", str(base), str(other), "--allow-env-mismatch"]) == 0
    captured = capsys.readouterr()
    assert "WARNING: environments differ: device" in captured.err
    assert "WARNING: environment differs: device = 'cpu' (baseline) vs 'mps' (new)" in captured.out


def test_deterministic_metrics_compared_exactly(tmp_path, base):
    new = _run(tmp_path / "s" / "new", seed=100, overrides={
        ("global", 8): {"macs": 8001},                 # one MAC more: a change
        ("global", 16): {"params": 4159},              # one parameter fewer: an improvement
        ("swin", 8): {"peak_memory_mib": 80.5},        # +0.5 MiB on 80 MiB: within tolerance (0.8 MiB)
        ("swin", 16): {"peak_memory_mib": 162.0},      # +2 MiB on 160 MiB: beyond 1 %
    })
    comp = compare_runs(load_run(base), load_run(new))
    by = {(f.case.split()[0], f.case.split()[1], f.metric): f.verdict for f in comp.findings}
    assert by[("global", "8x8", "macs")] == "regression"
    assert by[("global", "16x16", "params")] == "improvement"
    assert by[("swin", "8x8", "peak_memory_mib")] == "unchanged"
    assert by[("swin", "16x16", "peak_memory_mib")] == "regression"
    assert comp.exit_code == 1


def test_status_change_and_unmatched_cases(tmp_path, base, capsys):
    extra = [ok_row(case("axial", 8), 1.0, lognormal_samples(1.0, 5, 0.01, 0))]
    new = _run(tmp_path / "s" / "new", seed=100, overrides={("global", 16): {"status": "oom"}},
               drop={("swin", 8)}, extra=extra)
    assert main(["compare", str(base), str(new)]) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("regression"))
    assert "global 16x16" in line and "status" in line and "ok" in line and "oom" in line
    assert "only in baseline (1): swin 8x8 float32 forward" in out
    assert "only in new run (1): axial 8x8 float32 forward" in out


def test_fallback_match_by_label_notes_the_options(tmp_path, base):
    # Same label, a different implementation (mechanism name and options differ, so case_key differs).
    rows = []
    samples = {}
    for side in (8, 16):
        c = case("swin", side, mechanism="swin_v2", window_size=8)
        s = lognormal_samples(1.0 + side / 8, 25, 0.03, side)
        samples[c.key()] = s
        rows.append(ok_row(c, 1.0 + side / 8, s, macs=1000 * side, params=4160))
    new = write_run(tmp_path / "s" / "new", rows, samples)
    comp = compare_runs(load_run(base), load_run(new))
    lat = [f for f in comp.findings if f.metric == "latency_ms"]
    assert {f.case for f in lat} == {"swin 8x8 float32 forward", "swin 16x16 float32 forward"}
    assert all("matched by label: swin" in f.note and "swin_v2" in f.note for f in lat)
    assert len(comp.only_baseline) == 2  # the two global cases


def test_no_common_cases_is_a_user_error(tmp_path, base):
    new = write_run(tmp_path / "s" / "other", [ok_row(case("pale", 8), 1.0)])
    with pytest.raises(UserError, match="no case in common"):
        compare_runs(load_run(base), load_run(new))
    assert main(["compare", str(base), str(tmp_path / "missing")]) == 2
    assert main(["compare", str(base), str(new), "--threshold", "-0.1"]) == 2


def test_machine_load_canary(tmp_path, base, capsys):
    new = _run(tmp_path / "s" / "new", env={"matmul_peak_gflops": {"float32": 20.0}}, seed=100)
    assert main(["compare", str(base), str(new)]) == 0
    out = capsys.readouterr().out
    assert "WARNING: measured float32 matmul peak differs (50 vs 20 GFLOP/s)" in out
    same = _run(tmp_path / "s" / "same", env={"matmul_peak_gflops": {"float32": 55.0}}, seed=100)
    assert compare_runs(load_run(base), load_run(same)).load_warnings == []


def test_latencies_from_different_clocks_are_not_compared(tmp_path, base):
    """A CPU-time run against a wall-clock run would compare two different quantities."""
    cpu = _run(tmp_path / "s" / "cpu", overrides={(lbl, s): {"timing_clock": "cpu"} for lbl in ("global", "swin")
                                                    for s in (8, 16)})
    wall = _run(tmp_path / "s" / "wall", overrides={(lbl, s): {"timing_clock": "wall"} for lbl in ("global", "swin")
                                                      for s in (8, 16)})
    with pytest.raises(UserError, match="different timing clocks"):
        compare_runs(load_run(wall), load_run(cpu))
    assert not compare_runs(load_run(wall), load_run(wall)).regressions
