"""Report rendering from stored (synthetic) runs: tables, statuses, plots, exponents, crossovers."""
from __future__ import annotations

import math
import sys
import types

import numpy as np
import pandas as pd
import pytest

from attnbench import UserError
from attnbench.cli import main
from attnbench.report import write_report
from attnbench.report.scaling import crossovers, describe_crossover, extrapolated_crossover, fit_power_law
from attnbench.report.tables import pivot, speedup_table, to_booktabs
from synthetic_runs import case, failed_row, ok_row, scaling_run, write_run

# global: t = 1e-6 N² ms, swin: t = 2e-3 N ms  ->  equal at N = 2000 tokens.
MODELS = {"global": lambda n: 1e-6 * n * n, "swin": lambda n: 2e-3 * n}
SIDES = [16, 32, 64, 128]
FAILS = {("global", 128): "oom", ("swin", 16): "timeout"}


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """One synthetic run, reported once (plots take ~1 s each on a busy 2-core box)."""
    run = scaling_run(tmp_path_factory.mktemp("runs") / "synthetic" / "run-a", MODELS, SIDES, failures=FAILS)
    return run, write_report(run)


@pytest.fixture
def run_dir(reported):
    return reported[0]


def test_power_law_fit_recovers_exponent():
    n = np.array([256, 1024, 4096, 16384], dtype=float)
    assert fit_power_law(n, 3e-4 * n ** 1.5).alpha == pytest.approx(1.5, abs=1e-12)
    assert fit_power_law(n, 3e-4 * n ** 1.5).coef == pytest.approx(3e-4, rel=1e-9)
    noisy = 2e-3 * n ** 1.2 * np.random.default_rng(0).lognormal(0, 0.01, n.size)
    assert fit_power_law(n, noisy).alpha == pytest.approx(1.2, abs=0.03)
    assert fit_power_law([256, 256], [1.0, 2.0]) is None  # one distinct size: no slope


def test_crossover_at_the_right_place():
    n = np.array([256, 1024, 4096, 16384], dtype=float)
    found = crossovers(n, MODELS["swin"](n), MODELS["global"](n))
    assert len(found) == 1
    assert found[0].direction == "a_cheaper"
    assert found[0].tokens == pytest.approx(2000.0, rel=1e-9)  # exact for two power laws
    back = crossovers(n, MODELS["global"](n), MODELS["swin"](n))
    assert back[0].direction == "a_costlier" and back[0].tokens == pytest.approx(2000.0, rel=1e-9)
    # A crossover hidden by a failed baseline point is found on the common sizes only.
    b = MODELS["global"](n)
    b[1] = np.nan
    assert crossovers(n, MODELS["swin"](n), b)[0].tokens == pytest.approx(2000.0, rel=1e-9)


def test_crossover_text_and_extrapolation():
    n = np.array([4096, 16384], dtype=float)
    text, point = describe_crossover(n, MODELS["swin"](n), MODELS["global"](n), "global")
    assert point is None and text.startswith("cheaper at all measured sizes")
    assert "2,000 tokens" in text and "extrapolated" in text
    fa, fb = fit_power_law(n, MODELS["swin"](n)), fit_power_law(n, MODELS["global"](n))
    assert extrapolated_crossover(fa, fb).tokens == pytest.approx(2000.0, rel=1e-6)
    assert extrapolated_crossover(fa, fa) is None


def test_report_renders_statuses_not_blanks(reported):
    run_dir, files = reported
    md = (run_dir / "report.md").read_text()
    assert files[0] == run_dir / "report.md"
    # Environment summary comes first.
    assert md.index("## Environment") < md.index("### Latency")
    assert "| torch |" in md and "Test CPU" in md
    latency = md.split("### Latency")[1].split("###")[0]
    global_row = next(line for line in latency.splitlines() if line.startswith("| global |"))
    swin_row = next(line for line in latency.splitlines() if line.startswith("| swin |"))
    assert global_row.rstrip(" |").endswith("oom")
    assert swin_row.split("|")[2].strip() == "timeout"
    assert "1.05 ±" in global_row  # median of the 32² samples, ~1.05 ms
    speed = md.split("### Speed-up vs global")[1].split("###")[0]
    assert "global oom" in speed and "timeout" in speed
    # 64²: global 16.8 ms / swin 8.19 ms ≈ 2.0×
    assert "| swin | timeout | 0.5" in speed and "2.0" in speed
    scaling = md.split("### Scaling")[1].split("###")[0]
    swin_scaling = next(line for line in scaling.splitlines() if line.startswith("| swin |"))
    assert "| 1.00 |" in swin_scaling and "cheaper from 2,0" in swin_scaling
    assert "## Cases that did not run" in md


def test_report_tex_and_csv(run_dir):
    tex = (run_dir / "report.tex").read_text()
    assert tex.count(r"\toprule") == tex.count(r"\bottomrule") >= 5
    assert "oom" in tex and r"$\pm$" in tex and r"$^2$" in tex
    csv = pd.read_csv(run_dir / "tables" / "latency_ms__cpu_float32_forward.csv", index_col=0)
    assert csv.loc["global", "128²"] == "oom"
    assert csv.loc["swin", "16²"] == "timeout"
    assert float(csv.loc["swin", "64²"]) == pytest.approx(8.192, rel=0.05)


def test_plots_written_and_nonempty(reported):
    run_dir, files = reported
    plots = [f for f in files if f.parent.name == "plots"]
    names = {f.name for f in plots}
    for kind in ("latency", "memory", "gflops"):
        for ext in ("png", "svg"):
            assert f"{kind}__cpu_float32_forward.{ext}" in names
    for f in plots:
        assert f.stat().st_size > 1000
    assert (run_dir / "plots" / "latency__cpu_float32_forward.png").read_bytes()[:4] == b"\x89PNG"
    md = (run_dir / "report.md").read_text()
    assert "![latency__cpu_float32_forward](plots/latency__cpu_float32_forward.png)" in md


def test_groups_split_by_dtype_and_mode(tmp_path):
    rows = []
    for dtype in ("float32", "bfloat16"):
        for mode in ("forward", "train"):
            for side in (8, 16):
                rows.append(ok_row(case("global", side, dtype=dtype, mode=mode), 1.0 + side, macs=10 ** 6))
    rows.append(failed_row(case("swin", 8, dtype="bfloat16", mode="train"), "unsupported", "no bf16 kernel"))
    run = write_run(tmp_path / "s" / "r", rows)
    files = write_report(run, plots=False)
    assert not [f for f in files if f.parent.name == "plots"]
    md = (run / "report.md").read_text()
    for title in ("cpu · float32 · forward", "cpu · float32 · train", "cpu · bfloat16 · forward", "cpu · bfloat16 · train"):
        assert f"## {title}" in md
    train_bf16 = md.split("## cpu · bfloat16 · train")[1]
    assert "| swin | unsupported | not run |" in train_bf16


def test_mac_disagreements_listed(tmp_path):
    rows = [ok_row(case("global", 8), 1.0, macs=1000, macs_fvcore=1000, macs_flop_counter=1500, macs_mismatch=True),
            ok_row(case("global", 16), 2.0, macs=4000, macs_fvcore=4000, macs_flop_counter=4000, macs_mismatch=False)]
    run = write_run(tmp_path / "s" / "r", rows)
    write_report(run, plots=False)
    md = (run / "report.md").read_text()
    section = md.split("## FLOP counter disagreements")[1]
    assert "1500" in section and "4000" not in section


def test_accuracy_section_appended(tmp_path, monkeypatch):
    fake = types.ModuleType("attnbench.report.accuracy_section")
    seen = {}

    def render(run, out_dir):
        seen["cols"] = [c for c in run.results.columns if c.startswith("fid_")]
        seen["out"] = out_dir
        return "## Fidelity\n\nall pass\n"

    fake.render = render
    monkeypatch.setitem(sys.modules, "attnbench.report.accuracy_section", fake)
    run = write_run(tmp_path / "s" / "r", [ok_row(case("global", 8), 1.0, fid_max_abs=1e-7, fid_pass=True)])
    write_report(run, plots=False)
    md = (run / "report.md").read_text()
    assert md.rstrip().endswith("all pass") and seen == {"cols": ["fid_max_abs", "fid_pass"], "out": run}


def test_pivot_marks_not_run_and_booktabs_escapes():
    frame = pd.DataFrame([ok_row(case("a_b", 8), 2.0), failed_row(case("c", 16), "error", "boom")])
    table = pivot(frame, lambda r: f"{r['latency_ms']:.1f}")
    assert table.loc["a_b", "16²"] == "not run" and table.loc["c", "16²"] == "error" and table.loc["a_b", "8²"] == "2.0"
    tex = to_booktabs(table, "50% of x_y", "tab:x")
    assert r"a\_b" in tex and r"50\% of x\_y" in tex
    assert speedup_table(frame, "missing") is None


def test_cli_report_and_bad_baseline(tmp_path, capsys):
    run_dir = scaling_run(tmp_path / "synthetic" / "run-b", MODELS, SIDES, failures=FAILS)
    assert main(["report", str(run_dir), "--baseline", "swin", "--no-plots"]) == 0
    md = (run_dir / "report.md").read_text()
    assert "### Speed-up vs swin" in md
    assert main(["report", str(run_dir), "--baseline", "nope"]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "global" in err and "swin" in err
    assert main(["report", str(run_dir.parent / "missing")]) == 2


def test_empty_run_still_reports(tmp_path):
    run = write_run(tmp_path / "s" / "r", [])
    write_report(run)
    assert "No results" in (run / "report.md").read_text()
