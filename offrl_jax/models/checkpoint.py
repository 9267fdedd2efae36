"""Save and restore a trained ensemble (:mod:`offrl_jax.pytrees`): arrays, and the config and
dims in the header.

Restoring needs no template, so a state from :func:`train_ensembles` (a leading seeds axis on
every leaf) round-trips as well as a single ensemble.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax

from offrl_jax import pytrees
from offrl_jax.models.ensemble import EnsembleConfig, EnsembleState

FORMAT_VERSION = 1
_ARRAY_FIELDS = tuple(
    f.name for f in dataclasses.fields(EnsembleState)
    if f.name not in ("config", "obs_dim", "act_dim"))


def save_model(path: str | os.PathLike, state: EnsembleState) -> Path:
    """Write ``state`` to the directory ``path`` (replaced if it exists); returns the path."""
    arrays = {name: getattr(state, name) for name in _ARRAY_FIELDS}
    meta = {"format_version": FORMAT_VERSION, "obs_dim": state.obs_dim,
            "act_dim": state.act_dim, "config": dataclasses.asdict(state.config)}
    return pytrees.save(path, arrays, meta)


def restore_model(path: str | os.PathLike) -> EnsembleState:
    """The :class:`EnsembleState` saved at ``path``, config included."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"no model checkpoint directory at {str(path)!r}")
    arrays, meta = pytrees.load(path)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"model checkpoint {str(path)!r} has format_version "
                         f"{meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    config_fields = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in meta["config"].items()
    }
    arrays = jax.tree_util.tree_map(jax.numpy.asarray, dict(arrays))
    return EnsembleState(**arrays, config=EnsembleConfig(**config_fields),
                         obs_dim=int(meta["obs_dim"]), act_dim=int(meta["act_dim"]))
