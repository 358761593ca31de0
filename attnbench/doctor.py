"""``attnbench doctor``: prove every backend on the machine at hand, before trusting any number from it.

Why: CUDA, MPS and FlexAttention code paths exist in the mechanisms, but a path that was never run on
a device is a claim, not a fact. The doctor prints the environment that decides speed and numerics
(torch, device and capability, CPU ISA flags, TF32 flags, the measured matmul peak per dtype), then
runs every mechanism x backend x dtype x mode on the device: unavailable ones say why (the
mechanism's own ``unavailable_reason``), available ones are judged against the float64 reference
by the fidelity rule and timed once. Exit 0 when every available backend agrees, 1 otherwise.

Dependencies: torch, numpy and rich only (``python -m attnbench doctor`` on a bare GPU machine with
PYTHONPATH at the checkout). Nothing here may import pydantic, pandas, yaml, scipy, fvcore or
xformers at module level; ``tests/test_doctor.py`` runs it with those modules blocked.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from . import __version__, devices

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
DEFAULT_DTYPES = {"cpu": ["float32", "bfloat16"], "cuda": ["float32", "bfloat16", "float16"], "mps": ["float32", "float16"]}
MODES = ("forward", "train")
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd",
             "sve", "bf16")
# Built-in option sets the doctor checks besides each mechanism's defaults: the shifted Swin windows,
# and Slide without its learnable branch (the only Slide that flex expresses exactly).
VARIANTS: dict[str, list[dict[str, Any]]] = {"swin": [{"shift": None}], "slide": [{"deformable": False}]}


@dataclass
class Check:
    """One mechanism x backend x dtype x mode on the device."""

    mechanism: str
    label: str
    backend: str
    dtype: str
    mode: str
    status: str  # ok | fail | error | unavailable
    reason: str | None = None
    rel_l2: float | None = None
    max_abs: float | None = None
    tol_max_abs: float | None = None
    grad_rel_l2: float | None = None
    latency_ms: float | None = None
    compile_s: float | None = None
    flex_block_sparsity: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------- environment
def cpu_flags() -> list[str]:
    """The ISA flags of CPU_FLAGS this CPU reports (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [f for f in CPU_FLAGS if f in have]
    except OSError:
        pass
    return []


def environment(device: str, dtypes: list[str], threads: int, peak_s: float = 0.2) -> dict[str, Any]:
    """What decides speed and numerics here, including the measured matmul peak per dtype."""
    env: dict[str, Any] = {
        "attnbench": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": device,
        "device_name": devices.device_name(device),
        "cpu": devices.cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_capability": _cpu_capability(),
        "cpu_flags": cpu_flags(),
        "threads": threads,
        **devices.backend_flags(),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        env["capability"] = f"{props.major}.{props.minor}"
        env["device_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        try:
            import triton

            env["triton"] = triton.__version__
        except Exception:  # noqa: BLE001 - report, never fail, on a missing or broken triton
            env["triton"] = None
    peaks = {}
    for name in dtypes:
        try:
            peaks[name] = round(devices.matmul_peak_gflops(device, DTYPES[name], threads, min_run_time=peak_s), 1)
        except Exception as exc:  # noqa: BLE001 - a dtype the device lacks is a finding, not a crash
            peaks[name] = f"{type(exc).__name__}: {exc}"
    env["matmul_peak_gflops"] = peaks
    return env


def _cpu_capability() -> str | None:
    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - old torch
        return None


# -------------------------------------------------------------------------------------- checks
def configs(names: list[str] | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """(mechanism, label, options): every registered mechanism at its defaults plus VARIANTS."""
    import mechanisms

    out = []
    for name in mechanisms.available():
        if names and name not in names:
            continue
        out.append((name, name, {}))
        for opts in VARIANTS.get(name, []):
            out.append((name, name + "[" + ",".join(f"{k}={v}" for k, v in opts.items()) + "]", opts))
    return out


def check_one(name: str, label: str, opts: dict[str, Any], backend: str, dtype: str, mode: str, device: str,
              size: tuple[int, int], dim: int, heads: int, batch: int, time_s: float) -> Check:
    """Availability, agreement with the float64 reference, one latency; never raises."""
    import mechanisms

    from .fidelity_rule import compare

    row = Check(mechanism=name, label=label, backend=backend, dtype=dtype, mode=mode, status="ok")
    cls = mechanisms.get(name)
    tdtype = DTYPES[dtype]
    reason = cls.unavailable_reason(backend, device, tdtype, mode) if hasattr(cls, "unavailable_reason") else None
    try:
        torch.manual_seed(0)
        module = mechanisms.build(name, dim, heads, backend=backend, **opts)
        if reason is None and hasattr(module, "configured_unavailable_reason"):
            reason = module.configured_unavailable_reason()
        if reason:
            row.status, row.reason = "unavailable", reason
            return row
        module = module.to(device=device, dtype=tdtype)
        gen = torch.Generator().manual_seed(1)
        x = torch.randn(batch, size[0], size[1], dim, generator=gen).to(device=device, dtype=tdtype)
        verdict = compare(module, x, train=mode == "train")
        row.rel_l2, row.max_abs, row.tol_max_abs = verdict["fid_rel_l2"], verdict["fid_max_abs"], verdict["fid_tol_max_abs"]
        row.grad_rel_l2 = verdict.get("fid_grad_rel_l2")
        if not verdict["fid_pass"]:
            row.status = "fail"
            row.reason = verdict.get("fid_reason") or verdict.get("fid_grad_reason") or "disagrees with the reference"
        row.latency_ms = latency_ms(module, x, mode, device, time_s)
        from mechanisms.flex import flex_stats

        stats = flex_stats(module)
        row.compile_s, row.flex_block_sparsity = stats.get("compile_s"), stats.get("flex_block_sparsity")
    except NotImplementedError as exc:
        row.status, row.reason = "unavailable", _one_line(exc)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row; the exit code says it
        row.status, row.reason = "error", _one_line(exc)
    return row


def latency_ms(module: torch.nn.Module, x: torch.Tensor, mode: str, device: str, min_run_time: float) -> float:
    """Median milliseconds of one forward (inference) or forward+backward step, after a warm-up."""
    from torch.utils.benchmark import Timer

    sync = devices.sync_fn(device)
    if mode == "forward":
        module.eval()

        def step() -> None:
            with torch.no_grad():
                module(x)
    else:
        module.train()
        xg = x.detach().requires_grad_(True)

        def step() -> None:
            module(xg).sum().backward()

    step()
    sync()
    timer = Timer(stmt="step(); sync()", globals={"step": step, "sync": sync}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median * 1e3


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}"


def run_checks(device: str, dtypes: list[str], modes: list[str], names: list[str] | None = None,
               backends: list[str] | None = None, size: tuple[int, int] = (32, 24), dim: int = 32, heads: int = 2,
               batch: int = 2, time_s: float = 0.1, progress: Any = None) -> list[Check]:
    import mechanisms

    rows = []
    for name, label, opts in configs(names):
        for backend in mechanisms.get(name).backends:
            if backends and backend not in backends:
                continue
            for dtype in dtypes:
                for mode in modes:
                    if progress:
                        progress(f"{label} {backend} {dtype} {mode}")
                    rows.append(check_one(name, label, opts, backend, dtype, mode, device, size, dim, heads, batch, time_s))
    return rows


def exit_code(rows: list[Check]) -> int:
    """0 when every available backend agrees with the reference (and ran), else 1."""
    return 0 if all(r.status in ("ok", "unavailable") for r in rows) else 1


def as_json(env: dict[str, Any], rows: list[Check]) -> dict[str, Any]:
    return {"env": env, "checks": [asdict(r) for r in rows], "ok": exit_code(rows) == 0}


def summary_counts(rows: list[Check]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts


def elapsed(start: float) -> str:
    return f"{time.perf_counter() - start:.0f} s"
