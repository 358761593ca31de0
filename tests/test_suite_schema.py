"""Suites: every malformed file is one clear line (file, key, reason), exit code 2, no traceback;
valid suites fill defaults and expand into the cartesian product of their list-valued keys."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from attnbench import UserError
from attnbench.suite import load_suite, validate_suite

BAD = Path(__file__).parent / "data" / "bad_suites"

# file -> (key named in the message, words of the reason)
EXPECTED = {
    "unknown_key.yaml": ("'resolution'", "did you mean 'resolutions'"),
    "wrong_type.yaml": ("'dim'", "valid integer"),
    "negative_resolution.yaml": ("'resolutions'", "-112"),
    "zero_resolution_pair.yaml": ("'resolutions'", "[0, 56]"),
    "unknown_mechanism.yaml": ("'mechanisms[1].name'", "Did you mean 'swin'"),
    "empty_mechanisms.yaml": ("'mechanisms'", "at least one mechanism"),
    "bad_dtype.yaml": ("'dtype[1]'", "'float8' is not allowed"),
    "unknown_device.yaml": ("'device'", "'tpu' is not allowed"),
    "not_yaml.txt": ("not_yaml.txt", "not a YAML suite"),
    "broken_syntax.yaml": ("broken_syntax.yaml", "not valid YAML at line 3"),
    "duplicate_labels.yaml": ("'mechanisms[1].label'", "'local' is already used"),
    "unknown_option.yaml": ("'mechanisms[0].windw_size'", "did you mean 'window_size'"),
    "bad_option_value.yaml": ("'mechanisms[0]'", "window_size"),
    "workers_with_timing.yaml": ("'workers'", "must be 1 when measuring time"),
    "bad_timing_option.yaml": ("'timing.min_run_tme'", "did you mean 'min_run_time'"),
    "negative_timeout.yaml": ("'limits.timeout_s'", "must be > 0"),
    "unknown_metric.yaml": ("'metrics'", "unknown metric 'latency'"),
    "missing_name.yaml": ("'name'", "missing"),
    "not_a_mapping.yaml": ("not_a_mapping.yaml", "must be a YAML mapping"),
    "unknown_backend.yaml": ("'mechanisms[0].backend'", "'flash' is not a backend of 'axial'"),
    "include_unknown_key.yaml": ("'include[0].resolution'", "did you mean 'resolutions'"),
    "include_run_level_key.yaml": ("'include[0].workers'", "run-level setting; set it once at the top level"),
    "include_overlap.yaml": ("'include[0]'", "global 16x16 b1 float32 cpu forward is already in the top level"),
    "include_bad_option.yaml": ("'include[0].accuracy.stepz'", "did you mean 'steps'"),
    "include_bad_mechanism.yaml": ("'include[0].mechanisms[0]'", "window_size must be an int >= 1"),
    "include_not_a_list.yaml": ("'include'", "valid list"),
}


def test_every_bad_suite_file_is_covered():
    assert sorted(p.name for p in BAD.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_suite_is_one_line_naming_file_key_and_reason(name):
    with pytest.raises(UserError) as info:
        load_suite(BAD / name)
    msg = str(info.value)
    key, reason = EXPECTED[name]
    assert "\n" not in msg
    assert msg.startswith(str(BAD / name))
    assert key in msg and reason in msg, msg


def test_missing_file_is_one_line():
    with pytest.raises(UserError, match=r"no_such_suite\.yaml: no such suite file"):
        load_suite(BAD / "no_such_suite.yaml")


@pytest.mark.slow  # a fresh interpreter each (~4 s idle, more on a busy machine)
@pytest.mark.parametrize("name", ["unknown_key.yaml", "<missing>"])
def test_cli_reports_bad_suite_with_exit_code_2_and_no_traceback(name, repo_root):
    path = BAD / ("no_such_suite.yaml" if name == "<missing>" else name)
    proc = subprocess.run([sys.executable, "-m", "attnbench", "run", str(path), "--dry-run"], cwd=repo_root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("attnbench: error: ") and str(path) in lines[0]
    assert proc.stdout == ""


def test_defaults_are_filled_and_documented_values_used():
    suite = validate_suite({"name": "t", "mechanisms": ["global"]})
    d = suite.as_dict()
    assert d["device"] == "auto" and d["dtype"] == "float32" and d["mode"] == "forward"
    assert d["batch_size"] == 1 and d["dim"] == 64 and d["num_heads"] == 2 and d["resolutions"] == [56]
    assert d["metrics"] == ["flops", "params", "memory", "time"]
    assert d["limits"] == {"max_memory_gb": 16.0, "timeout_s": 600.0}
    assert d["timing"] == {"min_run_time": 1.0, "rounds": 1, "threads": 1, "warmup": 1, "clock": "wall"}
    assert d["workers"] == 1 and d["cases_per_worker"] == 1 and d["seed"] == 0 and d["tasks"] == [None]


def test_list_valued_keys_are_swept_as_a_cartesian_product():
    suite = validate_suite({
        "name": "t", "device": "cpu", "dtype": ["float32", "bfloat16"], "mode": ["forward", "train"],
        "resolutions": [8, [6, 10]], "dim": [16, 32], "mechanisms": ["global", {"name": "swin", "window_size": 4}],
    })
    cases = suite.expand()
    assert len(cases) == 2 * 2 * 2 * 2 * 2
    assert len({c.key() for c in cases}) == len(cases)
    assert {(c.height, c.width) for c in cases} == {(8, 8), (6, 10)}
    assert {c.label for c in cases} == {"global", "swin(window_size=4)"}


def test_label_defaults_to_name_plus_non_default_options():
    suite = validate_suite({"name": "t", "mechanisms": [
        {"name": "swin", "window_size": 7}, {"name": "swin", "window_size": 8, "shift": 4}, {"name": "pale", "pale_size": [7, 5]},
    ]})
    assert [e.label for e in suite.entries] == ["swin", "swin(window_size=8, shift=4)", "pale(pale_size=7x5)"]


def test_shipped_suites_are_valid(repo_root):
    for path in sorted((repo_root / "suites").glob("*.yaml")):
        assert load_suite(path).expand(["cpu"]), path


@pytest.mark.parametrize("name", ["unknown_mechanism.yaml", "not_yaml.txt", "duplicate_labels.yaml", "bad_dtype.yaml"])
def test_main_returns_2_with_one_line_on_stderr(name, capsys):
    from attnbench.cli import main

    assert main(["run", str(BAD / name), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith(f"attnbench: error: {BAD / name}: ")


def _two_grid_suite() -> dict:
    return {
        "name": "t", "device": "cpu", "metrics": ["accuracy"], "tasks": "digits", "resolutions": [16], "dim": 32,
        "accuracy": {"steps": 250, "depth": 2, "batch_size": 32},
        "mechanisms": ["global", {"name": "swin", "window_size": 8, "label": "swin"}],
        "include": [{
            "tasks": "pathfinder-3", "resolutions": [8], "dim": 64,
            "accuracy": {"steps": 2000, "depth": 3},
            "mechanisms": ["global", {"name": "swin", "window_size": 4, "label": "swin"}, "axial"],
        }],
    }


def test_include_blocks_add_grids_with_their_own_mechanisms_and_merged_metric_options():
    suite = validate_suite(_two_grid_suite())
    cases = suite.expand()
    top = [(c.label, c.height, c.dim, c.task) for c in cases if c.task == "digits"]
    block = [(c.label, c.height, c.dim, c.task, c.options_dict()) for c in cases if c.task == "pathfinder-3"]
    assert top == [("global", 16, 32, "digits"), ("swin", 16, 32, "digits")]
    assert block == [("global", 8, 64, "pathfinder-3", {}), ("swin", 8, 64, "pathfinder-3", {"window_size": 4}),
                     ("axial", 8, 64, "pathfinder-3", {})]
    by_task = {c.task: suite.metric_options_for(c)["accuracy"] for c in cases}
    # the block overrides steps and depth and inherits batch_size from the top level's block
    assert (by_task["digits"].steps, by_task["digits"].depth, by_task["digits"].batch_size) == (250, 2, 32)
    assert (by_task["pathfinder-3"].steps, by_task["pathfinder-3"].depth, by_task["pathfinder-3"].batch_size) == (2000, 3, 32)
    assert suite.as_dict()["include"][0]["accuracy"] == {"steps": 2000, "depth": 3}  # stored as written


def test_include_blocks_round_trip_through_the_stored_suite(tmp_path):
    import yaml

    suite = validate_suite(_two_grid_suite())
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite.as_dict()))
    again = load_suite(path)
    assert [c.key() for c in again.expand()] == [c.key() for c in suite.expand()]
    assert [again.metric_options_for(c)["accuracy"].steps for c in again.expand()] == [250, 250, 2000, 2000, 2000]
