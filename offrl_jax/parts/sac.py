"""The SAC agent part: soft actor-critic (Haarnoja et al., 2018) as pure functions.

The agent of the behaviour policies (dataset generation), MOPO, COMBO, MOReL, RAMBO and CQL,
and the actor-critic of ATAC and ARMOR, which replace its losses but keep its networks and
optimizers. Tanh-Gaussian actor, an ensemble of ``num_qs`` critics with target copies, automatic
entropy tuning towards ``-act_dim``. ``batch`` is any pytree with fields ``observations (B,
obs)``, ``actions (B, act)``, ``rewards (B,)``, ``next_observations (B, obs)`` and ``terminals
(B,)``. Every default's source: ``docs/algorithms.md#sac-agent``.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import optax

from offrl_jax.networks import (
    QEnsemble,
    TanhGaussianPolicy,
    sample_tanh_gaussian,
    squashed_action,
)


@dataclasses.dataclass(frozen=True)
class Config:
    """The agent's networks, rates and TD target; an algorithm's config nests one as ``agent``
    with its own values (``mopo.MOPOConfig().agent.actor_lr == 1e-4``)."""

    hidden_dims: tuple[int, ...] = (256, 256)
    num_qs: int = 2
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    init_alpha: float = 1.0
    target_entropy: float | None = None  # None: -act_dim
    backup_entropy: bool = True  # the -alpha log pi(a'|s') term of the TD target


@flax.struct.dataclass
class State:
    actor_params: dict
    critic_params: dict
    target_critic_params: dict
    log_alpha: jax.Array
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    alpha_opt: optax.OptState
    step: jax.Array
    config: Config = flax.struct.field(pytree_node=False)
    act_dim: int = flax.struct.field(pytree_node=False)


def _actor(config, act_dim):
    return TanhGaussianPolicy(config.hidden_dims, act_dim)


def _critic(config):
    return QEnsemble(config.hidden_dims, config.num_qs)


def optimizers(config):
    return (optax.adam(config.actor_lr), optax.adam(config.critic_lr),
            optax.adam(config.alpha_lr))


def init(key, spec, config: Config = Config()) -> State:
    """``spec`` is anything with ``obs_dim`` and ``act_dim`` (an ``EnvSpec``)."""
    actor_key, critic_key = jax.random.split(key)
    obs = jnp.zeros((1, spec.obs_dim))
    act = jnp.zeros((1, spec.act_dim))
    actor_params = _actor(config, spec.act_dim).init(actor_key, obs)
    critic_params = _critic(config).init(critic_key, obs, act)
    log_alpha = jnp.log(jnp.asarray(config.init_alpha, jnp.float32))
    actor_tx, critic_tx, alpha_tx = optimizers(config)
    return State(
        actor_params=actor_params,
        critic_params=critic_params,
        target_critic_params=critic_params,
        log_alpha=log_alpha,
        actor_opt=actor_tx.init(actor_params),
        critic_opt=critic_tx.init(critic_params),
        alpha_opt=alpha_tx.init(log_alpha),
        step=jnp.zeros((), jnp.int32),
        config=config,
        act_dim=spec.act_dim,
    )


def policy_sample(state: State, actor_params, obs, key):
    """Sampled actions ``(..., act)`` and their log-probabilities ``(...)``."""
    mean, log_std = _actor(state.config, state.act_dim).apply(actor_params, obs)
    return sample_tanh_gaussian(mean, log_std, key)


def act(state: State, obs, key, deterministic: bool = True):
    mean, log_std = _actor(state.config, state.act_dim).apply(state.actor_params, obs)
    return squashed_action(mean, log_std, key, deterministic)


def q_values(state: State, critic_params, obs, act):
    """``(num_qs, ...)`` Q-values."""
    return _critic(state.config).apply(critic_params, obs, act)


def target_critic_update(state: State, critic_params, target_params):
    tau = state.config.tau
    return optax.incremental_update(critic_params, target_params, tau)


def soft_td_target(state: State, batch, key):
    """``r + gamma (1 - done) (min_i Q'_i(s', a') - alpha log pi(a'|s'))``, ``(B,)``; without
    the entropy term when ``config.backup_entropy`` is False."""
    next_act, next_logp = policy_sample(state, state.actor_params, batch.next_observations, key)
    next_q = q_values(state, state.target_critic_params, batch.next_observations, next_act).min(0)
    if state.config.backup_entropy:
        next_q = next_q - jnp.exp(state.log_alpha) * next_logp
    return batch.rewards + state.config.gamma * (1.0 - batch.terminals) * next_q


def update_actor_and_alpha(state: State, batch, key):
    """One actor step maximising ``min_i Q_i - alpha log pi`` and one temperature step."""
    config = state.config
    actor_tx, _, alpha_tx = optimizers(config)
    alpha = jnp.exp(state.log_alpha)

    def actor_loss(actor_params):
        actions, logp = policy_sample(state, actor_params, batch.observations, key)
        q = q_values(state, state.critic_params, batch.observations, actions).min(0)
        return jnp.mean(alpha * logp - q), logp

    (loss, logp), grads = jax.value_and_grad(actor_loss, has_aux=True)(state.actor_params)
    updates, actor_opt = actor_tx.update(grads, state.actor_opt, state.actor_params)
    actor_params = optax.apply_updates(state.actor_params, updates)

    target_entropy = (-float(state.act_dim) if config.target_entropy is None
                      else config.target_entropy)
    entropy_gap = jax.lax.stop_gradient(-logp.mean() - target_entropy)
    alpha_grad = entropy_gap  # d/dlog_alpha of log_alpha * (entropy - target)
    alpha_updates, alpha_opt = alpha_tx.update(alpha_grad, state.alpha_opt, state.log_alpha)
    log_alpha = optax.apply_updates(state.log_alpha, alpha_updates)
    state = state.replace(actor_params=actor_params, actor_opt=actor_opt,
                          log_alpha=log_alpha, alpha_opt=alpha_opt)
    return state, {"actor_loss": loss, "alpha": alpha, "entropy": -logp.mean()}


def update(state: State, batch, key):
    """One SAC step: critics towards the soft TD target, then actor and temperature."""
    critic_key, actor_key = jax.random.split(key)
    _, critic_tx, _ = optimizers(state.config)
    target = jax.lax.stop_gradient(soft_td_target(state, batch, critic_key))

    def critic_loss(critic_params):
        q = q_values(state, critic_params, batch.observations, batch.actions)
        return jnp.mean(jnp.sum((q - target) ** 2, axis=0)), q

    (loss, q), grads = jax.value_and_grad(critic_loss, has_aux=True)(state.critic_params)
    updates, critic_opt = critic_tx.update(grads, state.critic_opt, state.critic_params)
    critic_params = optax.apply_updates(state.critic_params, updates)
    state = state.replace(
        critic_params=critic_params, critic_opt=critic_opt,
        target_critic_params=target_critic_update(state, critic_params,
                                                  state.target_critic_params))
    state, actor_metrics = update_actor_and_alpha(state, batch, actor_key)
    state = state.replace(step=state.step + 1)
    return state, {"critic_loss": loss, "q_mean": q.mean(), **actor_metrics}
