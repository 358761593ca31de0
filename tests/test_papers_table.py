"""The report's papers'-table section for backbone rows."""
import pandas as pd

from attnbench.report.papers_table import section


def _row(label, model, options="{}", **kw):
    row = {"model": model, "label": label, "options": options, "height": 224, "width": 224, "batch_size": 2,
           "device": "cpu", "dtype": "float32", "mode": "forward", "status": "ok", "params": 28_288_354,
           "macs": 2 * 4_490_566_656, "throughput_img_s": 3530.2, "latency_ms": 26.14, "peak_memory_mib": 1285.4}
    row.update(kw)
    return row


def test_section_compares_paper_models_only(tmp_path):
    frame = pd.DataFrame([
        _row("swin-t", "swin-t"),
        _row("swin-t/pale", "swin-t", params=28_384_264, macs=2 * 5_075_000_000),
        _row("swin-t", "swin-t", height=384, width=384, macs=None, throughput_img_s=None, status="timeout"),
        _row("small", "swin-t", options='{"depths": [1, 1, 1, 1]}', params=12_201_619),
    ])
    md = section(frame, tmp_path, with_plots=False)
    assert "| swin-t | 28.29M | 4.49 | 28M | 4.5G | -0.01% | +0.01% |" in md
    assert "| swin-t/pale | 28.38M | 5.08 |  |  |  |  |" in md  # a swap: no paper row
    assert "| small | 12.20M | 4.49 |  |  |  |  |" in md  # overridden: no paper row
    assert "| swin-t      | 3530 · 26.1 · 1285 |" in md
    assert "1 backbone case(s) did not run" in md


def test_no_section_without_backbone_rows(tmp_path):
    assert section(pd.DataFrame([{"mechanism": "swin", "label": "swin", "status": "ok"}]), tmp_path) is None
    assert section(pd.DataFrame([{"model": None, "label": "swin", "status": "ok"}]), tmp_path) is None
