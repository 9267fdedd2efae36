"""TD3+BC (Fujimoto & Gu, 2021): TD3 with a behaviour-cloning term in the actor loss, as pure
functions.

0. States are standardised by the dataset's per-dimension mean and std (``normalize_states``),
   computed once in ``init`` and kept in the state; ``act`` applies them too;
1. the critic step: each of the twin critics towards ``r + gamma (1 - done) min_i Q'_i(s',
   a~')``, where ``a~'`` is the target actor's action with clipped Gaussian noise (TD3's target
   policy smoothing, :mod:`offrl_jax.parts.td3`);
2. every ``policy_freq``-th update, the actor step on :func:`actor_loss`, ``-lambda
   mean Q_1(s, pi(s)) + mean (pi(s) - a)^2`` with ``lambda = alpha / mean|Q_1(s, pi(s))|``
   held constant, then the soft update of the target actor and critics.

``alpha`` is ``state.alpha``, a float32 leaf of the state initialised from ``config.alpha``, so
a sweep over it trains as one compiled program. Every default's source:
``docs/algorithms.md#td3bc``.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from offrl_jax.algorithms.base import Algorithm, Registration
from offrl_jax.data import sample_batch
from offrl_jax.parts import td3


@dataclasses.dataclass(frozen=True)
class TD3BCConfig:
    td3: td3.Config = td3.Config()
    batch_size: int = 256
    alpha: float = 2.5  # only the initial value of state.alpha
    normalize_states: bool = True


@flax.struct.dataclass
class TD3BCState:
    agent: td3.State
    obs_mean: jax.Array  # (obs,)
    obs_std: jax.Array  # (obs,), the dataset's std + td3.STATE_STD_EPS
    alpha: jax.Array  # () float32


def actor_loss(q, policy_actions, data_actions, alpha):
    """TD3+BC's actor loss ``-lambda mean(q) + mean((pi(s) - a)^2)`` (the squared error
    averaged over the batch and the action dimensions, as official ``F.mse_loss``) and
    ``lambda = alpha / mean|q|`` (:func:`~offrl_jax.parts.td3.normalized_lambda`, no gradient).
    ``q (B,)`` is the first critic at the policy's actions ``(B, act)``."""
    lam = td3.normalized_lambda(q, alpha)
    return -lam * jnp.mean(q) + jnp.mean((policy_actions - data_actions) ** 2), lam


@dataclasses.dataclass(frozen=True)
class TD3BC(Algorithm):
    """``TD3BC(config, spec)``; ``spec`` needs ``obs_dim`` and ``act_dim``."""

    config: TD3BCConfig
    name = "td3bc"

    def __post_init__(self):
        self._parts(agent=td3.Agent(self.config.td3, self.spec.obs_dim, self.spec.act_dim))

    def init(self, key, dataset=None, pretrained=None) -> TD3BCState:
        """Step 0: the agent, and the state statistics of ``dataset`` (none without one)."""
        enabled = self.config.normalize_states and dataset is not None
        observations = dataset.observations if dataset is not None else jnp.zeros(
            (1, self.spec.obs_dim))
        mean, std = td3.state_moments(observations, enabled)
        return TD3BCState(self.agent.init(key), mean, std,
                          jnp.asarray(self.config.alpha, jnp.float32))

    @staticmethod
    def normalize(state: TD3BCState, obs):
        return (obs - state.obs_mean) / state.obs_std

    def update(self, state: TD3BCState, dataset, key):
        agent, gamma = self.agent, self.config.td3.gamma
        batch_key, noise_key = jax.random.split(key)
        batch = sample_batch(dataset, batch_key, self.config.batch_size)
        obs = self.normalize(state, batch.observations)
        next_obs = self.normalize(state, batch.next_observations)

        # Step 1: the twin critics towards r + gamma (1 - done) min_i Q'_i(s', a~').
        next_actions = agent.target_action(state.agent, next_obs, noise_key)
        target = batch.rewards + gamma * (1.0 - batch.terminals) * agent.target_q(
            state.agent, next_obs, next_actions)
        agent_state, critic_metrics = agent.critic_step(state.agent, obs, batch.actions, target)

        # Step 2 (every policy_freq-th update): the actor on -lambda Q_1(s, pi(s)) + BC.
        def loss_fn(actor_params):
            actions = agent.act(actor_params, obs)
            q = agent.q(agent_state.critic_params, obs, actions)[0]
            loss, lam = actor_loss(q, actions, batch.actions, state.alpha)
            return loss, jax.lax.stop_gradient({
                "lambda": lam, "q_policy": jnp.mean(q),
                "bc_mse": jnp.mean((actions - batch.actions) ** 2)})

        agent_state, actor_metrics = agent.delayed_actor_step(agent_state, loss_fn)
        return state.replace(agent=agent_state), {**critic_metrics, **actor_metrics}

    def act(self, state: TD3BCState, obs, key, deterministic: bool = True):
        """The actor's action for raw observations (normalised here). A deterministic policy:
        ``key`` and ``deterministic`` change nothing."""
        return self.agent.act(state.agent.actor_params, self.normalize(state, obs))


ALGORITHM = Registration("td3bc", TD3BCConfig, TD3BC)
