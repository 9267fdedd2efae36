"""Policy evaluation over seeds x episodes, on the host (Gymnasium) or on the device (MJX).

A policy is given as ``act_fn(params, obs, key, deterministic) -> actions`` for ONE seed, with
``obs`` of shape ``(episodes, obs_dim)`` and actions ``(episodes, act_dim)``; ``params`` passed to
the evaluator carry a leading seed axis ``(seeds, ...)``. The evaluator vmaps ``act_fn`` over
seeds and jits it once, when the evaluator is made: calling it again with parameters of the same
shapes reuses the compiled program (``docs/algorithms.md#pitfall-7``).

- host backend: one jitted policy call per environment step for all seeds x episodes; the
  environments are Gymnasium v4, the reference for scores (or the environment a Minari
  dataset's metadata names, e.g. v5, for a task named by its Minari id).
- device backend: reset, policy and MJX physics for every step of every episode in one compiled
  ``lax.scan``, so a GPU evaluates all seeds x episodes without leaving the device. It runs the
  built-in v4 environments only (:func:`check_backend`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from offrl_jax.tasks import get_env_spec, normalized_score
from offrl_jax.tasks.specs import ENV_SPECS, is_builtin_env

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


def check_backend(env: str, backend: str) -> None:
    """Raise ValueError unless ``backend`` can evaluate ``env``: the device backend (MJX)
    reproduces the built-in Gymnasium v4 environments only, not a Minari dataset's (v5)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, found {backend!r}")
    if backend == "device" and not is_builtin_env(env):
        raise ValueError(
            f"environment {env!r} ({get_env_spec(env).gym_id}): the device backend (MJX) runs "
            f"the built-in Gymnasium v4 environments only ({', '.join(sorted(ENV_SPECS))}); "
            f"evaluate it with the host backend (--eval-backend host)")


def _num_seeds(params) -> int:
    leaves = jax.tree_util.tree_leaves(params)
    if not leaves:
        raise ValueError("policy parameters have no arrays; expected a leading seed axis")
    return int(leaves[0].shape[0])


def _check_groups(num_rows: int, groups: int) -> None:
    if groups < 1 or num_rows % groups:
        raise ValueError(f"Evaluator: {num_rows} parameter rows do not split into {groups} "
                         f"equal groups")


def _group_keys(key, num_rows: int, groups: int):
    """``num_rows`` keys, ``groups`` repeats of the same ``num_rows // groups`` keys."""
    _check_groups(num_rows, groups)
    keys = jax.random.split(key, num_rows // groups)
    return jnp.tile(keys, (groups,) + (1,) * (keys.ndim - 1))


def _batched_policy(act_fn: ActFn, deterministic: bool):
    """``(params (S,...), obs (S,E,obs), key, groups) -> actions (S,E,act)``: one key per seed,
    the same keys in each of ``groups`` consecutive groups of seeds."""
    per_seed = jax.vmap(lambda p, o, k: act_fn(p, o, k, deterministic))

    def policy(params, obs, key, groups=1):
        return per_seed(params, obs, _group_keys(key, obs.shape[0], groups))

    return policy


class Evaluator:
    """``Evaluator(env, act_fn, num_episodes)(params, key, groups=1) -> EvalResult``.

    ``max_steps`` defaults to the environment's episode length (1000). ``groups`` splits the
    parameter rows into that many consecutive groups that all meet the same episodes (reset
    seeds and policy keys) as one group evaluated alone with ``key``: a hyperparameter sweep's
    values x seeds rows, each value compared on the same start states.
    """

    def __init__(self, env: str, act_fn: ActFn, num_episodes: int = 10, backend: str = "host",
                 max_steps: int | None = None, deterministic: bool = True):
        check_backend(env, backend)
        self.spec = get_env_spec(env)
        self.num_episodes = num_episodes
        self.backend = backend
        self.max_steps = max_steps or self.spec.episode_length
        policy = _batched_policy(act_fn, deterministic)
        if backend == "host":
            self._policy = jax.jit(policy, static_argnums=3)
            self._envs = None
        else:
            from offrl_jax.envs.mjx_env import make_mjx_env

            self._mjx_env = make_mjx_env(env)
            self._device_rollout = jax.jit(self._make_device_rollout(policy), static_argnums=2)

    def __call__(self, params, key, groups: int = 1) -> EvalResult:
        _check_groups(_num_seeds(params), groups)
        seeds = None
        if self.backend == "host":
            returns, lengths, seeds = self._run_host(params, key, groups)
        else:
            returns, lengths = jax.device_get(self._device_rollout(params, key, groups))
        returns = np.asarray(returns, np.float64)
        return EvalResult(returns, np.asarray(lengths),
                          normalized_score(self.spec.name, returns), seeds)

    def _run_host(self, params, key, groups: int):
        from offrl_jax.envs.host import HostVectorEnv

        num_seeds, num_episodes = _num_seeds(params), self.num_episodes
        num_envs = num_seeds * num_episodes
        if self._envs is None or self._envs.num_envs != num_envs:
            self._envs = HostVectorEnv(self.spec.name, num_envs)
        reset_key, key = jax.random.split(key)
        seeds = np.asarray(jax.random.randint(reset_key, (num_envs // groups,), 0, 2**31 - 1))
        seeds = np.tile(seeds, groups)
        obs = self._envs.reset(seeds)
        returns = np.zeros(num_envs)
        lengths = np.zeros(num_envs, np.int32)
        active = np.ones(num_envs, bool)
        for t in range(self.max_steps):
            obs_batch = obs.reshape(num_seeds, num_episodes, -1)
            actions = self._policy(params, obs_batch, jax.random.fold_in(key, t), groups)
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

        def rollout(params, key, groups):
            num_seeds = _num_seeds(params)
            reset_key, key = jax.random.split(key)
            keys = _group_keys(reset_key, num_seeds * num_episodes, groups)
            state = reset(keys.reshape(num_seeds, num_episodes, *keys.shape[1:]))
            zeros = jnp.zeros((num_seeds, num_episodes))

            def body(carry, t):
                state, returns, lengths = carry
                alive = ~state.done
                actions = policy(params, state.obs, jax.random.fold_in(key, t), groups)
                state = step(state, actions)
                returns = returns + jnp.where(alive, state.reward, 0.0)
                lengths = lengths + alive
                return (state, returns, lengths), None

            (_, returns, lengths), _ = jax.lax.scan(
                body, (state, zeros, zeros.astype(jnp.int32)), jnp.arange(max_steps))
            return returns, lengths

        return rollout
