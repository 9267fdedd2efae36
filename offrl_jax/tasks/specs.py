"""Per-environment facts as data: Gymnasium ids, dimensions, reference returns, termination.

Reference returns of the built-in environments are D4RL's (``docs/algorithms.md#d4rl-conventions``):
REF_MIN is a uniform random policy's mean return, REF_MAX the expert's; they are the same for D4RL
v0/v1/v2. A Minari dataset named by its id brings its own spec (:func:`register_env_spec`, made by
:mod:`offrl_jax.tasks.minari`): the environment its metadata names (Gymnasium v5 for Minari's
``mujoco/*`` sets) and the dataset's own ``ref_min_score`` / ``ref_max_score``.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np

from offrl_jax.tasks import termination
from offrl_jax.tasks.termination import TerminationFn


@dataclasses.dataclass(frozen=True)
class EnvSpec:
    name: str
    gym_id: str
    obs_dim: int
    act_dim: int
    ref_min_return: float
    ref_max_return: float
    termination_fn: TerminationFn
    gym_kwargs: tuple[tuple[str, Any], ...] = ()
    episode_length: int = 1000
    # Where ref_min_return / ref_max_return come from (named in records and tables).
    reference: str = "D4RL"

    def make_gym_env(self, **overrides):
        """A fresh Gymnasium environment for this spec: v4 (the D4RL models) for the built-in
        specs, the metadata's environment (v5 for Minari's ``mujoco/*``) for a Minari dataset's.

        Raises ValueError when its observation or action space does not have this spec's
        dimensions (the policy would be fed vectors of another layout).
        """
        import gymnasium as gym

        with warnings.catch_warnings():
            # v4 is chosen on purpose for the built-in specs: v5 changed models and
            # observations (docs/algorithms.md#pitfall-9).
            warnings.filterwarnings("ignore", message=".*out of date.*")
            env = gym.make(self.gym_id, **{**dict(self.gym_kwargs), **overrides})
        for what, space, want in (("observation", env.observation_space, self.obs_dim),
                                  ("action", env.action_space, self.act_dim)):
            if getattr(space, "shape", None) != (want,):
                env.close()
                raise ValueError(
                    f"environment {self.name!r}: {self.gym_id} with {dict(self.gym_kwargs)}: "
                    f"expected a {what} space of shape ({want},), found {space}")
        return env


ENV_SPECS: dict[str, EnvSpec] = {
    spec.name: spec
    for spec in (
        EnvSpec("halfcheetah", "HalfCheetah-v4", 17, 6, -280.178953, 12135.0,
                termination.halfcheetah_done),
        EnvSpec("hopper", "Hopper-v4", 11, 3, -20.272305, 3234.3, termination.hopper_done),
        EnvSpec("walker2d", "Walker2d-v4", 17, 6, 1.629008, 4592.3, termination.walker2d_done),
        EnvSpec("ant", "Ant-v4", 111, 8, -325.6, 3879.7, termination.ant_done,
                gym_kwargs=(("use_contact_forces", True),)),
    )
}


# Specs registered at run time (a Minari dataset's environment and reference scores), by name.
_DATASET_SPECS: dict[str, EnvSpec] = {}


def register_env_spec(spec: EnvSpec) -> EnvSpec:
    """Make ``spec`` known to :func:`get_env_spec` under ``spec.name`` (a dataset's own spec,
    replacing an earlier one of that name: the dataset's metadata as read last); a built-in
    name cannot be redefined."""
    if spec.name in ENV_SPECS:
        raise ValueError(f"environment name {spec.name!r} is built in; choose another name")
    _DATASET_SPECS[spec.name] = spec
    return spec


def is_builtin_env(env: str) -> bool:
    """Whether ``env`` is one of the built-in Gymnasium v4 environments (D4RL's)."""
    return env in ENV_SPECS


def get_env_spec(env: str) -> EnvSpec:
    spec = ENV_SPECS.get(env) or _DATASET_SPECS.get(env)
    if spec is None:
        registered = f" (or a registered dataset's: {', '.join(sorted(_DATASET_SPECS))})" \
            if _DATASET_SPECS else ""
        raise KeyError(
            f"unknown environment {env!r}; valid environments: {', '.join(sorted(ENV_SPECS))}"
            f"{registered}")
    return spec


def normalized_score(env: str, returns):
    """Normalized score: 100 * (R - REF_MIN) / (REF_MAX - REF_MIN); 0 random, 100 expert.

    D4RL's reference returns for the built-in environments; a Minari dataset's own
    ``ref_min_score`` / ``ref_max_score`` for its spec (the same formula as
    ``minari.get_normalized_score``, times 100), which do not compare with D4RL's.
    """
    spec = get_env_spec(env)
    returns = np.asarray(returns, dtype=np.float64)
    return 100.0 * (returns - spec.ref_min_return) / (spec.ref_max_return - spec.ref_min_return)
