"""``attnbench report RUN RUN ...``: one report across machines, duplicates shown, not dropped."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))

from synthetic_runs import case, lognormal_samples, ok_row, write_run  # noqa: E402

from attnbench.cli import main  # noqa: E402
from attnbench.report.merged import write_merged_report  # noqa: E402

FP = {"cpu_model": "Test CPU", "cpu_isa": ["avx2"], "cpu_count": 2, "gpu_name": None, "gpu_capability": None,
      "driver": None, "torch": "2.13.0+cpu", "cuda": None, "threads": 1}
FAST = {**FP, "cpu_model": "Fast CPU", "cpu_isa": ["avx2", "avx512_bf16"]}


def _run(path: Path, fp: dict, scale: float, seed: int, overrides: dict | None = None) -> Path:
    """global costs 1e-4·t², swin 0.05·t (ms): swin is faster than global from t = 500 on."""
    rows, samples = [], {}
    for label, model in (("global", lambda t: 1e-4 * t * t), ("swin", lambda t: 0.05 * t)):
        for side in (8, 16, 32):
            c = case(label, side)
            lat = scale * (overrides or {}).get((label, side), model(side * side))
            s = lognormal_samples(lat, 15, 0.01, seed + side)
            samples[c.key()] = s
            rows.append(ok_row(c, lat, s, macs=100 * side, params=4160, peak_memory_mib=float(side),
                               memory_method="cpu_profiler_allocator"))
    return write_run(path, rows, samples, env={"fingerprint": fp, "cpu": fp["cpu_model"]})


def test_runs_from_two_machines_become_columns_and_conflicting_duplicates_are_shown(tmp_path, capsys):
    a = _run(tmp_path / "s" / "a", FP, 1.0, 0)
    b = _run(tmp_path / "s" / "b", FAST, 0.25, 1)
    a_again = _run(tmp_path / "s" / "a2", FP, 1.0, 2, overrides={("swin", 16): 25.6})  # 12.8 -> 25.6 ms
    out = tmp_path / "merged"
    assert main(["report", str(a), str(b), str(a_again), "--out", str(out), "--no-plots"]) == 0
    md = (out / "report.md").read_text()
    assert "| mechanism | resolution | cpu · Test CPU [no native bf16] | cpu · Fast CPU [avx512_bf16] |" in md
    # the conflicting duplicate: both values in the cell, and both rows listed with their runs
    row = next(line for line in md.splitlines() if line.startswith("| swin | 16² |"))  # first table: latency
    base, again = (float(x) for x in row.split("|")[3].replace("⚠", "").split("≠"))
    assert abs(base / 12.8 - 1) < 0.02 and abs(again / 25.6 - 1) < 0.02 and abs(float(row.split("|")[4]) / 3.2 - 1) < 0.02
    assert "| swin | 16² | 16.0 | 16.0 |" in md  # memory agrees: one value, no conflict mark
    conflicts = md.split("## Conflicting duplicates")[1]
    assert conflicts.count("swin") == 2 and "| a " in conflicts and "| a2 " in conflicts
    assert "1 case(s) measured more than once" in conflicts
    # duplicates that agree within noise are shown once
    row = next(line for line in md.splitlines() if line.startswith("| global | 32² |"))
    assert "≠" not in row and abs(float(row.split("|")[3]) / 104.9 - 1) < 0.02
    # crossover per device · machine: 1e-4 t² = 0.05 t at t = 500 (log-log interpolation: close to it)
    cross = next(line for line in md.splitlines() if line.startswith("| swin | cheaper from"))
    tokens = [int(c.split("cheaper from ")[1].split(" tokens")[0].replace(",", "")) for c in cross.split("|")[2:4]]
    assert all(400 < t < 600 for t in tokens)
    tidy = pd.read_csv(out / "merged.csv")
    assert len(tidy) == 18 and {"device", "machine", "machine_id", "run", "conflict"} <= set(tidy.columns)
    assert tidy["conflict"].sum() == 2
    assert sorted(tidy["machine"].unique()) == ["Fast CPU [avx512_bf16]", "Test CPU [no native bf16]"]


def test_merged_report_plots_one_crossover_plot_per_device_and_machine(tmp_path):
    a = _run(tmp_path / "s" / "a", FP, 1.0, 0)
    b = _run(tmp_path / "s" / "b", FAST, 0.25, 1)
    files = write_merged_report([a, b], out=tmp_path / "m")
    pngs = sorted(p.name for p in files if p.suffix == ".png")
    assert len(pngs) == 2 and all(p.startswith("crossover__cpu__") for p in pngs)
    assert all((tmp_path / "m" / "plots" / p).stat().st_size > 1000 for p in pngs)


def test_out_is_for_merged_reports_and_a_run_is_not_merged_with_itself(tmp_path, capsys):
    a = _run(tmp_path / "s" / "a", FP, 1.0, 0)
    assert main(["report", str(a), "--out", str(tmp_path / "x")]) == 2
    assert "--out applies to a merged report" in capsys.readouterr().err
    assert main(["report", str(a), str(a), "--out", str(tmp_path / "x")]) == 2
    assert "a run is given twice" in capsys.readouterr().err
