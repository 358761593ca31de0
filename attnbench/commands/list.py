"""``attnbench list``: the mechanisms (options, defaults, backends) and metrics this install knows.

Read from the registry and the metric modules themselves, so the listing cannot drift from the code.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from ..console import make_console
from rich.table import Table


def setup_arguments(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "list",
        help="list mechanisms (options, defaults, backends) and metrics",
        description="List every registered attention mechanism with its options, defaults and backends, "
        "and every metric with its suite options.",
    )
    parser.add_argument("what", nargs="?", choices=("all", "mechanisms", "metrics"), default="all",
                        help="what to list (default: all)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    parser.set_defaults(func=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    return list_things(args.what, as_json=args.json)


def mechanism_info() -> list[dict[str, Any]]:
    import mechanisms

    return [mechanisms.describe(name) for name in mechanisms.available()]


def metric_info() -> list[dict[str, Any]]:
    """Name, options key, defaults, exclusivity and columns of every metric, from its declaration."""
    from .. import metrics as metric_registry

    out = []
    for name in metric_registry.names():
        try:
            m = metric_registry.get(name)
        except ImportError as exc:
            out.append({"name": name, "available": False, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        defaults = m.make_options().model_dump(mode="json") if m.options is not None else {}
        out.append({"name": name, "available": True, "options_key": m.options_key, "defaults": defaults,
                    "exclusive": m.exclusive, "summary": m.doc, "columns": [c.name for c in m.columns]})
    return out


def _fmt(value: Any) -> str:
    return json.dumps(value, default=str) if not isinstance(value, str) else repr(value)


def list_things(what: str = "all", as_json: bool = False, console: Console | None = None) -> int:
    console = console or make_console()
    data: dict[str, Any] = {}
    if what in ("all", "mechanisms"):
        data["mechanisms"] = mechanism_info()
    if what in ("all", "metrics"):
        data["metrics"] = metric_info()
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return 0
    if "mechanisms" in data:
        table = Table(title="Mechanisms", show_lines=True)
        for col in ("name", "backends", "options (default)", "summary"):
            table.add_column(col, overflow="fold")
        for m in data["mechanisms"]:
            opts = "\n".join(f"{k} = {_fmt(v['default'])}" + (f"  [dim]{v['doc']}[/dim]" if v["doc"] else "")
                             for k, v in m["options"].items())
            table.add_row(m["name"], ", ".join(m["backends"]), opts, m["summary"])
        console.print(table)
    if "metrics" in data:
        table = Table(title="Metrics (suite key `metrics:`; options under the options key)", show_lines=True)
        for col in ("name", "options key", "defaults", "exclusive", "summary"):
            table.add_column(col, overflow="fold")
        for m in data["metrics"]:
            if not m["available"]:
                table.add_row(m["name"], "", "", "", f"[red]not importable: {m['reason']}[/red]")
                continue
            table.add_row(m["name"], m["options_key"] or "", _fmt(m["defaults"]) if m["defaults"] else "",
                          "yes" if m["exclusive"] else "no", m["summary"])
        console.print(table)
    return 0
