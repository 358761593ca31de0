"""`attnbench doctor`: a bare machine (torch, numpy, rich) proves its backends; exit 1 on disagreement."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import mechanisms
from attnbench import doctor as doc
from attnbench.commands.doctor import doctor
from mechanisms.axial import AxialAttention

BLOCKED = ("pydantic", "pandas", "fvcore", "yaml", "scipy", "seaborn", "xformers", "matplotlib", "psutil", "submitit")
# A module set to None in sys.modules is absent to `import` (ModuleNotFoundError) and to
# importlib.util.find_spec (None), exactly as on a machine where it was never installed.
BLOCKER = textwrap.dedent(f"""
    import sys

    for name in {BLOCKED!r}:
        sys.modules[name] = None
""")


def _bare_env(tmp_path: Path, repo_root: Path) -> dict[str, str]:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(repo_root)])
    env["COLUMNS"] = "200"
    return env


@pytest.mark.slow
def test_doctor_runs_with_only_torch_numpy_and_rich(tmp_path, repo_root):
    """python -m attnbench doctor with pydantic, pandas, yaml, scipy, fvcore, seaborn, xformers blocked:
    it lists every backend of the mechanism (flex compiled included) and exits 0."""
    env = _bare_env(tmp_path, repo_root)
    out = subprocess.run([sys.executable, "-m", "attnbench", "doctor", "--device", "cpu", "--mechanism", "axial",
                          "--dtype", "float32", "--size", "5x9", "--threads", "1", "--json"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["ok"] is True
    assert report["env"]["torch"] == torch.__version__ and "matmul_peak_gflops" in report["env"]
    rows = {(r["backend"], r["mode"]): r for r in report["checks"]}
    assert set(rows) == {(b, m) for b in AxialAttention.backends for m in ("forward", "train")}
    assert rows["flex", "forward"]["status"] == "ok" and rows["flex", "forward"]["rel_l2"] <= 1e-5
    assert rows["flex", "forward"]["compile_s"] > 0
    assert rows["flex", "train"]["status"] == "unavailable" and "backward on CPU" in rows["flex", "train"]["reason"]
    assert all(rows[b, m]["status"] == "ok" for b in ("native", "masked") for m in ("forward", "train"))


def test_other_commands_name_the_missing_dependency_on_a_bare_machine(tmp_path, repo_root):
    env = _bare_env(tmp_path, repo_root)
    out = subprocess.run([sys.executable, "-m", "attnbench", "run", "suites/smoke.yaml"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 2
    assert "needs the Python package" in out.stderr and "Traceback" not in out.stderr


class _OffByOnePercent(AxialAttention):
    """Test-only, deliberately wrong: the native output scaled by 1.01."""

    def _forward_native(self, x):
        return super()._forward_native(x) * 1.01


def test_a_disagreeing_backend_fails_the_doctor_with_exit_1(capsys):
    mechanisms.register("doctor_wrong_axial")(_OffByOnePercent)
    try:
        code = doctor("cpu", ["float32"], ["forward"], ["doctor_wrong_axial"], ["native", "masked"], (5, 9), as_json=True)
    finally:
        mechanisms.unregister("doctor_wrong_axial")
    report = json.loads(capsys.readouterr().out)
    assert code == 1 and report["ok"] is False
    status = {r["backend"]: r for r in report["checks"]}
    assert status["native"]["status"] == "fail" and "rel_l2" in status["native"]["reason"]
    assert status["masked"]["status"] == "ok"


def test_unavailable_backends_say_why_and_do_not_fail_the_doctor():
    rows = doc.run_checks("cpu", ["float32"], ["forward"], names=["global"], backends=["xformers"], size=(4, 4))
    assert [r.status for r in rows] == ["unavailable"] and "CUDA only" in rows[0].reason
    assert doc.exit_code(rows) == 0
    assert doc.exit_code(rows + [doc.Check("x", "x", "native", "float32", "forward", "error", "boom")]) == 1


def test_bad_device_is_one_line_exit_2(capsys):
    from attnbench.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["doctor", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attnbench: error: --device cuda: cuda is not available") and len(err.splitlines()) == 1


def test_table_shows_variant_labels_and_reasons_verbatim(capsys):
    """Labels such as swin[shift=None] are text, not rich markup."""
    code = doctor("cpu", ["float32"], ["forward"], ["swin"], ["native"], (4, 4))
    out = capsys.readouterr().out
    assert code == 0 and "swin[shift=None]" in out
