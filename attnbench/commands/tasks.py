"""``attnbench tasks``: list the accuracy tasks, or save sample images of each for a person to look at.

    attnbench tasks list
    attnbench tasks preview [--out DIR] [--sizes 32 64] [--task pairmatch ...]

Why a preview: a generated task is only as good as its pictures. One PNG per task and size shows a
grid of samples with their labels, so anyone can check that the markers, paths and digits look like
what the README says before trusting an accuracy number.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from .. import UserError


def setup_arguments(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("tasks", help="list the accuracy tasks or save preview images of them",
                                   description="List the offline accuracy tasks, or save a PNG grid of samples of each "
                                   "task at two image sizes.")
    parser.add_argument("action", choices=("list", "preview"), help="list the tasks, or write preview PNGs")
    parser.add_argument("--out", type=Path, default=Path("task-previews"), help="folder for the PNGs (default: task-previews)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="image sides in pixels (default: 32 64)")
    parser.add_argument("--task", dest="names", action="append", help="only this task (repeatable; default: all)")
    parser.add_argument("-n", type=int, default=8, help="samples per image (default: 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(func=run_from_args)


def run_from_args(args: argparse.Namespace) -> int:
    from ..accuracy import tasks

    if args.action == "list":
        for name in tasks.available():
            info = tasks.info(name)
            print(f"{name:15s} {info.num_classes:2d} classes, {info.channels} channel(s)  {info.summary}")
        return 0
    for path in preview(args.out, sizes=args.sizes, names=args.names, n=args.n, seed=args.seed):
        print(path)
    return 0


def preview(out: Path | str, sizes: Sequence[int] = (32, 64), names: Sequence[str] | None = None, n: int = 8,
            seed: int = 0) -> list[Path]:
    """Write ``<task>-<size>.png`` (a row of ``n`` labelled samples) for every task and size; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ..accuracy import tasks

    names = list(names or tasks.available())
    for name in names:
        try:
            info = tasks.info(name)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    if n < 1 or n % 2:
        raise UserError(f"-n must be a positive even number so both labels appear equally, got {n}")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from ..faults import is_write_fault, write_failure

        if is_write_fault(exc):
            raise write_failure(exc, out, action="create the --out folder") from None
        raise
    paths = []
    for name in names:
        info = tasks.info(name)
        for size in sizes:
            try:
                data = tasks.samples(name, size, n if info.num_classes == 2 else max(n, 1), seed=seed)
            except ValueError as exc:
                raise UserError(f"task {name} at {size} px: {exc}") from None
            fig, axes = plt.subplots(1, n, figsize=(1.6 * n, 1.9), squeeze=False)
            for ax, img, y in zip(axes[0], data.images, data.labels):
                pic = img.transpose(1, 2, 0)
                pic = np.clip((pic + 1) / 2 if info.channels == 1 else pic, 0, 1)
                ax.imshow(pic[..., 0] if info.channels == 1 else pic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.set_title(f"label {y}", fontsize=8)
                ax.axis("off")
            fig.suptitle(f"{name} at {size}x{size} px (seed {seed})", fontsize=9)
            fig.tight_layout()
            path = out / f"{name}-{size}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            paths.append(path)
    return paths
