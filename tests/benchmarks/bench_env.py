"""What kernel benchmarks run on, shared by the conftest hook and the tests."""
from __future__ import annotations

import os
from typing import Any

import torch


def bench_device() -> str:
    """Device for kernel benchmarks: ``ATTNBENCH_BENCH_DEVICE`` or the best one available."""
    from attnbench.devices import auto_device

    return os.environ.get("ATTNBENCH_BENCH_DEVICE") or auto_device()


def machine_info() -> dict[str, Any]:
    """torch, CUDA, device, device name and threads: what pytest-benchmark's machine info lacks."""
    from attnbench.devices import device_name

    device = bench_device()
    return {"torch": torch.__version__, "cuda": torch.version.cuda, "device": device,
            "device_name": device_name(device), "threads": torch.get_num_threads()}
