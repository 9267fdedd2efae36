"""Where a task's data lives, and loading it.

Resolution order of :func:`load_task_dataset` (the first that exists wins):

1. the task's own ``path`` (registered tasks): ``fmt`` "d4rl" -> :func:`read_d4rl_hdf5`,
   "minari" -> :func:`read_minari`, or through the ``minari`` package (:func:`read_minari_id`)
   for a task named by a Minari id; a missing path is an error, not a fallback;
2. a real D4RL download in ``$OFFRL_D4RL_DIR``: ``{env}_{kind with '-' -> '_'}-v2.hdf5``
   (D4RL's own names, e.g. ``hopper_medium_replay-v2.hdf5``), then ``{env}-{kind}-v2.hdf5``;
3. the suite's generated file, when the caller names it (``generated``: the generation layer
   decides which version a profile makes, :func:`offrl_jax.generation.versions.generated_file`;
   its name carries the data version, e.g. ``hopper-medium-gen1.hdf5``).

Otherwise FileNotFoundError lists every place looked. Data is always validated against the
task's environment dimensions.
"""

from __future__ import annotations

import os
from pathlib import Path

from offrl_jax.data.d4rl import read_d4rl_hdf5
from offrl_jax.data.dataset import Dataset
from offrl_jax.data.minari import read_minari, read_minari_id
from offrl_jax.tasks import Task, get_env_spec, get_task

DATA_DIR_VAR = "OFFRL_DATA_DIR"
D4RL_DIR_VAR = "OFFRL_D4RL_DIR"


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "")
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """The data cache: ``$OFFRL_DATA_DIR`` if set, else ``$XDG_CACHE_HOME/offrl_jax``, else
    ``~/.cache/offrl_jax``."""
    override = _env_path(DATA_DIR_VAR)
    if override is not None:
        return override
    xdg = _env_path("XDG_CACHE_HOME")
    return (xdg if xdg is not None else Path.home() / ".cache") / "offrl_jax"


def _check_plain(**values: str) -> None:
    for label, value in values.items():
        if not value or "/" in value or os.sep in value or value in (".", ".."):
            raise ValueError(f"dataset {label} must be a plain name, found {value!r}")


def generated_dataset_path(env: str, kind: str, profile: str, version: str) -> Path:
    """``<cache_dir>/generated/<profile>/<env>-<kind>-<version>.hdf5``: the layout of the
    generated data in the cache (the generator writes there; which version a profile makes is
    the generator's, :func:`offrl_jax.generation.versions.generated_file`)."""
    get_env_spec(env)
    _check_plain(kind=kind, profile=profile, version=version)
    return cache_dir() / "generated" / profile / f"{env}-{kind}-{version}.hdf5"


def d4rl_candidate_paths(env: str, kind: str) -> list[Path]:
    """The D4RL download names looked for in ``$OFFRL_D4RL_DIR`` (empty when it is unset)."""
    d4rl_dir = _env_path(D4RL_DIR_VAR)
    if d4rl_dir is None:
        return []
    return [d4rl_dir / f"{env}_{kind.replace('-', '_')}-v2.hdf5",
            d4rl_dir / f"{env}-{kind}-v2.hdf5"]


def find_task_dataset(task: Task | str, generated: str | Path | None = None
                      ) -> tuple[Path, str]:
    """``(path, fmt)`` of the data :func:`load_task_dataset` would read; fmt "d4rl" or "minari".
    ``generated``: the suite's generated file to fall back to for a built-in task (under
    ``<cache_dir>/generated/<profile>/``, :func:`generated_dataset_path`), None for none.

    Raises FileNotFoundError naming every place looked.
    """
    task = get_task(task) if isinstance(task, str) else task
    if task.path is not None:
        path = Path(task.path)
        if not path.exists():
            raise FileNotFoundError(f"task {task.name!r}: dataset path {str(path)!r} "
                                    f"does not exist")
        return path, task.fmt or ("minari" if path.is_dir() else "d4rl")

    looked = []
    for candidate in d4rl_candidate_paths(task.env, task.kind):
        if candidate.is_file():
            return candidate, "d4rl"
        looked.append(str(candidate))
    if _env_path(D4RL_DIR_VAR) is None:
        looked.append(f"${D4RL_DIR_VAR} (not set)")
    hint = ""
    if generated is not None:
        generated = Path(generated)
        if generated.is_file():
            return generated, "d4rl"
        looked.append(str(generated))
        hint = f" (profile {generated.parent.name!r})"
    raise FileNotFoundError(
        f"no dataset for task {task.name!r}; looked in: {'; '.join(looked)}. "
        f"Generate one with `offrl data generate --env {task.env}`{hint}, "
        f"or set {D4RL_DIR_VAR} to a folder of D4RL v2 .hdf5 files.")


def load_task_dataset(task: Task | str, generated: str | Path | None = None) -> Dataset:
    """Load and validate a task's dataset (order in the module docstring; ``generated`` as in
    :func:`find_task_dataset`)."""
    task = get_task(task) if isinstance(task, str) else task
    path, fmt = find_task_dataset(task, generated)
    if task.minari_id is not None:
        return read_minari_id(task.minari_id, env=task.env)
    if fmt == "minari":
        return read_minari(path, env=task.env)
    if fmt == "d4rl":
        return read_d4rl_hdf5(path, env=task.env)
    raise ValueError(f"task {task.name!r}: unknown dataset format {fmt!r}")
