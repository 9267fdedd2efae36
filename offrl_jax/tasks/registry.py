"""The task registry: a task is an environment plus a dataset.

Built-in tasks are ``{env}-{kind}`` for the four environments and D4RL's five dataset kinds;
their data is found by :func:`offrl_jax.data.load_task_dataset` (a real D4RL file when the user
has one, otherwise the suite's own generated dataset). Further tasks can be registered from a
D4RL-layout HDF5 file or a Minari dataset directory with :func:`register_task`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from offrl_jax.tasks.specs import ENV_SPECS, EnvSpec, get_env_spec

DATASET_KINDS = ("random", "medium", "medium-replay", "medium-expert", "expert")
FORMATS = ("d4rl", "minari")


@dataclasses.dataclass(frozen=True)
class Task:
    """``path``/``fmt`` are None for built-in tasks, whose files are located at load time."""

    name: str
    env: str
    kind: str
    path: str | None = None
    fmt: str | None = None

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


def parse_task_argument(argument: str) -> Task:
    """Resolve a command-line task: a registered name, or ``NAME=ENV:PATH`` to register one."""
    if "=" in argument:
        name, rest = argument.split("=", 1)
        env, sep, path = rest.partition(":")
        if not sep:
            raise ValueError(f"task argument {argument!r}: expected NAME=ENV:PATH")
        return register_task(name, env, path)
    return get_task(argument)
