"""A Minari dataset named by its id (``mujoco/hopper/medium-v0``) as a task.

Needs the ``minari`` package (``pip install "offrl_jax[minari]"``); without it an id is an error
that says so, and Minari directories given as ``NAME=ENV:PATH`` are still read by the suite's
own reader (:func:`offrl_jax.data.read_minari`). Nothing is downloaded at run time: the dataset
must be in the local Minari data directory (``$MINARI_DATASETS_PATH``, else
``~/.minari/datasets``, Minari's own rule), where ``minari download ID`` puts it.

The task's environment spec comes from the dataset's ``metadata.json``:

- the environment: ``eval_env_spec`` when the dataset names one, else ``env_spec`` (as
  ``MinariDataset.recover_environment(eval_env=True)`` chooses), with its id (``Hopper-v5``),
  keyword arguments and time limit; the host evaluator makes it with ``gym.make``. It must be
  one of the four locomotion environments whose termination functions the suite has, in
  version 4 or 5: Gymnasium's v5 keeps v4's termination rules for hopper, walker2d, ant and
  halfcheetah (``is_healthy`` of ``gymnasium/envs/mujoco/*_v5.py``), so the v4 functions of
  :mod:`offrl_jax.tasks.termination` hold, unless the metadata changes a keyword that moves them
  (a healthy range, ``terminate_when_unhealthy``, the position exclusion): that is an error.
- dimensions: the dataset's ``observation_space`` / ``action_space`` (1-D boxes), checked
  against the environment (v5's Ant has 105 observations, v4's with contact forces 111).
- reference returns: the dataset's ``ref_min_score`` / ``ref_max_score`` (required); scores are
  ``100 * (R - ref_min) / (ref_max - ref_min)``, the formula of ``minari.get_normalized_score``
  times 100. They are not D4RL's and do not compare with D4RL scores: the run's ``run.json``
  and ``summary.md`` say so.

The spec is registered under the dataset id; the task's name is the id with ``/`` turned into
``-`` (``mujoco-hopper-medium-v0``), since task names become file names.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path

from offrl_jax.tasks.specs import ENV_SPECS, EnvSpec, register_env_spec

DATASETS_PATH_VAR = "MINARI_DATASETS_PATH"
# Minari's ids: (namespace/)(env_name/)dataset_name-vN; the suite's own task names have no "/".
_ID = re.compile(r"[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+-v\d+")
# Environment ids (without version) of the built-in specs, e.g. "Hopper" -> "hopper".
_BASE_ENVS = {spec.gym_id.rsplit("-v", 1)[0]: name for name, spec in ENV_SPECS.items()}
_VERSIONS = (4, 5)
# Keyword arguments that move the termination rule or the observation layout it reads.
_TERMINATION_KWARGS = ("healthy_state_range", "healthy_z_range", "healthy_angle_range",
                       "terminate_when_unhealthy", "exclude_current_positions_from_observation")
NOT_D4RL = ("normalized with the Minari dataset's own ref_min_score/ref_max_score: not "
            "comparable with D4RL scores")


class MinariError(ValueError):
    """A Minari id that cannot become a task (the message says why and what to do)."""


def is_minari_id(text: str) -> bool:
    """Whether ``text`` has the form of a Minari dataset id (``namespace/.../name-vN``)."""
    return bool(_ID.fullmatch(text))


def task_name(dataset_id: str) -> str:
    """The task name of a Minari id: ``mujoco/hopper/medium-v0`` -> ``mujoco-hopper-medium-v0``."""
    return dataset_id.replace("/", "-")


def import_minari(dataset_id: str):
    """The ``minari`` module, or a :class:`MinariError` saying how to install it."""
    try:
        import minari
    except ImportError:
        raise MinariError(
            f"task {dataset_id!r} is a Minari dataset id; loading it needs the `minari` package, "
            f"which is not installed: pip install 'offrl_jax[minari]' (or pip install "
            f"minari). Without it, give the dataset directory as NAME=ENV:PATH (read by the "
            f"suite's own reader, evaluated on the v4 environment ENV)") from None
    return minari


def datasets_root() -> Path:
    """The local Minari data directory: ``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``
    (the rule of ``minari.storage.get_dataset_path``)."""
    value = os.environ.get(DATASETS_PATH_VAR)
    return Path(value) if value is not None else Path.home() / ".minari" / "datasets"


def local_dataset_dir(dataset_id: str) -> Path:
    """``<root>/<dataset_id>`` when it holds the dataset's ``data/`` folder; otherwise
    FileNotFoundError naming the id, the directory looked in and the ``minari download``
    command (nothing is downloaded at run time)."""
    root = datasets_root()
    path = root / dataset_id
    if not (path / "data").is_dir():
        where = (f"${DATASETS_PATH_VAR}={root}" if DATASETS_PATH_VAR in os.environ
                 else f"{root} (${DATASETS_PATH_VAR} is not set)")
        raise FileNotFoundError(
            f"Minari dataset {dataset_id!r} is not in the local Minari data directory: no "
            f"{path / 'data'} (looked in {where}). Get it with `minari download {dataset_id}` "
            f"(it downloads into that directory), or set {DATASETS_PATH_VAR} to the directory "
            f"that holds it; nothing is downloaded at run time")
    return path


def env_spec_from_metadata(dataset_id: str, metadata: dict, obs_shape, act_shape) -> EnvSpec:
    """The evaluation environment's spec named by a Minari dataset's metadata (module
    docstring), registered nowhere; ``obs_shape`` / ``act_shape`` are the dataset's spaces'."""
    source = f"Minari dataset {dataset_id!r} (metadata.json)"
    key = "eval_env_spec" if metadata.get("eval_env_spec") else "env_spec"
    if not metadata.get(key):
        raise MinariError(f"{source}: key 'env_spec': expected the Gymnasium environment the "
                          f"data came from, found none (a dataset without an environment "
                          f"cannot be evaluated)")
    try:
        env = json.loads(metadata[key]) if isinstance(metadata[key], str) else dict(metadata[key])
        gym_id = env["id"]
    except (ValueError, TypeError, KeyError) as err:
        raise MinariError(f"{source}: key {key!r}: expected a Gymnasium EnvSpec as JSON, "
                          f"found {str(metadata[key])[:200]!r} ({err})") from None
    base, _, version = gym_id.rpartition("-v")
    if base not in _BASE_ENVS or not version.isdigit() or int(version) not in _VERSIONS:
        supported = ", ".join(f"{b}-v{v}" for b in sorted(_BASE_ENVS) for v in _VERSIONS)
        raise MinariError(f"{source}: key '{key}.id': expected one of {supported} (the "
                          f"environments whose termination functions the suite has), found "
                          f"{gym_id!r}")
    builtin = ENV_SPECS[_BASE_ENVS[base]]
    kwargs = {name: tuple(value) if isinstance(value, list) else value
              for name, value in (env.get("kwargs") or {}).items()}
    _check_termination_kwargs(source, key, gym_id, env.get("entry_point"), kwargs)
    for what, shape in (("observation_space", obs_shape), ("action_space", act_shape)):
        if shape is None or len(tuple(shape)) != 1:
            raise MinariError(f"{source}: key '{what}': expected a 1-D Box space, found shape "
                              f"{shape}")
    reference = {}
    for name in ("ref_min_score", "ref_max_score"):
        value = metadata.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise MinariError(
                f"{source}: key {name!r}: expected the dataset's reference return (a number; "
                f"scores are normalized with ref_min_score and ref_max_score), found "
                f"{'no such key' if name not in metadata else repr(value)}")
        reference[name] = float(value)
    if reference["ref_max_score"] == reference["ref_min_score"]:
        raise MinariError(f"{source}: keys 'ref_min_score', 'ref_max_score': expected two "
                          f"different returns, found {reference['ref_min_score']} for both")
    return EnvSpec(
        name=dataset_id, gym_id=gym_id, obs_dim=int(tuple(obs_shape)[0]),
        act_dim=int(tuple(act_shape)[0]), ref_min_return=reference["ref_min_score"],
        ref_max_return=reference["ref_max_score"], termination_fn=builtin.termination_fn,
        gym_kwargs=tuple(sorted(kwargs.items())),
        episode_length=int(env.get("max_episode_steps") or builtin.episode_length),
        reference=f"Minari {dataset_id} (ref_min_score, ref_max_score)")


def _check_termination_kwargs(source: str, key: str, gym_id: str, entry_point, kwargs: dict):
    """Refuse keyword arguments that change the termination rule from the environment's
    default (the suite's termination functions encode the defaults)."""
    moved = [name for name in _TERMINATION_KWARGS if name in kwargs]
    if not moved:
        return
    from gymnasium.envs.registration import load_env_creator

    try:
        creator = load_env_creator(entry_point) if entry_point else None
        defaults = {name: parameter.default for name, parameter in
                    inspect.signature(creator).parameters.items()} if creator else {}
    except (ImportError, AttributeError, ValueError, TypeError):
        defaults = {}
    for name in moved:
        default = defaults.get(name, inspect.Parameter.empty)
        if default is inspect.Parameter.empty or tuple(_as_tuple(kwargs[name])) != \
                tuple(_as_tuple(default)):
            raise MinariError(
                f"{source}: key '{key}.kwargs.{name}': expected {gym_id}'s default "
                f"{default if default is not inspect.Parameter.empty else '(unknown)'} (the "
                f"suite's termination function for {gym_id} assumes it), found "
                f"{kwargs[name]!r}")


def _as_tuple(value):
    return value if isinstance(value, tuple | list) else (value,)


def minari_spec_and_path(dataset_id: str) -> tuple[EnvSpec, Path]:
    """Open a local Minari dataset through the package (its metadata only, no episodes), and
    return its registered evaluation spec and its directory. Errors: :class:`MinariError`
    (no package, unusable metadata), FileNotFoundError (not in the local data directory)."""
    minari = import_minari(dataset_id)
    path = local_dataset_dir(dataset_id)
    try:
        dataset = minari.MinariDataset(path / "data")
    except Exception as err:  # minari raises ValueError, AssertionError, KeyError, OSError
        raise MinariError(f"Minari dataset {dataset_id!r} at {path}: the minari package "
                          f"cannot open it ({type(err).__name__}: {err})") from err
    metadata = dict(dataset.storage.metadata)
    spec = env_spec_from_metadata(dataset_id, metadata,
                                  getattr(dataset.observation_space, "shape", None),
                                  getattr(dataset.action_space, "shape", None))
    env = spec.make_gym_env()  # the evaluation environment exists and has the data's layout
    env.close()
    return register_env_spec(spec), path


def describe(spec: EnvSpec) -> dict:
    """What a run records about a Minari task's evaluation and normalisation."""
    return {"eval_env": spec.gym_id, "eval_env_kwargs": dict(spec.gym_kwargs),
            "ref_min_score": spec.ref_min_return, "ref_max_score": spec.ref_max_return,
            "note": f"evaluated on {spec.gym_id}, {NOT_D4RL}"}

