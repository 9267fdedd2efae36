"""A run plan: everything ``offrl bench`` will run, resolved and checked before any data step.

:func:`plan_run` turns the command line's choices (algorithms, tasks, seeds, run profile,
``--set`` overrides, ``--sweep``, the schedule flags, or a relaunched ``config.json``) into a
:class:`RunPlan`: every (algorithm, task)'s config (the profile's overrides, the task's table and
``--set`` applied), every algorithm's :class:`~offrl_jax.training.loop.TrainConfig`, and every
(algorithm, task)'s algorithm, made once here. A misspelt or ill-typed setting, an inconsistent
schedule, an evaluation backend a task lacks and a sweep leaf some algorithm's state lacks are all
errors here, before anything is generated, loaded or trained. The runner
(:mod:`offrl_jax.training.runner`) executes a plan, one cell after another or on Ray.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from offrl_jax.algorithms.base import Algorithm, ConfigError
from offrl_jax.algorithms.registry import get_algorithm
from offrl_jax.data import Dataset
from offrl_jax.evaluation import check_backend
from offrl_jax.generation.versions import task_generated_file
from offrl_jax.tasks import Task, parse_task_argument
from offrl_jax.training.loop import TrainConfig, check_sweep
from offrl_jax.training.profiles import RUN_PROFILES, RunProfile


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """One benchmark run, resolved: what :func:`~offrl_jax.training.runner.run_plan` executes.

    ``task_arguments``: the tasks as given (a name, ``NAME=ENV:PATH`` or a Minari id), which a
    Ray worker registers again; ``tasks``: the same, resolved. ``configs`` and ``made``: keyed by
    ``(algorithm, task name)``; ``made`` holds each cell's algorithm, made once from its config
    and task (its networks and optimizers built), for every check and for the local cells.
    ``trains``: by algorithm. ``data_files``: by task name, the generated file that stands for a
    built-in task's data under ``data_profile`` (None: the task names its own file)."""

    profile: str
    data_profile: str
    algorithms: tuple[str, ...]
    task_arguments: tuple[str, ...]
    tasks: tuple[Task, ...]
    seeds: tuple[int, ...]
    sweep: dict[str, list[float]]
    out_dir: Path
    trains: dict[str, TrainConfig]
    configs: dict[tuple[str, str], Any]
    data_files: dict[str, Path | None]
    made: dict[tuple[str, str], Algorithm] = dataclasses.field(compare=False, repr=False)

    def cells(self):
        """``(algorithm, task, task argument)`` of every cell, task-major: the order they run
        in."""
        for task, argument in zip(self.tasks, self.task_arguments, strict=True):
            for algorithm in self.algorithms:
                yield algorithm, task, argument


def config_overrides(algorithm, profile: RunProfile, train: TrainConfig,
                     overrides: dict) -> dict:
    """Profile overrides then user overrides, ``{path: value}``; ``"*"`` applies to every
    algorithm whose config has the path, ``"ALGO"`` to that algorithm only (checked first by
    :func:`check_overrides`). A ``total_updates`` setting (learning-rate schedules) follows the
    run's number of updates."""
    paths = algorithm.paths()
    out = {}
    run_length = {"*": {"total_updates": train.num_updates}}
    for source in (run_length, profile.algorithm_overrides, overrides):
        out.update({k: v for k, v in source.get("*", {}).items() if k in paths})
        out.update(source.get(algorithm.name, {}))
    return out


def check_overrides(algorithms: list[str], overrides: dict, source: str = "--set") -> None:
    """Raise :class:`~offrl_jax.algorithms.base.ConfigError` unless every override names a
    setting: a ``"*"`` path must exist in at least one of ``algorithms`` (the others lack that
    part and skip it), an ``"ALGO"`` path in that algorithm, which must be among
    ``algorithms``. Nothing is loaded or trained."""
    chosen = {name: get_algorithm(name).paths() for name in algorithms}
    for scope, values in overrides.items():
        if scope == "*":
            for path in values:
                if not any(path in paths for paths in chosen.values()):
                    valid = sorted(set().union(*chosen.values()))
                    raise ConfigError(
                        f"{source} {path}: no chosen algorithm ({', '.join(algorithms)}) has "
                        f"a setting {path!r}; valid paths: {', '.join(valid)}")
        elif scope not in chosen:
            raise ConfigError(f"{source} {scope}.{next(iter(values), '')}: {scope!r} is not "
                              f"among the chosen algorithms ({', '.join(algorithms)})")
        else:
            for path in values:
                if path not in chosen[scope]:
                    raise ConfigError(
                        f"{source} {scope}.{path}: {scope} has no setting {path!r}; valid "
                        f"paths: {', '.join(sorted(chosen[scope]))}")


def check_profile(profile: RunProfile) -> None:
    """A profile's overrides against every registered algorithm (a misspelt path in a profile
    table is an error, not a silently dropped setting)."""
    from offrl_jax.algorithms.registry import ALGORITHMS

    names = [name for name in profile.algorithm_overrides if name != "*"]
    unknown = sorted(set(names) - set(ALGORITHMS))
    if unknown:
        raise ConfigError(f"run profile {profile.name!r}: unknown algorithm(s) {unknown}")
    check_overrides(sorted(ALGORITHMS), profile.algorithm_overrides,
                    f"run profile {profile.name!r}:")


def train_configs(algorithms: list[str], profile: RunProfile, schedule: dict | None = None,
                  eval_backend: str | None = None) -> dict[str, TrainConfig]:
    """Each algorithm's :class:`TrainConfig`: the profile's, then ``schedule`` (``num_updates``,
    ``eval_every``, ``eval_episodes`` for every algorithm, from ``offrl bench --updates
    --eval-every --eval-episodes``), then the evaluation backend. An inconsistent schedule is
    a :class:`ConfigError`."""
    out = {}
    for name in algorithms:
        try:
            train = dataclasses.replace(profile.train_for(name), **(schedule or {}))
        except ValueError as error:
            raise ConfigError(f"{name}: {error} (--updates, --eval-every)") from None
        out[name] = dataclasses.replace(train, eval_backend=eval_backend) if eval_backend \
            else train
    return out


def parse_tasks(tasks: list[str]) -> list[Task]:
    """The tasks of ``--tasks`` (:func:`~offrl_jax.tasks.parse_task_argument`); one that cannot
    be resolved (an unknown name, a missing file, a Minari id without the ``minari`` package or
    not in the local Minari directory) is a :class:`ConfigError` with the reason."""
    out = []
    for argument in tasks:
        try:
            out.append(parse_task_argument(argument))
        except (KeyError, ValueError, FileNotFoundError) as error:
            reason = error.args[0] if error.args else error
            raise ConfigError(f"--tasks {argument}: {reason}") from None
    return out


def _abstract_dataset(spec, size: int = 1_000) -> Dataset:
    """A dataset of shapes only, for ``jax.eval_shape`` of an ``init`` before any data exists."""
    def f32(*shape):
        return jax.ShapeDtypeStruct(shape, jnp.float32)

    return Dataset(observations=f32(size, spec.obs_dim), actions=f32(size, spec.act_dim),
                   rewards=f32(size), next_observations=f32(size, spec.obs_dim),
                   terminals=f32(size), timeouts=f32(size),
                   episode_ids=jax.ShapeDtypeStruct((size,), jnp.int32))


def check_sweep_names(made: list[Algorithm], spec, sweep: dict) -> None:
    """Raise :class:`~offrl_jax.training.loop.SweepError` unless every swept name is a float
    leaf of every algorithm's state (its shapes from ``jax.eval_shape`` of ``init`` on a dataset
    of ``spec``'s shapes: nothing is trained, loaded or generated). ``made``: one made
    algorithm per chosen algorithm (the state's fields do not depend on the task)."""
    for algorithm in made:
        state = jax.eval_shape(lambda key, data, made=algorithm: made.init(key, data),
                               jax.random.PRNGKey(0), _abstract_dataset(spec))
        check_sweep(algorithm.name, state, sweep)


def plan_run(algorithms: list[str], tasks: list[str], seeds: list[int], profile: str,
             out_dir: str | Path, overrides: dict | None = None,
             eval_backend: str | None = None, sweep: dict | None = None,
             schedule: dict | None = None, exact: dict | None = None) -> RunPlan:
    """The :class:`RunPlan` of a run, every check done (module docstring).

    ``sweep``: ``{leaf: values}``; several leaves sweep their grid (every combination).
    ``schedule``: ``num_updates``, ``eval_every``, ``eval_episodes`` for every algorithm.
    ``exact``: a :func:`~offrl_jax.training.runner.read_run_config` document: its resolved
    settings and training schedules replace the profile's, the task tables and ``overrides``
    (a relaunch)."""
    run_profile = RUN_PROFILES[profile]
    algos = [get_algorithm(a) for a in algorithms]
    task_objs = parse_tasks(tasks)
    sweep = {name: [float(v) for v in values] for name, values in (sweep or {}).items()}
    # Every config first (a misspelt or ill-typed override fails here, before any data step).
    if exact is None:
        check_profile(run_profile)
        check_overrides(algorithms, overrides or {})
        trains = train_configs(algorithms, run_profile, schedule, eval_backend)
        configs = {(algorithm.name, task.name): algorithm.make_config(
            task.name, config_overrides(algorithm, run_profile, trains[algorithm.name],
                                        overrides or {}))
            for algorithm in algos for task in task_objs}
    else:
        trains = {name: TrainConfig(**exact["train"][name]) for name in algorithms}
        configs = {(algorithm.name, task.name): algorithm.make_config(
            None, exact["settings"][f"{algorithm.name}/{task.name}"])
            for algorithm in algos for task in task_objs}
    made = {(algorithm.name, task.name): algorithm.make(configs[(algorithm.name, task.name)],
                                                        task.spec)
            for algorithm in algos for task in task_objs}
    for (name, task_name), algorithm in made.items():
        period = algorithm.refresh_every
        if period and trains[name].eval_every % period:
            raise ConfigError(f"{name} on {task_name}: eval_every ({trains[name].eval_every}) "
                              f"must be a multiple of its rollouts.refresh_every ({period})")
    for task in task_objs:  # a Minari dataset's v5 environment has no MJX version
        for name in algorithms:
            try:
                check_backend(task.spec.name, trains[name].eval_backend)
            except ValueError as error:
                raise ConfigError(f"{name} on {task.name}: {error}") from None
    if sweep:
        first = task_objs[0]
        check_sweep_names([made[(name, first.name)] for name in algorithms], first.spec, sweep)
    return RunPlan(
        profile=profile, data_profile=run_profile.data_profile, algorithms=tuple(algorithms),
        task_arguments=tuple(tasks), tasks=tuple(task_objs), seeds=tuple(seeds), sweep=sweep,
        out_dir=Path(out_dir), trains=trains, configs=configs,
        data_files={task.name: task_generated_file(task, run_profile.data_profile)
                    for task in task_objs},
        made=made)


__all__ = ["RunPlan", "check_overrides", "check_profile", "check_sweep_names",
           "config_overrides", "parse_tasks", "plan_run", "train_configs"]
