"""The ``offrl`` command line. Each stage's module adds its own sub-commands."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that define ``register(subparsers)``; each adds sub-commands with ``func`` set.
_COMMAND_MODULES = (
    "offrl_jax.tasks.cli",
    "offrl_jax.generation.cli",
    "offrl_jax.training.cli",
    "offrl_jax.models.cli",
    "offrl_jax.results.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="offrl", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
