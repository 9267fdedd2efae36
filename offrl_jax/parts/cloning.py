"""Behaviour cloning: a tanh-Gaussian policy fit by maximum likelihood to the dataset's actions.

The BC baseline is this part alone; ATAC's and ARMOR's warm start clone the behaviour policy
with it (:func:`offrl_jax.parts.atac.warm_start`).
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import optax

from offrl_jax.data import sample_batch
from offrl_jax.networks import (
    TanhGaussianPolicy,
    check_init,
    squashed_action,
    tanh_gaussian_log_prob_of_action,
)
from offrl_jax.parts import config_repr, quiet_setting, set_parts


@dataclasses.dataclass(frozen=True)
class Config:
    hidden_dims: tuple[int, ...] = (256, 256)
    learning_rate: float = 1e-3
    batch_size: int = 256
    # The policy's initialisation scheme (offrl_jax.networks.INITS).
    init: str = quiet_setting("flax")

    __repr__ = config_repr

    def __post_init__(self):
        check_init(self.init)


@flax.struct.dataclass
class State:
    actor_params: dict
    opt_state: optax.OptState
    step: jax.Array


@dataclasses.dataclass(frozen=True)
class Cloner:
    """``Cloner(config, obs_dim, act_dim)``: the policy and its optimizer, built once."""

    config: Config
    obs_dim: int
    act_dim: int

    def __post_init__(self):
        set_parts(self, policy=TanhGaussianPolicy(self.config.hidden_dims, self.act_dim,
                                                  init_scheme=self.config.init),
                  tx=optax.adam(self.config.learning_rate))

    def init(self, key) -> State:
        params = self.policy.init(key, jnp.zeros((1, self.obs_dim)))
        return self.state_from(params)

    def state_from(self, actor_params) -> State:
        """A fresh optimizer around given actor parameters."""
        return State(actor_params, self.tx.init(actor_params), jnp.zeros((), jnp.int32))

    def log_likelihood(self, actor_params, observations, actions):
        """``(B,)`` log pi(a|s) of the given actions."""
        mean, log_std = self.policy.apply(actor_params, observations)
        return tanh_gaussian_log_prob_of_action(mean, log_std, actions)

    def update(self, state: State, dataset, key):
        """One maximum-likelihood step on a minibatch of ``dataset``: ``(state, metrics)``."""
        batch = sample_batch(dataset, key, self.config.batch_size)
        return self.update_on(state, batch.observations, batch.actions, key)

    def update_on(self, state: State, observations, actions, key):
        """One maximum-likelihood step on given ``(observations, actions)`` (another policy's
        actions, to clone it): ``(state, metrics)``."""

        def loss_fn(params):
            return -jnp.mean(self.log_likelihood(params, observations, actions))

        loss, grads = jax.value_and_grad(loss_fn)(state.actor_params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.actor_params)
        params = optax.apply_updates(state.actor_params, updates)
        mse = jnp.mean((self.act(state, observations, key) - actions) ** 2)
        return (state.replace(actor_params=params, opt_state=opt_state, step=state.step + 1),
                {"nll": loss, "action_mse": mse})

    def act(self, state: State, obs, key, deterministic: bool = True):
        mean, log_std = self.policy.apply(state.actor_params, obs)
        return squashed_action(mean, log_std, key, deterministic)
