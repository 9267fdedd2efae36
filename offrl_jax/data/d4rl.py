"""Read and write D4RL-layout HDF5 files.

Layout (``docs/algorithms.md#d4rl-conventions``): top-level arrays ``observations (N, obs)``,
``actions (N, act)``, ``rewards (N,)`` or ``(N, 1)``, ``next_observations (N, obs)``,
``terminals (N,)``, ``timeouts (N,)``; optional groups ``infos/`` (per-row arrays such as
``qpos``, ``qvel``, ``action_log_probs``) and ``metadata/``. Files written here also carry a
top-level ``episode_ids (N,)`` (other D4RL loaders ignore unknown keys); it is read back when
present.

How the reader fills gaps (never by guessing a wrong value):

- ``next_observations`` present: used as is, every row kept. Episodes end at terminal or timeout
  rows and wherever ``next_observations[i] != observations[i + 1]`` (unflagged ends, as in
  D4RL medium-replay).
- ``next_observations`` absent: a row whose episode continues takes ``observations[i + 1]``.
  A terminal row takes ``observations[i]`` as a placeholder: it is finite and the Bellman
  backup masks it with ``1 - terminal``. A row that ends its episode without being terminal
  (a timeout, or the last row of the file) has no next state in the file, so it is dropped;
  that episode's return then lacks its last reward.
- ``timeouts`` absent: read as all zeros, so only terminals (and, with ``next_observations``,
  discontinuities) end episodes.
- ``infos/`` is not part of the ``Dataset``; read it with :func:`read_d4rl_infos`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from offrl_jax.data._io import atomic_output, open_hdf5, read_array
from offrl_jax.data.dataset import Dataset
from offrl_jax.data.validate import FLOAT_KEYS, DatasetError, error, validate_arrays

_JSON_ATTR = "offrl_json"
# gzip as D4RL does; Fletcher-32 checksums so a damaged chunk fails to read instead of
# decompressing into wrong numbers.
_ARRAY_OPTIONS = dict(compression="gzip", fletcher32=True)


def read_d4rl_hdf5(path: str | os.PathLike, env: str | None = None) -> Dataset:
    """Load a D4RL-layout file as a validated :class:`Dataset` (see the module docstring).

    ``env`` (e.g. ``"hopper"``) checks obs/act dims against that environment. Raises
    FileNotFoundError for a missing file and :class:`DatasetError` for anything unusable.
    """
    path = Path(path)
    source = str(path)
    with open_hdf5(path) as handle:
        raw = {key: read_array(handle, key, source) for key in (*FLOAT_KEYS, "episode_ids")}

    if raw["timeouts"] is None and raw["terminals"] is not None:
        raw["timeouts"] = np.zeros(np.shape(raw["terminals"])[:1], dtype=np.float32)
    if raw["next_observations"] is not None:
        return Dataset.from_arrays(**raw, env=env, source=source)

    # Validate with a provisional next state obs[i + 1] (continuous, so episode ids come from
    # the flags alone), then fix the rows whose episode does not continue.
    observations = raw["observations"]
    if isinstance(observations, np.ndarray) and observations.ndim >= 1 and len(observations):
        raw["next_observations"] = np.concatenate([observations[1:], observations[-1:]])
    else:
        raw["next_observations"] = observations  # let validation report what is wrong with it
    checked = validate_arrays(raw, source=source, env=env)

    ids = checked["episode_ids"]
    continues = np.r_[ids[1:] == ids[:-1], False]
    terminal = checked["terminals"] > 0.5
    next_observations = checked["next_observations"]
    next_observations[terminal] = checked["observations"][terminal]
    keep = continues | terminal
    if not keep.any():
        raise error(source, "next_observations",
                    "a next state in the file for at least one row (the key is absent, so it "
                    "is rebuilt from the following row of the same episode)",
                    f"none among {keep.size} rows (every row ends a non-terminal episode)")
    return Dataset.from_arrays(**{key: value[keep] for key, value in checked.items()},
                               env=env, source=source)


def read_d4rl_metadata(path: str | os.PathLike) -> dict:
    """The ``metadata/`` group as a nested dict (empty when absent).

    Strings come back as ``str``, scalars as Python numbers, arrays as numpy, sub-groups as
    dicts, and values the writer stored as JSON (dicts, lists, None) decoded.
    """
    path = Path(path)
    with open_hdf5(path) as handle:
        if "metadata" not in handle:
            return {}
        group = handle["metadata"]
        if not isinstance(group, h5py.Group):
            raise DatasetError(f"{path}: key 'metadata': expected an HDF5 group, found an array")
        return _read_group(group)


def read_d4rl_infos(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Per-row arrays under ``infos/`` (e.g. ``qpos``, ``qvel``), keyed by their path inside it.

    Rows correspond to the file's rows (before any row the reader drops).
    """
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    with open_hdf5(path) as handle:
        if "infos" in handle and isinstance(handle["infos"], h5py.Group):
            def collect(name, item):
                if isinstance(item, h5py.Dataset):
                    out[name] = item[()]
            handle["infos"].visititems(collect)
    return out


def write_d4rl_hdf5(path: str | os.PathLike, dataset_or_arrays: Dataset | Mapping,
                    metadata: Mapping | None = None, infos: Mapping | None = None) -> Path:
    """Write a dataset in the D4RL layout, gzip-compressed, atomically; returns the path.

    ``dataset_or_arrays`` is a :class:`Dataset` or a mapping with the six keys
    ``observations, actions, rewards, next_observations, terminals, timeouts`` (and optionally
    ``episode_ids``); it is validated first. ``metadata`` values may be str, numbers, bools,
    numeric numpy arrays, or anything JSON-serialisable (dicts, lists, None), which is stored as
    a JSON string and decoded by :func:`read_d4rl_metadata`. ``infos`` maps names to per-row
    arrays (N leading rows). Arrays are gzip-compressed with Fletcher-32 checksums. The file is
    written to a temporary name in the same directory and renamed onto ``path`` only when
    complete; on any error the temporary file is removed.
    """
    path = Path(path)
    source = str(path)
    if isinstance(dataset_or_arrays, Dataset):
        arrays = dataset_or_arrays.to_numpy()
    else:
        arrays = dict(dataset_or_arrays)
        unknown = sorted(set(arrays) - {*FLOAT_KEYS, "episode_ids"})
        if unknown:  # refuse rather than silently drop data the caller meant to save
            raise error(source, unknown[0], f"one of {(*FLOAT_KEYS, 'episode_ids')} "
                        "(pass other per-row arrays as infos=)", "an unknown key")
    checked = validate_arrays(arrays, source=source)
    n = checked["rewards"].shape[0]
    metadata_items = _prepare_metadata(metadata or {}, source)
    info_items = {}
    for name, value in (infos or {}).items():
        value = np.asarray(value)
        if value.ndim == 0 or value.shape[0] != n:
            raise error(source, f"infos/{name}", f"{n} rows (one per transition)",
                        f"shape {value.shape}")
        info_items[name] = value

    with atomic_output(path) as tmp, h5py.File(tmp, "w") as handle:
        for key in ("observations", "actions", "next_observations", "rewards"):
            handle.create_dataset(key, data=checked[key], **_ARRAY_OPTIONS)
        for key in ("terminals", "timeouts"):
            handle.create_dataset(key, data=checked[key] > 0.5, **_ARRAY_OPTIONS)
        handle.create_dataset("episode_ids", data=checked["episode_ids"], **_ARRAY_OPTIONS)
        infos_group = handle.create_group("infos")
        for name, value in info_items.items():
            infos_group.create_dataset(name, data=value, **_ARRAY_OPTIONS)
        metadata_group = handle.create_group("metadata")
        for key, (value, is_json) in metadata_items.items():
            item = metadata_group.create_dataset(key, data=value)
            if is_json:
                item.attrs[_JSON_ATTR] = True
    return path


def _prepare_metadata(metadata: Mapping, source: str) -> dict[str, tuple[object, bool]]:
    """Check and encode metadata before the file is created: ``{key: (value, is_json)}``."""
    prepared = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise error(source, f"metadata/{key}", "a non-empty string key without '/'",
                        repr(key))
        if isinstance(value, str | bool | int | float | np.generic) and \
                np.asarray(value).dtype.kind in "biufU":
            prepared[key] = (value, False)
        elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            prepared[key] = (value, False)
        else:
            try:
                prepared[key] = (json.dumps(value), True)
            except (TypeError, ValueError) as err:
                raise error(source, f"metadata/{key}",
                            "a string, number, numeric array or JSON-serialisable value",
                            f"{type(value).__name__} ({err})") from err
    return prepared


def _read_group(group: h5py.Group) -> dict:
    out = {}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out[key] = _read_group(item)
            continue
        value = item[()]
        if isinstance(value, bytes):
            value = value.decode("utf-8")
        if item.attrs.get(_JSON_ATTR, False):
            value = json.loads(value)
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out
