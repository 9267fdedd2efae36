"""Which data a generation profile makes for an environment, and the file it is written to.

The version is part of the recipe (shipped policies or training on this machine), so it is
decided here; the data layer only receives the resulting path
(:func:`offrl_jax.data.find_task_dataset`'s ``generated``).
"""

from __future__ import annotations

from pathlib import Path

from offrl_jax import policies
from offrl_jax.data import generated_dataset_path
from offrl_jax.generation.data_profiles import DataProfile, get_data_profile
from offrl_jax.tasks import Task, get_env_spec


def data_source(env: str, profile: DataProfile) -> str:
    """"shipped" where shipped policies exist (any profile but the tests' ``tiny``), else
    "trained"."""
    if profile.name != "tiny" and policies.has_shipped_policies(env):
        return "shipped"
    return "trained"


def data_version(env: str, profile: DataProfile) -> str:
    """The versioned name of the data this profile makes for ``env``: the shipped policies'
    ``data_version`` (``gen1``), or ``trained-<profile>`` for data trained on this machine."""
    if data_source(env, profile) == "shipped":
        return policies.load_manifest(env)["data_version"]
    return f"trained-{profile.name}"


def generated_file(env: str, kind: str, profile: str) -> Path:
    """Where the generator writes ``env``'s ``kind`` dataset for the profile named ``profile``,
    in the version that profile makes, so files of another version are never picked up."""
    get_env_spec(env)
    return generated_dataset_path(env, kind, profile, data_version(env, get_data_profile(profile)))


def task_generated_file(task: Task, profile: str) -> Path | None:
    """The generated file that stands for a built-in ``task``'s data under ``profile``; None for
    a task that names its own data (``task.path``)."""
    return None if task.path is not None else generated_file(task.env, task.kind, profile)
