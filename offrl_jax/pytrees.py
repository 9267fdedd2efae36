"""The one way this suite saves a pytree: an orbax checkpoint directory with the tree's arrays and
a JSON header.

The store of fitted dynamics models, saved models (``offrl models fit``) and behaviour runs use
:func:`save` and :func:`load`; training checkpoints, which need step bookkeeping and retention,
use orbax's ``CheckpointManager`` with the same two items per step (see
:mod:`offrl_jax.training.loop`). (The shipped behaviour policies are the
one exception, on purpose: each is a single small ``.npz`` under git, see
:mod:`offrl_jax.policies`, since an orbax directory of several files per policy is
unwieldy to review and version.)

A saved tree is a directory holding ``arrays`` (the leaves, with their tree paths) and ``meta``
(a JSON object: whatever the caller records, e.g. a format version, a key, a sha256). Orbax
writes into a temporary directory and renames it only when complete, so a killed save never
leaves a half-written tree under ``path``. Reading without a template returns nested dicts of
numpy arrays; with one (shapes and dtypes, e.g. from ``jax.eval_shape``), the template's
structure. A directory that cannot be read back is a :class:`PytreeFileError` naming it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class PytreeFileError(ValueError):
    """A saved tree that is missing or cannot be read back."""


def _checkpointer() -> ocp.Checkpointer:
    return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def save(path: str | os.PathLike, tree, meta: dict | None = None) -> Path:
    """Write ``tree`` (its leaves as host arrays) and ``meta`` to the directory ``path``,
    replacing it if it exists; returns the absolute path."""
    path = Path(path).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = jax.tree_util.tree_map(np.asarray, jax.device_get(tree))
    _checkpointer().save(path, args=ocp.args.Composite(arrays=ocp.args.StandardSave(arrays),
                                                       meta=ocp.args.JsonSave(meta or {})),
                         force=True)
    return path


def load(path: str | os.PathLike, template=None) -> tuple[Any, dict]:
    """``(tree, meta)`` saved at ``path``; ``template``: the tree's structure, shapes and dtypes
    (None: nested dicts of numpy arrays)."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise PytreeFileError(f"{path}: expected a saved tree (a directory with 'arrays' and "
                              f"'meta'), found {'a file' if path.exists() else 'nothing'}")
    if template is None:
        arrays = ocp.args.StandardRestore()
    else:
        arrays = ocp.args.StandardRestore(
            jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, template))
    try:
        restored = _checkpointer().restore(
            path, args=ocp.args.Composite(arrays=arrays, meta=ocp.args.JsonRestore()))
    except Exception as error:  # orbax raises many kinds (missing items, bad bytes, shapes)
        raise PytreeFileError(f"{path}: expected a saved tree (a directory with 'arrays' and "
                              f"'meta'), found an unreadable one ({type(error).__name__}: "
                              f"{str(error)[:300]})") from error
    return restored["arrays"], dict(restored["meta"] or {})


def load_meta(path: str | os.PathLike) -> dict:
    """The header saved at ``path`` alone (the arrays are not read)."""
    path = Path(path).expanduser().resolve()
    try:
        restored = _checkpointer().restore(path,
                                           args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    except Exception as error:
        raise PytreeFileError(f"{path}: expected a saved tree with a 'meta' header, found an "
                              f"unreadable one ({type(error).__name__}: {str(error)[:300]})"
                              ) from error
    return dict(restored["meta"] or {})


def leaves_sha256(tree) -> str:
    """sha256 over the bytes of every leaf, in flattening order (a saved tree's checksum)."""
    digest = hashlib.sha256()
    for leaf in jax.tree_util.tree_leaves(tree):
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return digest.hexdigest()
