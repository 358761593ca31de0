"""Suites that name whole backbones (``models:``): validation, expansion, a worker round trip, a run."""
from __future__ import annotations

import os

import pytest
from rich.console import Console

from attnbench import UserError, store
from attnbench.model_case import ModelCase, case_from_dict
from attnbench.runner import run_suite
from attnbench.suite import load_suite, validate_suite

SMALL = {"depths": [1, 1, 1, 1]}


def _suite(**over):
    data = {"name": "m", "device": "cpu", "resolutions": [32, [32, 48]], "metrics": ["params", "flops"],
            "models": [{"name": "swin-t", **SMALL}, {"name": "swin-t", "attention": "pale", "label": "swin-t/pale", **SMALL}]}
    data.update(over)
    return validate_suite(data, source="s.yaml")


def _error(**over) -> str:
    with pytest.raises(UserError) as err:
        _suite(**over)
    return str(err.value)


def test_models_expand_into_model_cases_in_pixels():
    cases = _suite(dtype=["float32", "bfloat16"]).expand()
    assert len(cases) == 2 * 2 * 2 and all(isinstance(c, ModelCase) for c in cases)
    first = cases[0]
    assert (first.label, first.height, first.width, first.tokens, first.dim) == ("swin-t", 32, 32, 64, 96)
    assert first.metric_options is not None and set(first.metric_options) == {"params", "flops"}
    assert cases[1].mechanism == "pale" and cases[1].attention == "pale"


def test_models_and_mechanisms_share_one_suite():
    cases = _suite(mechanisms=["global"], dim=32).expand()
    assert {type(c).__name__ for c in cases} == {"Case", "ModelCase"}


def test_worker_round_trip():
    for case in _suite(mechanisms=["axial"]).expand():
        assert case_from_dict(case.to_dict()) == case


@pytest.mark.parametrize("over, message", [
    ({"models": [{"name": "swin-tt"}]},
     "s.yaml: key 'models[0]': unknown backbone 'swin-tt'; choose one of "
     "['cswin-t', 'deit-s', 'pale-t', 'slide-swin-t', 'swin-t']. Did you mean 'swin-t'?"),
    ({"models": [{"name": "swin-t", "attention": "palee"}]}, "s.yaml: key 'models[0]': unknown mechanism 'palee'"),
    ({"models": [{"name": "swin-t", "windw_size": 8}]},
     "s.yaml: key 'models[0]': backbone 'swin-t' has no option 'windw_size'"),
    ({"resolutions": [30]},
     "s.yaml: key 'resolutions': 30x30 px is not a multiple of swin-t's patch size 4 (for models[0]); "
     "model resolutions are in pixels"),
    ({"metrics": ["params", "accuracy"]},
     "s.yaml: key 'metrics': 'accuracy' cannot measure a whole model; a suite with 'models' may list "
     "params, flops, memory, time, fidelity"),
    ({"models": ["pale-t", {"name": "swin-t", "attention": "pale", "label": "pale-t"}]},
     "s.yaml: key 'models[1].label': label 'pale-t' is already used; give each entry a distinct 'label'"),
])
def test_bad_model_entries_name_key_and_fix(over, message):
    assert _error(**over).startswith(message)


def test_a_suite_needs_mechanisms_or_models():
    with pytest.raises(UserError) as err:
        validate_suite({"name": "m"}, source="s.yaml")
    assert str(err.value) == "s.yaml: key 'mechanisms': missing (every suite needs 'name' and 'mechanisms' or 'models')"


@pytest.mark.parametrize("path", ["suites/backbones.yaml", "suites/backbones-gpu.yaml"])
def test_backbone_suites_validate(repo_root, path):
    suite = load_suite(repo_root / path)
    labels = {c.label for c in suite.expand(["cpu"])}
    assert {"deit-s", "swin-t", "cswin-t", "pale-t", "slide-swin-t", "swin-t/pale"} <= labels


def test_a_model_suite_runs(tmp_path):
    """One tiny backbone, forward and train, through workers: every row ok, with params, MACs both
    counted ways and fidelity against the float64 copy."""
    suite = _suite(resolutions=[32], mode=["forward", "train"], metrics=["params", "flops", "fidelity"],
                   models=[{"name": "pale-t", **SMALL}], flops={"fvcore": False})
    run_dir = run_suite(suite, out=tmp_path, console=Console(file=open(os.devnull, "w"), width=120))
    rows = store.read_results(run_dir)
    assert list(rows["status"]) == ["ok", "ok"] and list(rows["model"]) == ["pale-t", "pale-t"]
    assert (rows["macs_flop_counter"] == rows["macs"]).all() and not rows["macs_mismatch"].any()
    assert (rows["fid_rel_l2"] < 1e-5).all() and rows["fid_grad_rel_l2"].notna().tolist() == [False, True]
