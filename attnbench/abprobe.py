"""Validate a suite against one side of an ``attnbench ab`` comparison, in that side's own interpreter.

Why a subprocess: the parent has already imported the working tree's ``mechanisms``; whether the
suite validates at a ref (its mechanisms exist there, take these options, fit these sizes) can only
be answered by an interpreter that imports the ref's tree. Run as
``python -m attnbench.abprobe REQUEST.json RESULT.json`` with the side's tree first on the path.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def probe(request: dict[str, Any]) -> dict[str, Any]:
    import importlib

    from . import UserError
    from .runner import plan, static_columns, worker_imports
    from .suite import load_suite

    tree = os.path.realpath(request["tree"])
    try:
        for name in request.get("imports", []):
            importlib.import_module(name)
        import mechanisms

        where = os.path.realpath(mechanisms.__file__)
        if request.get("expect_mechanisms", True) and not where.startswith(tree + os.sep):
            return {"error": f"mechanisms were imported from {where}, not from the checkout in {tree}"}
        suite = load_suite(request["suite"])
        cases = suite.expand(request["devices"])
        the_plan = plan(suite, cases, request.get("peaks", {}))
        static = {}
        for case in cases:
            try:
                static[case.key()] = static_columns(suite, case)
            except Exception as exc:  # a mechanism that cannot even report its cost: say so in the row
                static[case.key()] = {}
                the_plan.skips.setdefault(case.key(), ("error", f"{type(exc).__name__}: {exc}"))
        return {"mechanisms_file": where, "cases": [c.to_dict() for c in cases], "static": static,
                "skips": {k: list(v) for k, v in the_plan.skips.items()},
                "imports": list(worker_imports(cases, suite.metrics))}
    except UserError as exc:
        return {"error": " ".join(str(exc).split())}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    request = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    result = probe(request)
    Path(argv[1]).write_text(json.dumps(result, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
