"""Behaviour cloning: a tanh-Gaussian policy fit by maximum likelihood to the dataset's actions.

A baseline of the poster's table and the reference policy pi_ref of ARMOR.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import optax

from offrl_jax.algorithms.base import Algorithm
from offrl_jax.data import sample_batch
from offrl_jax.networks import (
    TanhGaussianPolicy,
    squashed_action,
    tanh_gaussian_log_prob_of_action,
)


@dataclasses.dataclass(frozen=True)
class BCConfig:
    hidden_dims: tuple[int, ...] = (256, 256)
    learning_rate: float = 1e-3
    batch_size: int = 256


@flax.struct.dataclass
class BCState:
    actor_params: dict
    opt_state: optax.OptState
    step: jax.Array
    config: BCConfig = flax.struct.field(pytree_node=False)
    act_dim: int = flax.struct.field(pytree_node=False)


def _policy(config: BCConfig, act_dim: int):
    return TanhGaussianPolicy(config.hidden_dims, act_dim)


def init(key, spec, config: BCConfig = BCConfig(), dataset=None) -> BCState:
    params = _policy(config, spec.act_dim).init(key, jnp.zeros((1, spec.obs_dim)))
    return BCState(params, optax.adam(config.learning_rate).init(params),
                   jnp.zeros((), jnp.int32), config, spec.act_dim)


def log_likelihood(state: BCState, actor_params, observations, actions):
    """``(B,)`` log pi(a|s) of the given actions."""
    mean, log_std = _policy(state.config, state.act_dim).apply(actor_params, observations)
    return tanh_gaussian_log_prob_of_action(mean, log_std, actions)


def update(state: BCState, dataset, key):
    batch = sample_batch(dataset, key, state.config.batch_size)

    def loss_fn(params):
        return -jnp.mean(log_likelihood(state, params, batch.observations, batch.actions))

    loss, grads = jax.value_and_grad(loss_fn)(state.actor_params)
    updates, opt_state = optax.adam(state.config.learning_rate).update(
        grads, state.opt_state, state.actor_params)
    params = optax.apply_updates(state.actor_params, updates)
    mse = jnp.mean((act(state, batch.observations, key) - batch.actions) ** 2)
    return (state.replace(actor_params=params, opt_state=opt_state, step=state.step + 1),
            {"nll": loss, "action_mse": mse})


def act(state: BCState, obs, key, deterministic: bool = True):
    mean, log_std = _policy(state.config, state.act_dim).apply(state.actor_params, obs)
    return squashed_action(mean, log_std, key, deterministic)


ALGORITHM = Algorithm("bc", BCConfig, init, update, act)
