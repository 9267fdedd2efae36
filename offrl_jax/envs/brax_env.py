"""brax's ``Env`` interface over the MJX reproductions of the Gymnasium v4 tasks.

``BraxEnv(env_name)`` is a thin adapter around :class:`offrl_jax.envs.mjx_env.MjxEnv`, so that
brax's training agents (``brax.training.agents.sac.train``, ``ppo.train``) run on the same
physics, rewards and terminations::

    env = BraxEnv("hopper")
    state = env.reset(key)                  # brax.envs.base.State
    state = env.step(state, action)         # action: (env.action_size,)

It exposes the raw task, as ``MjxEnv`` does: termination as in Gymnasium v4 (``done`` is 1.0 on
the terminal step and stays 1.0, the physics frozen and the reward 0, if a done state is stepped
again) and no time limit. brax's training wraps every environment itself
(``brax.envs.training.wrap``: ``VmapWrapper``, ``EpisodeWrapper(episode_length)``,
``AutoResetWrapper``), and that is where the 1000-step limit (``env.episode_length``) and the
resets belong; the wrappers clear ``done`` before each step, so the freezing never shows there.

The fields of the ``State``:

- ``pipeline_state``: the ``mjx.Data`` of :class:`~offrl_jax.envs.mjx_env.MjxEnvState`;
- ``obs`` (obs_dim,) float32 and ``reward`` () float32, as ``MjxEnv`` computes them;
- ``done`` () float32, brax's convention (its agents take ``discount = 1 - done``);
- ``metrics`` and ``info``: empty. ``info["steps"]`` and ``info["truncation"]`` belong to brax's
  ``EpisodeWrapper``; ``MjxEnvState.steps`` is not carried, so a step counts from zero.

brax is an optional extra (``pip install -e .[brax]``). Where it is importable, ``BraxEnv``
subclasses ``brax.envs.base.Env`` and returns ``brax.envs.base.State``; without it the same class
stands alone and returns a :class:`State` with the same fields, so the adapter is tested where
brax is not installed.

One behaviour of brax's ``AutoResetWrapper`` to know: an environment that finishes an episode
restarts from the state its first ``reset`` made, not from fresh reset noise as Gymnasium does;
``num_envs`` parallel environments see ``num_envs`` start states.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from offrl_jax.envs.mjx_env import MjxEnvState, make_mjx_env

try:
    from brax.envs.base import Env as _EnvBase
    from brax.envs.base import State

    HAVE_BRAX = True
except ImportError:
    HAVE_BRAX = False
    _EnvBase = object

    @flax.struct.dataclass
    class State:
        """The fields of ``brax.envs.base.State``, for machines without brax."""

        pipeline_state: Any
        obs: jax.Array
        reward: jax.Array
        done: jax.Array
        metrics: dict = flax.struct.field(default_factory=dict)
        info: dict = flax.struct.field(default_factory=dict)


class BraxEnv(_EnvBase):
    """One v4 locomotion task in MJX behind brax's ``Env`` interface (single environment)."""

    def __init__(self, env_name: str):
        self.mjx_env = make_mjx_env(env_name)
        self.name = env_name
        self.episode_length = self.mjx_env.episode_length  # for brax's EpisodeWrapper
        self.dt = self.mjx_env.dt

    def reset(self, rng: jax.Array) -> State:
        """A new episode: ``MjxEnv.reset(rng)`` as a ``State``."""
        mjx_state = self.mjx_env.reset(rng)
        return State(pipeline_state=mjx_state.data, obs=mjx_state.obs,
                     reward=mjx_state.reward, done=mjx_state.done.astype(jnp.float32),
                     metrics={}, info={})

    def step(self, state: State, action: jax.Array) -> State:
        """One v4 step: ``MjxEnv.step`` on the state's physics, ``action`` (act_dim,)."""
        mjx_state = MjxEnvState(data=state.pipeline_state, obs=state.obs, reward=state.reward,
                                done=state.done != 0, steps=jnp.zeros((), jnp.int32))
        mjx_state = self.mjx_env.step(mjx_state, action)
        return state.replace(pipeline_state=mjx_state.data, obs=mjx_state.obs,
                             reward=mjx_state.reward,
                             done=mjx_state.done.astype(jnp.float32))

    @property
    def observation_size(self) -> int:
        return self.mjx_env.obs_dim

    @property
    def action_size(self) -> int:
        return self.mjx_env.act_dim

    @property
    def backend(self) -> str:
        return "mjx"

    @property
    def unwrapped(self) -> BraxEnv:
        return self
