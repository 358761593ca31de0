"""pytest-benchmark setup: machine info that says what the numbers were measured on.

pytest-benchmark records CPU, OS and Python only, and stores runs by OS/Python, so runs from two
GPUs (or two torch versions) could be compared by accident. The hook adds torch, CUDA, the device
and its name, and the thread count to every saved benchmark file.
"""
from __future__ import annotations

from typing import Any

from bench_env import machine_info as _info


def pytest_benchmark_update_machine_info(config: Any, machine_info: dict[str, Any]) -> None:
    machine_info.update(_info())


