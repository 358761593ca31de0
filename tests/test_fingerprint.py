"""Machine identity: env.json's fingerprint, and how compare and history use it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from synthetic_runs import case, lognormal_samples, ok_row, write_run  # noqa: E402

from attnbench import UserError, devices, fingerprint  # noqa: E402
from attnbench.cli import main  # noqa: E402
from attnbench.compare import compare_runs  # noqa: E402
from attnbench.history import collect  # noqa: E402
from attnbench.store import load_run  # noqa: E402

NO_BF16 = {"cpu_model": "AMD EPYC", "cpu_isa": ["avx2"], "cpu_count": 2, "gpu_name": None, "gpu_capability": None,
           "driver": None, "torch": "2.13.0+cpu", "cuda": None, "threads": 1}
BF16 = {**NO_BF16, "cpu_model": "Intel(R) Xeon(R) Processor",
        "cpu_isa": ["avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"]}


def _run(path: Path, fp: dict | None, latency: float = 1.0, seed: int = 0, peaks=None) -> Path:
    rows, samples = [], {}
    for side in (8, 16):
        c = case("global", side)
        s = lognormal_samples(latency * side, 20, 0.02, seed + side)
        samples[c.key()] = s
        rows.append(ok_row(c, latency * side, s, macs=1000 * side, params=4160, peak_memory_mib=10.0 * side,
                           memory_method="cpu_profiler_allocator"))
    env = {"matmul_peak_gflops": peaks or {"float32": 50.0}}
    if fp is not None:
        env.update({"fingerprint": fp, "cpu": fp["cpu_model"]})
    return write_run(path, rows, samples, env=env)


def test_env_records_the_fingerprint_of_this_machine():
    env = devices.capture_env("cpu", 3)
    fp = env["fingerprint"]
    assert set(fp) == set(fingerprint.FIELDS)
    assert fp["threads"] == 3 and fp["torch"] == env["torch"] and fp["cpu_model"] == env["cpu"]
    assert fp["gpu_name"] is None  # a CPU run has no GPU in its identity
    flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].split() \
        if Path("/proc/cpuinfo").exists() else None
    if flags is not None:
        assert fp["cpu_isa"] == [f for f in fingerprint.ISA_FLAGS if f in flags]


def test_compare_refuses_runs_from_different_machines_naming_the_difference(tmp_path, capsys):
    base = _run(tmp_path / "s" / "a", NO_BF16, peaks={"float32": 80.0, "bfloat16": 9.0})
    new = _run(tmp_path / "s" / "b", BF16, latency=0.5, seed=7, peaks={"float32": 80.0, "bfloat16": 300.0})
    with pytest.raises(UserError) as err:
        compare_runs(load_run(base), load_run(new))
    msg = str(err.value)
    assert msg.startswith("the runs come from different machines (CPU: AMD EPYC (baseline) vs Intel(R) Xeon(R) "
                          "Processor (new); CPU ISA flags: lacks avx512f, avx512_bf16, amx_tile, amx_bf16 (baseline) "
                          "vs has avx512f, avx512_bf16, amx_tile, amx_bf16 (new)")
    assert "measured bf16/fp32 matmul peak 0.11 (baseline) vs 3.75 (new)" in msg and "--across-machines" in msg
    assert main(["compare", str(base), str(new)]) == 2
    assert "different machines" in capsys.readouterr().err
    # --across-machines: compared, with a warning naming the difference, never "different load"
    assert main(["compare", str(base), str(new), "--across-machines"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: runs from different machines (CPU: AMD EPYC (baseline) vs Intel(R) Xeon(R) Processor" in out
    assert "load" not in out
    comp = compare_runs(load_run(base), load_run(new), across_machines=True)
    assert {f.verdict for f in comp.findings if f.metric == "latency_ms"} == {"improvement"}


def test_unknown_fields_of_an_old_run_are_not_differences(tmp_path):
    old = _run(tmp_path / "s" / "old", None)  # no fingerprint: rebuilt from cpu/torch/threads
    new = _run(tmp_path / "s" / "new", {**NO_BF16, "cpu_model": "Test CPU"}, seed=3)
    assert fingerprint.of_env(load_run(old).env)["cpu_isa"] is None
    assert fingerprint.differences(load_run(old).env, load_run(new).env) == {}
    compare_runs(load_run(old), load_run(new))  # same machine as far as both runs know: compared


def test_history_groups_series_by_fingerprint(tmp_path):
    suite = tmp_path / "s"
    for r, fp in enumerate([None, {**NO_BF16, "cpu_model": "Test CPU"}, {**NO_BF16, "cpu_model": "Test CPU"},
                            {**BF16, "cpu_model": "Test CPU", "cpu_count": 8},
                            {**BF16, "cpu_model": "Test CPU", "cpu_count": 8}]):
        run = _run(suite / f"2026010{r}-run", fp, seed=r)
        env_file = run / "env.json"
        env_file.write_text(env_file.read_text().replace("2026-01-01T00:00:00", f"2026-01-0{r + 1}T00:00:00"))
    hist = collect(suite)
    # same CPU name, different ISA flags: two machines; the old run (ISA not recorded, 2 CPUs) joins
    # the only fingerprint it agrees with on every field it recorded
    machines = {s.machine for s in hist.series}
    assert len(machines) == 2 and len(hist.series) == 4
    runs_per_machine = sorted(len(s.runs) for s in hist.series)
    assert runs_per_machine == [2, 2, 3, 3]
    assert any("[avx512_bf16 amx_bf16]" in s.machine_label for s in hist.series)
    assert any("[no native bf16]" in s.machine_label for s in hist.series)
