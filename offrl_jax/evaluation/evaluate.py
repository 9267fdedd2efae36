"""Policy evaluation over seeds x episodes, on the host (Gymnasium) or on the device (MJX).

A policy is given as ``act_fn(params, obs, key, deterministic) -> actions`` for ONE seed, with
``obs`` of shape ``(episodes, obs_dim)`` and actions ``(episodes, act_dim)``; ``params`` passed to
the evaluator carry a leading seed axis ``(seeds, ...)``. The evaluator vmaps ``act_fn`` over
seeds and jits it once, when the evaluator is made: calling it again with parameters of the same
shapes reuses the compiled program (REFERENCE section 5, mistake 8).

- host backend: one jitted policy call per environment step for all seeds x episodes; the
  environments are Gymnasium v4, the reference for scores.
- device backend: reset, policy and MJX physics for every step of every episode in one compiled
  ``lax.scan``, so a GPU evaluates all seeds x episodes without leaving the device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from offrl_jax.tasks import get_env_spec, normalized_score

ActFn = Callable[[Any, jax.Array, jax.Array, bool], jax.Array]
BACKENDS = ("host", "device")


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Per-seed, per-episode results, each of shape ``(seeds, episodes)``."""

    returns: np.ndarray
    lengths: np.ndarray
    normalized: np.ndarray
    reset_seeds: np.ndarray | None = None  # Gymnasium reset seeds (host backend only)

    @property
    def seed_scores(self) -> np.ndarray:
        """Mean normalized score of each seed, ``(seeds,)``."""
        return self.normalized.mean(axis=1)


def _num_seeds(params) -> int:
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("policy parameters have no arrays; expected a leading seed axis")
    return int(leaves[0].shape[0])


def _batched_policy(act_fn: ActFn, deterministic: bool):
    """``(params (S,...), obs (S,E,obs), key) -> actions (S,E,act)``: one seed's key per seed."""
    per_seed = jax.vmap(lambda p, o, k: act_fn(p, o, k, deterministic))

    def policy(params, obs, key):
        return per_seed(params, obs, jax.random.split(key, obs.shape[0]))

    return policy


class Evaluator:
    """``Evaluator(env, act_fn, num_episodes)(params, key) -> EvalResult``.

    ``max_steps`` defaults to the environment's episode length (1000).
    """

    def __init__(self, env: str, act_fn: ActFn, num_episodes: int = 10, backend: str = "host",
                 max_steps: int | None = None, deterministic: bool = True):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, found {backend!r}")
        self.spec = get_env_spec(env)
        self.num_episodes = num_episodes
        self.backend = backend
        self.max_steps = max_steps or self.spec.episode_length
        policy = _batched_policy(act_fn, deterministic)
        if backend == "host":
            self._policy = jax.jit(policy)
            self._envs = None
        else:
            from offrl_jax.envs.mjx_env import make_mjx_env

            self._mjx_env = make_mjx_env(env)
            self._device_rollout = jax.jit(self._make_device_rollout(policy))

    def __call__(self, params, key) -> EvalResult:
        seeds = None
        if self.backend == "host":
            returns, lengths, seeds = self._run_host(params, key)
        else:
            returns, lengths = jax.device_get(self._device_rollout(params, key))
        returns = np.asarray(returns, np.float64)
        return EvalResult(returns, np.asarray(lengths),
                          normalized_score(self.spec.name, returns), seeds)

    def _run_host(self, params, key):
        from offrl_jax.envs.host import HostVectorEnv

        num_seeds, num_episodes = _num_seeds(params), self.num_episodes
        num_envs = num_seeds * num_episodes
        if self._envs is None or self._envs.num_envs != num_envs:
            self._envs = HostVectorEnv(self.spec.name, num_envs)
        reset_key, key = jax.random.split(key)
        seeds = np.asarray(jax.random.randint(reset_key, (num_envs,), 0, 2**31 - 1))
        obs = self._envs.reset(seeds)
        returns = np.zeros(num_envs)
        lengths = np.zeros(num_envs, np.int32)
        active = np.ones(num_envs, bool)
        for t in range(self.max_steps):
            obs_batch = obs.reshape(num_seeds, num_episodes, -1)
            actions = self._policy(params, obs_batch, jax.random.fold_in(key, t))
            obs, rewards, terminated, truncated = self._envs.step(
                np.asarray(actions).reshape(num_envs, -1), active)
            returns += np.where(active, rewards, 0.0)
            lengths += active
            active &= ~(terminated | truncated)
            if not active.any():
                break
        shape = (num_seeds, num_episodes)
        return returns.reshape(shape), lengths.reshape(shape), seeds.reshape(shape)

    def _make_device_rollout(self, policy):
        env, num_episodes, max_steps = self._mjx_env, self.num_episodes, self.max_steps
        reset = jax.vmap(jax.vmap(env.reset))
        step = jax.vmap(jax.vmap(env.step))

        def rollout(params, key):
            num_seeds = _num_seeds(params)
            reset_key, key = jax.random.split(key)
            keys = jax.random.split(reset_key, num_seeds * num_episodes)
            state = reset(keys.reshape(num_seeds, num_episodes, *keys.shape[1:]))
            zeros = jnp.zeros((num_seeds, num_episodes))

            def body(carry, t):
                state, returns, lengths = carry
                alive = ~state.done
                actions = policy(params, state.obs, jax.random.fold_in(key, t))
                state = step(state, actions)
                returns = returns + jnp.where(alive, state.reward, 0.0)
                lengths = lengths + alive
                return (state, returns, lengths), None

            (_, returns, lengths), _ = jax.lax.scan(
                body, (state, zeros, zeros.astype(jnp.int32)), jnp.arange(max_steps))
            return returns, lengths

        return rollout
