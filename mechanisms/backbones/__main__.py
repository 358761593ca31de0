"""Print the papers'-table check: ``python -m mechanisms.backbones [--swaps SKELETON] [--resolution R]``.

Params of every model and its MACs at R² both ways (the analytic sum and FlopCounterMode with SDPA on
its math path), against issue 13's targets; with ``--swaps`` the same for every registered mechanism
in one skeleton.
"""
from __future__ import annotations

import argparse

from .. import registry
from ..base import AttentionBase
from . import available, get_spec
from .counting import count, meta_model


def has_deploy_form(model) -> bool:
    """Whether any of the model's mechanisms serves a different module for inference."""
    return any(type(a).deploy is not AttentionBase.deploy for a in model.attention_modules() if isinstance(a, AttentionBase))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mechanisms.backbones", description=__doc__.splitlines()[0])
    parser.add_argument("--swaps", metavar="SKELETON", help="also list every mechanism swapped into this skeleton")
    parser.add_argument("--resolution", type=int, default=224)
    args = parser.parse_args(argv)
    R = args.resolution

    print("| model | params | target | diff | MACs analytic | MACs counted | target | diff |")
    print("|---|---|---|---|---|---|---|---|")
    for name in available():
        target = get_spec(name).target
        model = meta_model(name)
        forms = [("", model, "macs")]
        if "macs_deploy" in target:
            if has_deploy_form(model):
                forms.append((" (deploy)", meta_model(name, deploy=True), "macs_deploy"))
            else:
                forms.append((" (deploy)", None, "macs_deploy"))
        for suffix, model, key in forms:
            if model is None:
                print(f"| {name}{suffix} | not counted: none of its mechanisms overrides deploy() yet | | | | | "
                      f"{target[key] / 1e9:.2f}G | |")
                continue
            c = count(model, R, R)
            p_diff = c.params / target["params"] - 1
            m_diff = c.macs_analytic / target[key] - 1 if R == 224 else float("nan")
            print(
                f"| {name}{suffix} | {c.params / 1e6:.3f}M | {target['params'] / 1e6:.2f}M | {p_diff:+.2%} | "
                f"{c.macs_analytic / 1e9:.3f}G | {c.macs_counted / 1e9:.3f}G | {target[key] / 1e9:.2f}G | {m_diff:+.2%} |"
            )
    if args.swaps:
        print(f"\n{args.swaps} skeleton, every block swapped, {R}x{R}:\n")
        print("| attention | params | MACs analytic | MACs counted |")
        print("|---|---|---|---|")
        for mech in registry.available():
            c = count(meta_model(args.swaps, attention=mech), R, R)
            print(f"| {mech} | {c.params / 1e6:.3f}M | {c.macs_analytic / 1e9:.3f}G | {c.macs_counted / 1e9:.3f}G |")


if __name__ == "__main__":
    main()
