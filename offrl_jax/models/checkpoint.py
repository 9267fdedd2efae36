"""Save and restore a trained ensemble with orbax: arrays in one item, config and dims as JSON.

Restoring needs no template, so a state from :func:`train_ensembles` (a leading seeds axis on
every leaf) round-trips as well as a single ensemble.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from offrl_jax.models.ensemble import EnsembleConfig, EnsembleState

FORMAT_VERSION = 1
_ARRAY_FIELDS = tuple(
    f.name for f in dataclasses.fields(EnsembleState)
    if f.name not in ("config", "obs_dim", "act_dim"))


def _checkpointer() -> ocp.Checkpointer:
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def save_model(path: str | os.PathLike, state: EnsembleState) -> Path:
    """Write ``state`` to the directory ``path`` (replaced if it exists); returns the path."""
    path = Path(path).expanduser().resolve()
    arrays = {name: getattr(state, name) for name in _ARRAY_FIELDS}
    arrays = jax.tree_util.tree_map(np.asarray, arrays)
    meta = {"format_version": FORMAT_VERSION, "obs_dim": state.obs_dim,
            "act_dim": state.act_dim, "config": dataclasses.asdict(state.config)}
    _checkpointer().save(
        path,
        args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays),
                                meta=ocp.args.JsonSave(meta)),
        force=True,
    )
    return path


def restore_model(path: str | os.PathLike) -> EnsembleState:
    """The :class:`EnsembleState` saved at ``path``, config included."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"no model checkpoint directory at {str(path)!r}")
    restored = _checkpointer().restore(
        path, args=ocp.args.Composite(arrays=ocp.args.StandardRestore(),
                                      meta=ocp.args.JsonRestore()))
    meta = restored["meta"]
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"model checkpoint {str(path)!r} has format_version "
                         f"{meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    config_fields = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in meta["config"].items()
    }
    arrays = jax.tree_util.tree_map(jax.numpy.asarray, dict(restored["arrays"]))
    return EnsembleState(**arrays, config=EnsembleConfig(**config_fields),
                         obs_dim=int(meta["obs_dim"]), act_dim=int(meta["act_dim"]))
