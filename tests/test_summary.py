"""The end-of-run terminal summary shows what the suite measured, and the accuracy run's verdict."""
from __future__ import annotations

import pandas as pd
from rich.console import Console

from attnbench.summary import print_summary


def _render(rows: list[dict]) -> str:
    console = Console(width=200, record=True, color_system=None)
    print_summary(pd.DataFrame(rows), console, title="t")
    return console.export_text()


BASE = {"height": 16, "width": 16, "dtype": "float32", "mode": "train", "status": "ok", "device": "cpu"}


def _acc_row(label: str, acc: float, expect: str | None, valid: bool | None, layers: float | None) -> dict:
    return {**BASE, "label": label, "task": "pairmatch", "fid_pass": True, "rf_keys_mean": 64.0,
            "rf_layers_to_full": layers, "rf_erf_area95": 0.21, "acc_mean": acc, "acc_train_s": 20.4,
            "acc_expect": expect, "acc_valid": valid, "macs": None, "latency_ms": None}


def test_accuracy_suite_summary_shows_accuracy_columns_and_drops_empty_cost_columns():
    out = _render([_acc_row("global", 0.983, "learn", True, 1.0), _acc_row("swin", 0.5, "chance", True, None)])
    header = next(line for line in out.splitlines() if "label" in line)
    for col in ("task", "fidelity", "layers to full", "ERF95", "acc", "train s"):
        assert col in header
    for col in ("GMACs", "peak MiB", "img/s"):
        assert col not in header
    swin = next(line for line in out.splitlines() if "swin" in line)
    assert "never" in swin and "0.500" in swin and "pass" in swin
    assert "Accuracy run validity (PairMatch sanity check): VALID" in out


def test_failed_sanity_check_is_printed_as_invalid_with_the_reason():
    out = _render([_acc_row("global", 0.70, "learn", False, 1.0), _acc_row("swin", 0.5, "chance", True, None)])
    assert "INVALID" in out
    assert "global on pairmatch at 16x16: accuracy 0.700, expected ≥ learn_min (learn)" in out


def test_cost_suite_summary_keeps_cost_columns_and_prints_no_validity():
    row = {**BASE, "label": "global", "macs": 1.3e9, "params": 16640, "peak_memory_mib": 4.4,
           "latency_ms": 59.3, "latency_iqr_ms": 1.4, "throughput_img_s": 16.9}
    out = _render([row])
    header = next(line for line in out.splitlines() if "label" in line)
    assert "GMACs" in header and "ms" in header and "acc" not in header.split()
    assert "1.3" in out and "validity" not in out
