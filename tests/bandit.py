"""A one-step task with a known optimum, shared by the algorithms' learning tests.

States are Gaussian; the reward is ``-|a - a*(s)|^2`` with ``a*(s) = tanh(W s)``; every episode
is one step long (terminal), so returns are rewards and a policy's quality is its regret
``E|pi(s) - a*(s)|^2``, measured without an environment.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from offrl_jax.data import Dataset
from offrl_jax.tasks import get_env_spec
from offrl_jax.training.loop import make_interval_fn

HOPPER = get_env_spec("hopper")


def always_done(next_obs):
    return jnp.ones(next_obs.shape[:-1], bool)


# One-step episodes: every model rollout ends after its first step, like the data.
BANDIT_SPEC = dataclasses.replace(HOPPER, name="bandit", termination_fn=always_done)


def bandit_dataset(narrow: bool = False, num=2000, seed=0):
    """Half the actions near-optimal; the other half uniform (broad: every action is seen) or
    near a*(s) + 0.6 (narrow: most actions are never seen). Both make BC's mean miss a*.
    Returns ``(dataset, W)``."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(num, HOPPER.obs_dim)).astype(np.float32)
    w = np.random.default_rng(99).normal(size=(HOPPER.obs_dim, HOPPER.act_dim)) * 0.3
    best = np.tanh(obs @ w)
    good = rng.random(num) < 0.5
    noise = 0.05 * rng.normal(size=best.shape)
    bad = best + 0.6 + noise if narrow else rng.uniform(-1, 1, best.shape)
    actions = np.clip(np.where(good[:, None], best + noise, bad), -1, 1).astype(np.float32)
    rewards = -np.sum((actions - best) ** 2, axis=1).astype(np.float32)
    ones = np.ones(num, np.float32)
    data = Dataset.from_arrays(observations=obs, actions=actions, rewards=rewards,
                               next_observations=obs, terminals=ones, timeouts=0 * ones,
                               episode_ids=np.arange(num))
    return data, w


def regret(act_fn, state, w, seed=1):
    """Mean |pi(s) - a*(s)|^2 of the deterministic policy on fresh states."""
    obs = np.random.default_rng(seed).normal(size=(1000, HOPPER.obs_dim)).astype(np.float32)
    actions = np.asarray(act_fn(state, jnp.asarray(obs), jax.random.PRNGKey(0), True))
    return float(np.mean(np.sum((actions - np.tanh(obs @ w)) ** 2, axis=1)))


def compiled_program(algorithm, config, spec, data, num_rows, eval_every):
    """(init, interval) compiled for ``num_rows`` vmapped rows (seeds or sweep values), composed
    as the Trainer does (``make_interval_fn`` vmapped, dataset shared)."""
    made = algorithm.make(config, spec)
    keys = jnp.stack([jax.random.PRNGKey(0)] * num_rows)
    init = jax.jit(jax.vmap(lambda k, d: made.init(k, d), in_axes=(0, None)))
    state_shapes = jax.eval_shape(init, keys, data)
    interval = jax.jit(jax.vmap(make_interval_fn(made, eval_every),
                                in_axes=(0, 0, None, 0)))
    failed = jnp.zeros(num_rows, bool)
    return (init.lower(keys, data).compile(),
            interval.lower(state_shapes, failed, data, keys).compile())


def train_rows(interval, state, data, keys, intervals, **leaves):
    """Run ``intervals`` compiled intervals from ``state`` (rows vmapped), with the named state
    leaves set per row first. Returns (the state after each interval, their metrics, failed)."""
    state = state.replace(**{k: jnp.asarray(v, jnp.float32) for k, v in leaves.items()})
    failed = jnp.zeros(keys.shape[0], bool)
    states, metrics = [], []
    for i in range(intervals):
        interval_keys = jax.vmap(lambda k, i=i: jax.random.fold_in(k, i))(keys)
        state, failed, m = interval(state, failed, data, interval_keys)
        states.append(state)
        metrics.append(jax.tree_util.tree_map(np.asarray, m))
    return states, metrics, np.asarray(failed)
