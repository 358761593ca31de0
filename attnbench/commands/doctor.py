"""``attnbench doctor``: the environment, then every mechanism x backend x dtype proven on one device.

The first thing to run on new hardware (docs/backends.md). Needs only torch, numpy and rich.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

from .. import UserError

DEVICES = ("auto", "cpu", "cuda", "mps")


def setup_arguments(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="prove every backend on this machine (environment, availability, agreement, latency)",
        description="Print the environment (torch, device and capability, CPU ISA flags, TF32 flags, matmul peak "
        "per dtype), then check every mechanism x backend x dtype x mode on the device: available or not (why), "
        "agreement with the float64 reference (the fidelity rule) and one quick latency. Exit 0 when every "
        "available backend agrees, 1 otherwise.",
    )
    parser.add_argument("--device", default="auto", choices=DEVICES, help="device to prove (default: auto)")
    parser.add_argument("--dtype", nargs="+", choices=("float32", "bfloat16", "float16", "float64"), default=None,
                        help="dtypes to check (default: cpu float32 bfloat16; cuda adds float16; mps float32 float16)")
    parser.add_argument("--mode", nargs="+", choices=("forward", "train"), default=["forward", "train"],
                        help="forward (inference) and/or train (forward + backward; gradients checked too)")
    parser.add_argument("--mechanism", nargs="+", default=None, help="only these mechanisms (default: all)")
    parser.add_argument("--backend", nargs="+", default=None, help="only these backends (default: all each offers)")
    parser.add_argument("--size", default="32x24", help="map size HxW of the checks (default 32x24: non-square, "
                        "not a multiple of 7, so padding paths run)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's current count)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    parser.set_defaults(func=run_from_args)


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--size {text!r}: expected HxW, e.g. --size 32x24") from None
    if h < 1 or w < 1:
        raise UserError(f"--size {text!r}: both sides must be >= 1")
    return h, w


def run_from_args(args: argparse.Namespace) -> int:
    return doctor(args.device, args.dtype, args.mode, args.mechanism, args.backend, _size(args.size), args.threads,
                  args.json)


def doctor(device: str = "auto", dtypes: list[str] | None = None, modes: list[str] | None = None,
           names: list[str] | None = None, backends: list[str] | None = None, size: tuple[int, int] = (32, 24),
           threads: int | None = None, as_json: bool = False) -> int:
    import torch

    import mechanisms

    from .. import devices
    from .. import doctor as doc

    dev = devices.auto_device() if device == "auto" else device
    reason = devices.unavailable_reason(dev)
    if reason:
        raise UserError(f"--device {device}: {reason}; use --device cpu or --device auto")
    for name in names or []:
        mechanisms.get(name)  # ValueError with the valid names
    if threads:
        torch.set_num_threads(threads)  # once, before anything compiles (dynamo guards on it)
    dtypes = dtypes or doc.DEFAULT_DTYPES[dev]
    modes = modes or list(doc.MODES)
    start = time.perf_counter()
    env = doc.environment(dev, dtypes, torch.get_num_threads())
    console = None
    if not as_json:
        from ..console import make_console

        console = make_console()
        _print_env(console, env)
    status = console.status("checking") if console else None
    if status:
        status.start()
    try:
        rows = doc.run_checks(dev, dtypes, modes, names, backends, size,
                              progress=(lambda text: status.update(f"checking {text}")) if status else None)
    finally:
        if status:
            status.stop()
    code = doc.exit_code(rows)
    if as_json:
        print(json.dumps(doc.as_json(env, rows), indent=2, default=str))
        return code
    _print_rows(console, rows, size)
    counts = doc.summary_counts(rows)
    verdict = "[green]every available backend agrees with the reference[/green]" if code == 0 else \
        "[red]some available backend disagrees or failed (see fail/error rows)[/red]"
    console.print(f"{verdict}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) +
                  f" in {doc.elapsed(start)}; exit {code}")
    return code


def _print_env(console: Any, env: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="attnbench doctor: environment", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in env.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = " ".join(value) or "-"
        table.add_row(key, escape(str(value)))
    console.print(table)


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _print_rows(console: Any, rows: list[Any], size: tuple[int, int]) -> None:
    from rich.markup import escape
    from rich.table import Table

    colour = {"ok": "green", "unavailable": "dim", "fail": "red", "error": "red"}
    table = Table(title=f"backends on this device ({size[0]}x{size[1]}, vs the float64 reference)")
    for col in ("mechanism", "backend", "dtype", "mode", "status", "rel_l2", "grad rel_l2", "latency ms", "compile s",
                "block sparsity", "reason"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(escape(r.label), r.backend, r.dtype, r.mode, f"[{colour[r.status]}]{r.status}[/]", _fmt(r.rel_l2, ".1e"),
                      _fmt(r.grad_rel_l2, ".1e"), _fmt(r.latency_ms, ".3g"), _fmt(r.compile_s, ".1f"),
                      _fmt(r.flex_block_sparsity, ".3f"), escape(r.reason or ""))
    console.print(table)
