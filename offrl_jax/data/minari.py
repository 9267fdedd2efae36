"""Read (and, for tests and conversions, write) Minari HDF5 datasets without the minari package;
read a Minari dataset named by its id through the package (:func:`read_minari_id`).

Layout (Minari 0.5, ``docs/algorithms.md#d4rl-conventions``): ``<dataset>/data/metadata.json`` and
``<dataset>/data/main_data.hdf5``; the HDF5 file has one group ``episode_<i>`` per episode with
``observations (T + 1, obs)``, ``actions (T, act)``, ``rewards (T,)``, ``terminations (T,)``,
``truncations (T,)`` (and ``infos``, ignored). Episode i becomes T rows with
``observations[:-1]``, ``next_observations = observations[1:]``, ``terminals`` from
terminations, ``timeouts`` from truncations and ``episode_ids = i``; no row is dropped because
Minari stores every episode's final observation.

``metadata.json`` must exist and its ``total_steps`` / ``total_episodes`` must match the file;
``data_format``, when given, must be ``"hdf5"`` (Minari's arrow format is not read here; through
the package, :func:`read_minari_id` reads whatever format the package reads).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np

from offrl_jax.data._io import atomic_output, open_hdf5, read_array
from offrl_jax.data.dataset import Dataset, episodes_to_arrays
from offrl_jax.data.validate import DatasetError, error
from offrl_jax.tasks import get_env_spec

METADATA_FILE = "metadata.json"
DATA_FILE = "main_data.hdf5"
EPISODE_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")
_EPISODE_NAME = re.compile(r"episode_(\d+)")


def minari_data_dir(path: str | os.PathLike) -> Path:
    """The folder holding ``metadata.json`` and ``main_data.hdf5`` for a dataset or data dir."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such Minari dataset directory")
    if path.is_file():
        return path.parent  # main_data.hdf5 or metadata.json itself
    if (path / "data").is_dir():
        return path / "data"
    return path


def read_minari_metadata(path: str | os.PathLike) -> dict:
    """The parsed ``metadata.json`` of a Minari dataset (directory or its ``data/`` folder)."""
    metadata_path = minari_data_dir(path) / METADATA_FILE
    if not metadata_path.is_file():
        raise error(str(metadata_path), METADATA_FILE, "a Minari metadata file",
                    "no such file")
    try:
        metadata = json.loads(metadata_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(str(metadata_path), METADATA_FILE, "a readable JSON object",
                    f"unreadable content ({err})") from err
    if not isinstance(metadata, dict):
        raise error(str(metadata_path), METADATA_FILE, "a JSON object",
                    type(metadata).__name__)
    return metadata


def read_minari(path: str | os.PathLike, env: str | None = None) -> Dataset:
    """Load a Minari HDF5 dataset as a validated :class:`Dataset` (see the module docstring).

    ``path`` is the dataset directory or its ``data/`` folder. Raises FileNotFoundError when
    ``path`` does not exist and :class:`DatasetError` for anything unusable.
    """
    data_dir = minari_data_dir(path)
    metadata_path = data_dir / METADATA_FILE
    metadata = read_minari_metadata(data_dir)
    data_format = metadata.get("data_format", "hdf5")
    if data_format != "hdf5":
        raise error(str(metadata_path), "data_format", "'hdf5'", repr(data_format))
    main_path = data_dir / DATA_FILE
    source = str(main_path)
    if not main_path.is_file():
        raise error(source, DATA_FILE, "the Minari episode file", "no such file")

    episodes = []
    with open_hdf5(main_path) as handle:
        names = sorted((int(m.group(1)), name) for name in handle
                       if (m := _EPISODE_NAME.fullmatch(name)))
        for index, name in names:
            episodes.append((index, _read_episode(handle[name], name, source)))

    for key, found in (("total_episodes", len(episodes)),
                       ("total_steps", sum(len(ep["actions"]) for _, ep in episodes))):
        if key not in metadata:
            raise error(str(metadata_path), key, f"a count to check against {source}",
                        "no such key")
        if metadata[key] != found:
            raise error(str(metadata_path), key, f"{found} (counted in {source})",
                        repr(metadata[key]))
    if not episodes:
        raise error(source, "episode_0", "at least one episode group 'episode_<i>'",
                    "none")

    _check_widths(episodes, env, source)
    arrays = episodes_to_arrays(episode for _, episode in episodes)
    # Keep the file's episode numbers, so errors and ids match the group names.
    arrays["episode_ids"] = np.concatenate([np.full(len(episode["actions"]), index, np.int64)
                                            for index, episode in episodes])
    return Dataset.from_arrays(**arrays, env=env, source=source)


def _check_widths(episodes, env: str | None, source: str) -> None:
    """All episodes must have the same obs/act widths (those of ``env`` when given)."""
    spec = get_env_spec(env) if env is not None else None
    for key, attr in (("observations", "obs_dim"), ("actions", "act_dim")):
        first_index, first = episodes[0]
        if spec is not None:
            want, like = getattr(spec, attr), f"for env '{env}'"
        else:
            want, like = np.shape(first[key])[1:2], f"like episode_{first_index}"
            want = want[0] if want else None
        for index, episode in episodes:
            shape = np.shape(episode[key])
            if len(shape) != 2 or shape[1] != want:
                raise error(source, f"episode_{index}/{key}",
                            f"shape (rows, {attr}) with {attr} {want} {like}",
                            f"shape {shape}")


def _read_episode(group, name: str, source: str) -> dict[str, np.ndarray]:
    if not isinstance(group, h5py.Group):
        raise error(source, name, "an episode group", "an array")
    episode = {}
    for key in EPISODE_KEYS:
        if key not in group:
            raise error(source, f"{name}/{key}", "an array",
                        f"no such key (keys present: {', '.join(sorted(group)) or 'none'})")
        if key == "observations" and isinstance(group[key], h5py.Group):
            raise error(source, f"{name}/{key}", "one array (a Box observation space)",
                        "a group (a Dict/Tuple observation space, not supported)")
        episode[key] = read_array(group, key, source)
    _check_episode(episode, name, source)
    steps = len(episode["actions"])
    recorded = group.attrs.get("total_steps")
    if recorded is not None and int(recorded) != steps:
        raise error(source, f"{name}.attrs['total_steps']", f"{steps} (the episode's actions)",
                    str(int(recorded)))
    return episode


def _check_episode(episode: dict, name: str, source: str) -> None:
    """An episode's arrays fit together: T actions, T + 1 observations, T rewards and flags,
    flags only on the last step."""
    steps = np.shape(episode["actions"])[0] if np.ndim(episode["actions"]) else 0
    observations = episode["observations"]
    if np.ndim(observations) != 2 or observations.shape[0] != steps + 1:
        raise error(source, f"{name}/observations",
                    f"shape (T + 1, obs_dim) = ({steps + 1}, obs_dim) for T = {steps} actions",
                    f"shape {np.shape(observations)}")
    for key in ("rewards", "terminations", "truncations"):
        length = np.shape(episode[key])[0] if np.ndim(episode[key]) else None
        if length != steps:
            raise error(source, f"{name}/{key}", f"{steps} rows (one per action)",
                        f"shape {np.shape(episode[key])}")
    for key in ("terminations", "truncations"):
        flags = np.asarray(episode[key]) != 0
        if flags.ndim > 1:
            flags = flags.any(axis=tuple(range(1, flags.ndim)))
        inside = np.flatnonzero(flags[:-1])
        if inside.size:
            raise error(source, f"{name}/{key}", "a flag only on the episode's last step",
                        f"one at step {int(inside[0])} of {steps}")


def read_minari_id(dataset_id: str, env: str | None = None) -> Dataset:
    """Load a local Minari dataset named by its id through the ``minari`` package, as a
    validated :class:`Dataset` (the same rows as :func:`read_minari` gives for its files).

    ``env`` checks the dimensions (a Minari task's spec, registered under the id). Raises
    :class:`~offrl_jax.tasks.minari.MinariError` without the package, FileNotFoundError (with
    the ``minari download`` command) when the dataset is not in the local Minari data directory,
    and :class:`DatasetError` for data that cannot be used.
    """
    from offrl_jax.tasks.minari import import_minari, local_dataset_dir

    minari = import_minari(dataset_id)
    path = local_dataset_dir(dataset_id)
    source = f"{path} (Minari dataset {dataset_id})"
    try:
        dataset = minari.MinariDataset(path / "data")
        raw = list(dataset.iterate_episodes())
    except Exception as err:  # minari raises ValueError, AssertionError, KeyError, OSError
        raise DatasetError(f"{source}: key '/': expected a dataset the minari package reads, "
                           f"found an error ({type(err).__name__}: {err})") from err
    if not raw:
        raise error(source, "episode_0", "at least one episode", "none")
    episodes = []
    for item in raw:
        name = f"episode_{item.id}"
        if not isinstance(item.observations, np.ndarray):
            raise error(source, f"{name}/observations", "one array (a Box observation space)",
                        f"{type(item.observations).__name__} (a Dict/Tuple observation space, "
                        f"not supported)")
        episode = {key: np.asarray(getattr(item, key)) for key in EPISODE_KEYS}
        _check_episode(episode, name, source)
        episodes.append((int(item.id), episode))
    _check_widths(episodes, env, source)
    arrays = episodes_to_arrays(episode for _, episode in episodes)
    arrays["episode_ids"] = np.concatenate([np.full(len(episode["actions"]), index, np.int64)
                                            for index, episode in episodes])
    return Dataset.from_arrays(**arrays, env=env, source=source)


def write_minari(path: str | os.PathLike, episodes: Sequence[Mapping[str, np.ndarray]],
                 metadata: Mapping | None = None) -> Path:
    """Write episodes as a Minari HDF5 dataset directory ``path`` (files under ``path/data``).

    Each episode maps the :data:`EPISODE_KEYS` to arrays (``observations`` has one more row than
    ``actions``). ``total_steps``, ``total_episodes`` and ``data_format`` are set in
    ``metadata.json`` from the episodes; other metadata entries are copied. Contents are written
    as given (the reader validates), so tests can also build malformed datasets. Both files are
    written atomically. Returns the dataset directory.
    """
    path = Path(path)
    data_dir = path / "data"
    for index, episode in enumerate(episodes):
        missing = [key for key in EPISODE_KEYS if key not in episode]
        if missing:
            raise DatasetError(f"episode {index}: key '{missing[0]}': expected an array, "
                               f"found no such key")
    with atomic_output(data_dir / DATA_FILE) as tmp, h5py.File(tmp, "w") as handle:
        for index, episode in enumerate(episodes):
            group = handle.create_group(f"episode_{index}")
            group.attrs["id"] = index
            group.attrs["total_steps"] = len(episode["actions"])
            for key in EPISODE_KEYS:
                group.create_dataset(key, data=np.asarray(episode[key]))
    full_metadata = {**(metadata or {}),
                     "total_episodes": len(episodes),
                     "total_steps": int(sum(len(ep["actions"]) for ep in episodes)),
                     "data_format": "hdf5"}
    with atomic_output(data_dir / METADATA_FILE) as tmp:
        tmp.write_text(json.dumps(full_metadata, indent=2, default=_json_default))
    return path


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON-serialisable")
