"""ReBRAC (Tarasov et al., 2023): TD3+BC with decoupled actor and critic behaviour-cloning
penalties, LayerNorm critics, deeper networks and larger batches, as pure functions.

Per update, on a minibatch of dataset rows, each with the dataset's next action
(:func:`sample_with_next_actions`):

1. the critic step: each critic towards :func:`critic_target`, ``r + gamma (1 - done)
   (min_i Q'_i(s', a~') - critic_beta ||a~' - a'||^2)``, where ``a~'`` is the target actor's
   smoothed action (:mod:`offrl_jax.parts.td3`) and ``a'`` the action the dataset took in
   ``s'``: the critic's own BC penalty;
2. every ``policy_freq``-th update, the actor step on :func:`actor_loss`, ``mean(actor_beta
   ||pi(s) - a||^2 - lambda min_i Q_i(s, pi(s)))`` with ``lambda = 1 / mean|min_i Q_i(s,
   pi(s))|`` held constant (``normalize_q``), then the soft update of the target networks.

The ``Dataset`` has no next-action field; a row's next action is the action of the following
row when that row continues the same episode. Rows without one (the last row of an episode: a
terminal, a time-limit cut or the end of the data) get no critic penalty; for terminal rows the
bootstrap, penalty included, is zero anyway. ``actor_beta`` and ``critic_beta`` are float32
leaves of the state (initialised from the config), so a sweep over them trains as one compiled
program. Per-dataset betas are in :data:`TASK_SETTINGS`; every default's source:
``docs/algorithms.md#rebrac``.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from offrl_jax.algorithms.base import Algorithm, Registration
from offrl_jax.parts import td3


@dataclasses.dataclass(frozen=True)
class ReBRACConfig:
    td3: td3.Config = td3.Config(hidden_dims=(256, 256, 256), critic_layer_norm=True,
                                 actor_lr=1e-3, critic_lr=1e-3)
    batch_size: int = 1024
    actor_beta: float = 1.0  # only the initial value of state.actor_beta
    critic_beta: float = 1.0  # only the initial value of state.critic_beta
    normalize_q: bool = True
    normalize_states: bool = False


@flax.struct.dataclass
class ReBRACState:
    agent: td3.State
    obs_mean: jax.Array  # (obs,)
    obs_std: jax.Array  # (obs,)
    actor_beta: jax.Array  # () float32
    critic_beta: jax.Array  # () float32


def sample_with_next_actions(dataset, key, batch_size: int):
    """``(batch, next_actions (B, act), has_next (B,))``: the rows :func:`sample_batch` draws
    for ``key``, the action of the row after each, and 1.0 where that row continues the same
    episode (0.0 at an episode's last row and at the end of the data, with ``next_actions``
    then a placeholder)."""
    indices = jax.random.randint(key, (batch_size,), 0, dataset.size)
    batch = jax.tree_util.tree_map(lambda field: jnp.take(field, indices, axis=0), dataset)
    following = jnp.minimum(indices + 1, dataset.size - 1)
    has_next = (indices + 1 < dataset.size) & (
        jnp.take(dataset.episode_ids, following) == batch.episode_ids)
    return batch, jnp.take(dataset.actions, following, axis=0), has_next.astype(jnp.float32)


def critic_target(rewards, terminals, next_q, next_actions, data_next_actions, has_next,
                  gamma, critic_beta):
    """ReBRAC's TD target ``r + gamma (1 - done) (next_q - critic_beta * has_next *
    ||a~' - a'||^2)`` ``(B,)``, and the penalty ``has_next * ||a~' - a'||^2`` ``(B,)`` (the
    squared distance summed over action dimensions, as official). ``next_q (B,)`` is ``min_i
    Q'_i(s', a~')`` at the smoothed target actions ``next_actions (B, act)``; ``a'`` are the
    dataset's next actions."""
    penalty = has_next * jnp.sum((next_actions - data_next_actions) ** 2, axis=-1)
    return rewards + gamma * (1.0 - terminals) * (next_q - critic_beta * penalty), penalty


def actor_loss(q, policy_actions, data_actions, actor_beta, normalize_q: bool):
    """ReBRAC's actor loss ``mean(actor_beta ||pi(s) - a||^2 - lambda q)`` and ``lambda``:
    ``1 / mean|q|`` without gradient (:func:`~offrl_jax.parts.td3.normalized_lambda`), or 1
    without ``normalize_q``. ``q (B,)`` is ``min_i Q_i(s, pi(s))``."""
    lam = td3.normalized_lambda(q, 1.0) if normalize_q else jnp.ones(())
    bc = jnp.sum((policy_actions - data_actions) ** 2, axis=-1)
    return jnp.mean(actor_beta * bc - lam * q), lam


@dataclasses.dataclass(frozen=True)
class ReBRAC(Algorithm):
    """``ReBRAC(config, spec)``; ``spec`` needs ``obs_dim`` and ``act_dim``."""

    config: ReBRACConfig
    name = "rebrac"

    def __post_init__(self):
        self._parts(agent=td3.Agent(self.config.td3, self.spec.obs_dim, self.spec.act_dim))

    def init(self, key, dataset=None, pretrained=None) -> ReBRACState:
        enabled = self.config.normalize_states and dataset is not None
        observations = dataset.observations if dataset is not None else jnp.zeros(
            (1, self.spec.obs_dim))
        mean, std = td3.state_moments(observations, enabled)
        return ReBRACState(self.agent.init(key), mean, std,
                           jnp.asarray(self.config.actor_beta, jnp.float32),
                           jnp.asarray(self.config.critic_beta, jnp.float32))

    @staticmethod
    def normalize(state: ReBRACState, obs):
        return (obs - state.obs_mean) / state.obs_std

    def update(self, state: ReBRACState, dataset, key):
        agent, config = self.agent, self.config
        batch_key, noise_key = jax.random.split(key)
        batch, data_next_actions, has_next = sample_with_next_actions(dataset, batch_key,
                                                                      config.batch_size)
        obs = self.normalize(state, batch.observations)
        next_obs = self.normalize(state, batch.next_observations)

        # Step 1: the critics towards the target with the critic's BC penalty.
        next_actions = agent.target_action(state.agent, next_obs, noise_key)
        target, penalty = critic_target(
            batch.rewards, batch.terminals, agent.target_q(state.agent, next_obs, next_actions),
            next_actions, data_next_actions, has_next, config.td3.gamma, state.critic_beta)
        agent_state, critic_metrics = agent.critic_step(state.agent, obs, batch.actions, target)

        # Step 2 (every policy_freq-th update): the actor on actor_beta BC - lambda min_i Q_i.
        def loss_fn(actor_params):
            actions = agent.act(actor_params, obs)
            q = agent.q(agent_state.critic_params, obs, actions).min(0)
            loss, lam = actor_loss(q, actions, batch.actions, state.actor_beta,
                                   config.normalize_q)
            return loss, jax.lax.stop_gradient({
                "lambda": lam, "q_policy": jnp.mean(q),
                "bc_mse": jnp.mean((actions - batch.actions) ** 2)})

        agent_state, actor_metrics = agent.delayed_actor_step(agent_state, loss_fn)
        return state.replace(agent=agent_state), {
            **critic_metrics, **actor_metrics, "critic_penalty": penalty.mean(),
            "has_next_action": has_next.mean()}

    def act(self, state: ReBRACState, obs, key, deterministic: bool = True):
        """The actor's action (``obs`` normalised when ``normalize_states``). A deterministic
        policy: ``key`` and ``deterministic`` change nothing."""
        return self.agent.act(state.agent.actor_params, self.normalize(state, obs))


# (actor_beta, critic_beta) per dataset: the authors' D4RL v2 configs, docs/algorithms.md#rebrac.
_BETAS = {
    "halfcheetah-random": (0.001, 0.1), "hopper-random": (0.001, 0.01),
    "walker2d-random": (0.01, 0.0),
    "halfcheetah-medium": (0.001, 0.01), "hopper-medium": (0.01, 0.01),
    "walker2d-medium": (0.05, 0.1),
    "halfcheetah-medium-replay": (0.01, 0.001), "hopper-medium-replay": (0.05, 0.5),
    "walker2d-medium-replay": (0.05, 0.01),
    "halfcheetah-medium-expert": (0.01, 0.1), "hopper-medium-expert": (0.1, 0.01),
    "walker2d-medium-expert": (0.01, 0.01),
    "halfcheetah-expert": (0.01, 0.01), "hopper-expert": (0.1, 0.1),
    "walker2d-expert": (0.01, 0.5),
}
TASK_SETTINGS = {task: {"actor_beta": actor, "critic_beta": critic}
                 for task, (actor, critic) in _BETAS.items()}

ALGORITHM = Registration("rebrac", ReBRACConfig, ReBRAC, TASK_SETTINGS)
