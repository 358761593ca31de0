"""The rich console every command prints through.

Why: when stdout is not a terminal (CI logs, ``| tee``) rich assumes 80 columns and squeezes the
summary table into unreadable ``gl…`` cells. Logs have no width limit, so there we print wide.
"""
from __future__ import annotations

import os

from rich.console import Console

LOG_WIDTH = 200


def make_console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, width=LOG_WIDTH)
    return console
