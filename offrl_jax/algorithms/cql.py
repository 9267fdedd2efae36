"""Conservative Q-learning (Kumar et al., 2020), SAC-based, as a pure update function.

Critics minimise the Bellman error plus ``cql_weight`` times the conservative penalty of
:mod:`offrl_jax.algorithms.conservative` (10 sampled actions per kind, temperature 1). With
``lagrange=True`` the weight is a learned multiplier that holds the penalty near
``target_action_gap``. The actor and temperature steps are SAC's.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import optax

from offrl_jax.algorithms import sac
from offrl_jax.algorithms.base import Algorithm
from offrl_jax.algorithms.conservative import conservative_penalty, sampled_actions
from offrl_jax.data import sample_batch


@dataclasses.dataclass(frozen=True)
class CQLConfig:
    hidden_dims: tuple[int, ...] = (256, 256, 256)
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 1e-4
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 256
    cql_weight: float = 5.0
    temperature: float = 1.0
    num_samples: int = 10
    lagrange: bool = False
    target_action_gap: float = 10.0
    lagrange_lr: float = 3e-4
    backup_entropy: bool = False

    def sac_config(self) -> sac.SACConfig:
        return sac.config_from(self)


@flax.struct.dataclass
class CQLState:
    sac: sac.SACState
    log_alpha_prime: jax.Array
    alpha_prime_opt: optax.OptState
    config: CQLConfig = flax.struct.field(pytree_node=False)


def init(key, spec, config: CQLConfig = CQLConfig(), dataset=None) -> CQLState:
    log_alpha_prime = jnp.zeros(())
    return CQLState(sac.init(key, spec, config.sac_config()), log_alpha_prime,
                    optax.adam(config.lagrange_lr).init(log_alpha_prime), config)


def conservative_critic_step(state: sac.SACState, config, push_down_obs, next_obs_for_pi,
                             real_batch, bellman_batch, key, weight):
    """One critic step on Bellman error (on ``bellman_batch``) + ``weight`` x penalty.

    Shared by CQL (all batches real) and COMBO (push-down and Bellman batches mixed).
    Returns the new SAC state, the per-member penalty and metrics.
    """
    target_key, sample_key = jax.random.split(key)
    _, critic_tx, _ = sac.optimizers(state.config)
    target = jax.lax.stop_gradient(sac.soft_td_target(state, bellman_batch, target_key,
                                                      config.backup_entropy))
    policy_sample = lambda o, k: sac.policy_sample(state, state.actor_params, o, k)  # noqa: E731
    actions, log_probs = sampled_actions(sample_key, policy_sample, push_down_obs,
                                         next_obs_for_pi, state.act_dim, config.num_samples)

    def loss_fn(critic_params):
        q_fn = lambda o, a: sac.q_values(state, critic_params, o, a)  # noqa: E731
        q = q_fn(bellman_batch.observations, bellman_batch.actions)
        bellman = jnp.mean(jnp.sum((q - target) ** 2, axis=0))
        data_q = q_fn(real_batch.observations, real_batch.actions)
        penalty = conservative_penalty(q_fn, push_down_obs, actions, log_probs, data_q,
                                       config.temperature)
        return bellman + jnp.sum(weight * penalty), (bellman, penalty, q)

    (_, (bellman, penalty, q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.critic_params)
    updates, critic_opt = critic_tx.update(grads, state.critic_opt, state.critic_params)
    critic_params = optax.apply_updates(state.critic_params, updates)
    state = state.replace(critic_params=critic_params, critic_opt=critic_opt,
                          target_critic_params=sac.target_critic_update(
                              state, critic_params, state.target_critic_params))
    return state, penalty, {"bellman_loss": bellman, "q_mean": q.mean(),
                            "conservative_penalty": penalty.mean()}


def update(state: CQLState, dataset, key):
    config = state.config
    batch_key, critic_key, actor_key = jax.random.split(key, 3)
    batch = sample_batch(dataset, batch_key, config.batch_size)
    if config.lagrange:
        weight = jnp.clip(jnp.exp(state.log_alpha_prime), 0.0, 1e6) * config.cql_weight
        weight = jax.lax.stop_gradient(weight)
    else:
        weight = config.cql_weight
    sac_state, penalty, metrics = conservative_critic_step(
        state.sac, config, batch.observations, batch.next_observations, batch, batch,
        critic_key, weight)
    log_alpha_prime, alpha_prime_opt = state.log_alpha_prime, state.alpha_prime_opt
    if config.lagrange:
        # Gradient ascent on alpha' * (penalty - gap): d(-loss)/d log alpha'.
        gap = jax.lax.stop_gradient(penalty.mean() - config.target_action_gap)
        grad = -jnp.exp(log_alpha_prime) * config.cql_weight * gap
        step, alpha_prime_opt = optax.adam(config.lagrange_lr).update(grad, alpha_prime_opt)
        log_alpha_prime = optax.apply_updates(log_alpha_prime, step)
        metrics["alpha_prime"] = jnp.exp(log_alpha_prime)
    sac_state, actor_metrics = sac.update_actor_and_alpha(sac_state, batch, actor_key)
    sac_state = sac_state.replace(step=sac_state.step + 1)
    return (state.replace(sac=sac_state, log_alpha_prime=log_alpha_prime,
                          alpha_prime_opt=alpha_prime_opt), {**metrics, **actor_metrics})


def act(state: CQLState, obs, key, deterministic: bool = True):
    return sac.act(state.sac, obs, key, deterministic)


ALGORITHM = Algorithm("cql", CQLConfig, init, update, act)
