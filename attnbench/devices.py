"""Devices: which exist, how to wait for them, how to read their memory, and what the machine is.

Why a module of its own: CUDA, MPS and CPU differ in exactly the places where benchmarks go wrong
(asynchronous launches, no MPS peak-memory API, TF32 defaults), so every device-specific call lives
here and is guarded by an availability check; the metrics stay device-agnostic.

Policy: attnbench never changes TF32 or cuDNN flags. It records them in ``env.json`` so a float32
number measured with TF32 on is labelled as such (timm silently turns TF32 on at import).
"""
from __future__ import annotations

import os
import platform
import socket
from datetime import datetime, timezone
from typing import Any, Callable

import torch

from . import UserError, __version__

KNOWN_DEVICES = ("cpu", "cuda", "mps")


# --------------------------------------------------------------------------------- availability
def cuda_available() -> bool:
    return torch.cuda.is_available()


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def is_available(device: str) -> bool:
    return {"cpu": lambda: True, "cuda": cuda_available, "mps": mps_available}[device]()


def unavailable_reason(device: str) -> str | None:
    """Why ``device`` cannot be used here (one line), or None when it can."""
    if device == "cpu":
        return None
    if device == "cuda" and not cuda_available():
        build = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA device is visible"
        return f"cuda is not available on this machine ({build})"
    if device == "mps" and not mps_available():
        built = getattr(torch.backends, "mps", None) and torch.backends.mps.is_built()
        return "mps is not available on this machine (" + ("no Apple GPU found" if built else "torch built without MPS") + ")"
    return None


def auto_device() -> str:
    """CUDA, then MPS, then CPU."""
    if cuda_available():
        return "cuda"
    if mps_available():
        return "mps"
    return "cpu"


def resolve_devices(requested: list[str] | str, override: str | None = None) -> list[str]:
    """The device list a run uses: ``auto`` resolved, duplicates removed.

    A device named in the suite but absent stays in the list (its rows become ``unsupported`` with
    the reason); a device forced on the command line (``override``) must exist, since the user asked
    for it explicitly: UserError otherwise.
    """
    if override is not None:
        if override not in ("auto", *KNOWN_DEVICES):
            raise UserError(f"--device {override}: unknown device; choose from auto, {', '.join(KNOWN_DEVICES)}")
        dev = auto_device() if override == "auto" else override
        reason = unavailable_reason(dev)
        if reason:
            raise UserError(f"--device {override}: {reason}; use --device cpu or --device auto")
        return [dev]
    items = requested if isinstance(requested, list) else [requested]
    out: list[str] = []
    for d in items:
        dev = auto_device() if d == "auto" else d
        if dev not in out:
            out.append(dev)
    return out


# ------------------------------------------------------------------------------ sync and memory
def synchronize(device: torch.device | str) -> None:
    """Wait until queued work on ``device`` is done (CPU work is synchronous)."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize(device)
    elif kind == "mps":
        torch.mps.synchronize()


def sync_fn(device: torch.device | str) -> Callable[[], None]:
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.cuda.synchronize
    if kind == "mps":
        return torch.mps.synchronize
    return lambda: None


def empty_cache(device: torch.device | str) -> None:
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.empty_cache()
    elif kind == "mps":
        torch.mps.empty_cache()


def device_name(device: str) -> str:
    if device == "cuda" and cuda_available():
        return torch.cuda.get_device_name(torch.cuda.current_device())
    if device == "mps" and mps_available():
        return f"Apple {platform.machine()} GPU (MPS)"
    return cpu_model()


def cpu_model() -> str:
    """CPU model name (Linux /proc/cpuinfo, else platform.processor())."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if platform.system() == "Darwin":
        try:
            import subprocess

            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------------- environment
def backend_flags() -> dict[str, Any]:
    """TF32/cuDNN/matmul-precision flags as they are now (read, never written)."""
    return {
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def capture_env(device: str, threads: int) -> dict[str, Any]:
    """The environment block of ``env.json`` (everything but the matmul peak, added by the runner)."""
    from . import fingerprint
    from .store import git_dirty, git_short_sha

    cuda = torch.version.cuda
    driver = None
    cudnn = None
    if device == "cuda" and cuda_available():
        try:
            driver = _nvidia_driver()
        except Exception:  # the driver version is best-effort metadata, never a reason to fail a run
            driver = None
    if torch.backends.cudnn.is_available():
        cudnn = torch.backends.cudnn.version()
    return {
        "attnbench_version": __version__,
        "git_commit": git_short_sha(),
        "git_dirty": git_dirty(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": cuda,
        "cudnn": cudnn,
        "driver": driver,
        "device": device,
        "device_name": device_name(device),
        "threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        **backend_flags(),
        "fingerprint": fingerprint.capture(device, threads),
    }


def _nvidia_driver() -> str | None:
    """NVIDIA driver version from nvidia-smi (None when it is not on PATH)."""
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True,
                         timeout=10)
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


# ------------------------------------------------------------------------------- matmul peak
def matmul_peak_gflops(device: str, dtype: torch.dtype, threads: int, min_run_time: float = 0.2,
                       size: int | None = None) -> float:
    """Achieved GFLOP/s of a square matrix product: the denominator of ``efficiency``.

    Measured, not looked up, so consumer GPUs, Apple silicon and CPUs are all covered. The best of
    ``torch.mm`` and ``F.linear`` (addmm) is kept: on CPUs without native bfloat16 the two take very
    different paths (plain mm is emulated and ~50x slower than fp32 here; oneDNN's linear less so).
    The matrix is 512² on CPU (4096² on accelerators) and the run short: the figure is a ceiling for
    the projections of attention, not a leaderboard entry.
    """
    import torch.nn.functional as F
    from torch.utils.benchmark import Timer

    n = size or (512 if device == "cpu" else 4096)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    bias = torch.zeros(n, device=device).to(dtype)
    sync = sync_fn(device)
    best = 0.0
    for op in (lambda: torch.mm(a, b), lambda: F.linear(a, b, bias)):

        def step(op=op) -> None:
            op()
            sync()

        timer = Timer(stmt="step()", globals={"step": step}, num_threads=threads)
        timer.timeit(2)  # warm-up: kernels loaded, caches and clocks up
        m = timer.blocked_autorange(min_run_time=min_run_time / 2)
        # A ceiling is a best case: the fastest block, not the median (which a busy machine drags down).
        best = max(best, 2 * n**3 / min(m.times) / 1e9)
    return best
