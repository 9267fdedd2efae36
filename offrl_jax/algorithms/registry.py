"""Algorithms as data: the runner looks them up by name and never branches on it.

Each algorithm module defines ``ALGORITHM``, a :class:`~offrl_jax.algorithms.base.Registration`
bundling its name, config class, ``make(config, spec)`` and per-dataset settings (a table keyed
by task name whose entries address settings by path, e.g. ``{"rollouts.horizon": 5}``; their
sources are in ``docs/algorithms.md``). Listing a module here registers it.
"""

from __future__ import annotations

import importlib

from offrl_jax.algorithms.base import Algorithm, Registration

_MODULES = ("armor", "atac", "bc", "bc10", "combo", "cql", "edac", "iql", "mobile", "mopo",
            "morel", "rambo", "rebrac", "sacn", "td3bc")

ALGORITHMS: dict[str, Registration] = {}
for _name in _MODULES:
    _algorithm = importlib.import_module(f"offrl_jax.algorithms.{_name}").ALGORITHM
    ALGORITHMS[_algorithm.name] = _algorithm


def get_algorithm(name: str) -> Registration:
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise KeyError(f"unknown algorithm {name!r}; valid algorithms: "
                       f"{', '.join(sorted(ALGORITHMS))}") from None


__all__ = ["ALGORITHMS", "Algorithm", "Registration", "get_algorithm"]
