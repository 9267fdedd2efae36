"""Per-environment facts as data: Gymnasium ids, dimensions, reference returns, termination.

Reference returns are D4RL's (``docs/algorithms.md#d4rl-conventions``): REF_MIN is a uniform random
policy's mean return, REF_MAX the expert's; they are the same for D4RL v0/v1/v2.
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

    def make_gym_env(self, **overrides):
        """A fresh Gymnasium v4 environment (the D4RL models) for this spec."""
        import gymnasium as gym

        with warnings.catch_warnings():
            # v4 is chosen on purpose: v5 changed models and observations
            # (docs/algorithms.md#pitfall-9).
            warnings.filterwarnings("ignore", message=".*out of date.*")
            return gym.make(self.gym_id, **{**dict(self.gym_kwargs), **overrides})


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


def get_env_spec(env: str) -> EnvSpec:
    try:
        return ENV_SPECS[env]
    except KeyError:
        raise KeyError(
            f"unknown environment {env!r}; valid environments: {', '.join(sorted(ENV_SPECS))}"
        ) from None


def normalized_score(env: str, returns):
    """D4RL normalized score: 100 * (R - REF_MIN) / (REF_MAX - REF_MIN); 0 random, 100 expert."""
    spec = get_env_spec(env)
    returns = np.asarray(returns, dtype=np.float64)
    return 100.0 * (returns - spec.ref_min_return) / (spec.ref_max_return - spec.ref_min_return)
