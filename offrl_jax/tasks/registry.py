"""The task registry: a task is an environment plus a dataset.

Built-in tasks are ``{env}-{kind}`` for the four environments and D4RL's five dataset kinds;
their data is found by :func:`offrl_jax.data.load_task_dataset` (a real D4RL file when the user
has one, otherwise the suite's own generated dataset). Further tasks can be registered from a
D4RL-layout HDF5 file or a Minari dataset directory with :func:`register_task`, and a Minari
dataset id (``mujoco/hopper/medium-v0``) becomes a task through the ``minari`` package
(:mod:`offrl_jax.tasks.minari`), with the environment and reference scores its metadata names.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from offrl_jax.tasks import minari
from offrl_jax.tasks.specs import ENV_SPECS, EnvSpec, get_env_spec

DATASET_KINDS = ("random", "medium", "medium-replay", "medium-expert", "expert")
FORMATS = ("d4rl", "minari")


@dataclasses.dataclass(frozen=True)
class Task:
    """``path``/``fmt`` are None for built-in tasks, whose files are located at load time.
    ``minari_id`` is set for a task named by a Minari dataset id: its data is read through the
    ``minari`` package and ``env`` names the spec made from the dataset's metadata."""

    name: str
    env: str
    kind: str
    path: str | None = None
    fmt: str | None = None
    minari_id: str | None = None

    @property
    def spec(self) -> EnvSpec:
        return get_env_spec(self.env)


_REGISTRY: dict[str, Task] = {
    f"{env}-{kind}": Task(f"{env}-{kind}", env, kind)
    for env in ENV_SPECS
    for kind in DATASET_KINDS
}
_BUILTIN = frozenset(_REGISTRY)


def list_tasks() -> list[str]:
    return sorted(_REGISTRY)


def get_task(name: str) -> Task:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; valid tasks: {', '.join(list_tasks())}") from None


def register_task(name: str, env: str, path: str | os.PathLike, kind: str = "custom",
                  fmt: str | None = None) -> Task:
    """Register a task whose data is a D4RL HDF5 file or a Minari dataset directory.

    ``fmt`` defaults to "minari" for a directory and "d4rl" for a file. Re-registering a name
    with the same definition is a no-op; built-in names cannot be redefined.
    """
    get_env_spec(env)
    path = Path(path).expanduser().resolve()
    if not path.exists():
        raise FileNotFoundError(f"task {name!r}: dataset path {str(path)!r} does not exist")
    if fmt is None:
        fmt = "minari" if path.is_dir() else "d4rl"
    if fmt not in FORMATS:
        raise ValueError(f"task {name!r}: format must be one of {FORMATS}, found {fmt!r}")
    task = Task(name, env, kind, str(path), fmt)
    if name in _BUILTIN:
        raise ValueError(f"task name {name!r} is built in; choose another name")
    if name in _REGISTRY and _REGISTRY[name] != task:
        raise ValueError(f"task {name!r} is already registered as {_REGISTRY[name]}")
    _REGISTRY[name] = task
    return task


def register_minari_task(dataset_id: str) -> Task:
    """The task of a local Minari dataset named by its id (:mod:`offrl_jax.tasks.minari`: needs
    the ``minari`` package; its spec is read from the dataset's metadata each time, replacing
    an earlier registration of the same id)."""
    spec, path = minari.minari_spec_and_path(dataset_id)
    name = minari.task_name(dataset_id)
    kind = dataset_id.rsplit("/", 1)[-1].rsplit("-v", 1)[0]
    task = Task(name, spec.name, kind, str(path.resolve()), "minari", minari_id=dataset_id)
    previous = _REGISTRY.get(name)
    if previous is not None and previous.minari_id != dataset_id:
        raise ValueError(f"task {name!r} (Minari id {dataset_id!r}) is already registered as "
                         f"{previous}")
    _REGISTRY[name] = task
    return task


def parse_task_argument(argument: str) -> Task:
    """Resolve a command-line task: a registered name, ``NAME=ENV:PATH`` to register one, or a
    Minari dataset id (``mujoco/hopper/medium-v0``, read through the ``minari`` package)."""
    if "=" in argument:
        name, rest = argument.split("=", 1)
        env, sep, path = rest.partition(":")
        if not sep:
            raise ValueError(f"task argument {argument!r}: expected NAME=ENV:PATH")
        return register_task(name, env, path)
    if argument not in _REGISTRY and minari.is_minari_id(argument):
        return register_minari_task(argument)
    try:
        return get_task(argument)
    except KeyError:
        raise KeyError(f"unknown task {argument!r}; valid tasks: {', '.join(list_tasks())}; "
                       f"or NAME=ENV:PATH for a D4RL file or Minari directory, or a Minari "
                       f"dataset id such as mujoco/hopper/medium-v0") from None
