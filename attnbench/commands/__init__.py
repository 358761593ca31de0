"""Subcommands, one module each; ``attnbench.cli.COMMANDS`` lists them.

Each module exposes ``setup_arguments(subparsers)`` (which must call ``parser.set_defaults(func=run_from_args)``)
and ``run_from_args(args) -> int``, plus a plain keyword function that tests call directly.
"""
