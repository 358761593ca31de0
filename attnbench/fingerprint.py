"""Machine identity: what a timing depends on besides the code, recorded in ``env.json``.

Why: two runs from different machines differ for reasons no code change explains. A CPU with
native bfloat16 (``avx512_bf16``/``amx_bf16``) runs a bf16 matmul 10-50x faster than one that
emulates it, so ``compare`` would read the machine change as a 90 % "improvement" and the matmul
peak canary would call it "different load". The fingerprint names the hardware and software that
set a timing's level, so ``compare`` can refuse (or, when asked, warn) naming the difference, and
``history`` keeps one series per machine.

Runs stored before the fingerprint existed have none: it is rebuilt from the env fields they do
have (CPU model, device name, driver, torch, CUDA, threads); what they never recorded (ISA flags,
GPU capability) is ``None`` = unknown, which is never counted as a difference.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from typing import Any

import torch

# ISA features that change which kernels a CPU runs (bf16/fp16/int8 matrix units, vector width).
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
# Fingerprint fields in the order they are shown.
FIELDS = ("cpu_model", "cpu_isa", "cpu_count", "gpu_name", "gpu_capability", "driver", "torch", "cuda", "threads")
TITLES = {"cpu_model": "CPU", "cpu_isa": "CPU ISA flags", "cpu_count": "CPU count", "gpu_name": "GPU",
          "gpu_capability": "GPU capability", "driver": "driver", "torch": "torch", "cuda": "CUDA",
          "threads": "threads"}


def cpu_isa_flags() -> list[str] | None:
    """The ISA_FLAGS this CPU has (Linux ``/proc/cpuinfo``); ``None`` where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [f for f in ISA_FLAGS if f in have]
    except OSError:
        pass
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return ["arm64"]
    return None


def capture(device: str, threads: int) -> dict[str, Any]:
    """The fingerprint of this machine for timings on ``device`` with ``threads`` intra-op threads."""
    from .devices import _nvidia_driver, cpu_model, cuda_available

    gpu_name = gpu_cap = driver = None
    if device == "cuda" and cuda_available():
        idx = torch.cuda.current_device()
        gpu_name = torch.cuda.get_device_name(idx)
        gpu_cap = "{}.{}".format(*torch.cuda.get_device_capability(idx))
        try:
            driver = _nvidia_driver()
        except Exception:  # best-effort metadata
            driver = None
    elif device == "mps":
        gpu_name = f"Apple {platform.machine()} GPU (MPS)"
    return {"cpu_model": cpu_model(), "cpu_isa": cpu_isa_flags(), "cpu_count": os.cpu_count(), "gpu_name": gpu_name,
            "gpu_capability": gpu_cap, "driver": driver, "torch": torch.__version__, "cuda": torch.version.cuda,
            "threads": threads}


def of_env(env: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint of a stored run: recorded, or rebuilt from an older env.json (unknowns None)."""
    fp = env.get("fingerprint")
    if isinstance(fp, dict):
        return {k: fp.get(k) for k in FIELDS}
    gpu = env.get("device_name") if env.get("device") in ("cuda", "mps") else None
    return {"cpu_model": env.get("cpu"), "cpu_isa": None, "cpu_count": env.get("cpu_count"), "gpu_name": gpu,
            "gpu_capability": None, "driver": env.get("driver"), "torch": env.get("torch"), "cuda": env.get("cuda"),
            "threads": env.get("threads")}


def differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Fields known in both runs' fingerprints (``a``, ``b``: env.json dicts) whose values differ."""
    fa, fb = of_env(a), of_env(b)
    return {k: (fa.get(k), fb.get(k)) for k in FIELDS
            if fa.get(k) is not None and fb.get(k) is not None and fa.get(k) != fb.get(k)}


def _show(field: str, value: Any, other: Any = None) -> str:
    if value is None:
        return "not recorded"
    if field == "cpu_isa":
        if not isinstance(value, list):
            return str(value)
        if isinstance(other, list):  # name what one side has and the other lacks
            only = [f for f in value if f not in other]
            return ("has " + ", ".join(only)) if only else ("lacks " + ", ".join(f for f in other if f not in value))
        return ", ".join(value) or "none of " + ", ".join(ISA_FLAGS)
    return str(value)


def describe(diffs: dict[str, tuple[Any, Any]], names: tuple[str, str] = ("baseline", "new")) -> str:
    """One line naming every difference: ``CPU: 'AMD EPYC' (baseline) vs 'Intel Xeon' (new); ...``."""
    parts = []
    for k, (a, b) in diffs.items():
        parts.append(f"{TITLES.get(k, k)}: {_show(k, a, b)} ({names[0]}) vs {_show(k, b, a)} ({names[1]})")
    return "; ".join(parts)


def machine_id(fp: dict[str, Any]) -> str:
    """Short stable id of a fingerprint (8 hex digits) for grouping and column values."""
    blob = json.dumps({k: fp.get(k) for k in FIELDS}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:8]


def label(fp: dict[str, Any]) -> str:
    """Short human name: ``Intel(R) Xeon(R) Processor [avx512_bf16 amx_bf16] 1 thread torch 2.13.0+cpu``."""
    hw = fp.get("gpu_name") or fp.get("cpu_model") or "unknown machine"
    isa = fp.get("cpu_isa")
    bf16 = [f for f in (isa or []) if "bf16" in f or f == "arm64"]
    parts = [str(hw)]
    if fp.get("gpu_name") is None:
        parts.append(f"[{' '.join(bf16)}]" if bf16 else ("[no native bf16]" if isa is not None else "[ISA not recorded]"))
    if fp.get("threads") is not None:
        parts.append(f"{fp['threads']} thread{'s' if fp['threads'] != 1 else ''}")
    if fp.get("torch"):
        parts.append(f"torch {fp['torch']}")
    return " ".join(parts)
