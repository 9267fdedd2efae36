"""The conservative critic term of CQL(H) (Kumar et al., 2020), the part CQL and COMBO share.

For each critic member i::

    penalty_i = E_s[ T * logsumexp_a(Q_i(s, a) / T) ] - E_(s,a)~data[ Q_i(s, a) ]

where the log-sum-exp runs over ALL sampled actions at once (``num_samples`` each of uniform,
current-policy at s, and current-policy at s'), each importance-corrected by its sampling
density, so it estimates log of the integral of exp(Q) over actions (CQL(H)). Only the sampled
actions are treated as constants: the gradient reaches the critic through both terms (no
stop-gradient on the push-down term; ``docs/algorithms.md#pitfalls``).

:func:`critic_step` is one critic step of the agent (:mod:`offrl_jax.parts.sac`) on its Bellman
error plus ``weight`` times this penalty. Defaults: ``docs/algorithms.md#conservative-term``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from offrl_jax.parts import sac


@dataclasses.dataclass(frozen=True)
class Config:
    num_samples: int = 10  # sampled actions per kind (uniform, pi(.|s), pi(.|s'))
    temperature: float = 1.0


def sampled_actions(key, policy_sample, obs, next_obs, act_dim: int, num_samples: int):
    """Actions ``(3, B, n, act)`` and their log-densities ``(3, B, n)``: uniform, pi(.|s),
    pi(.|s'). ``policy_sample(obs (B, n, obs), key) -> (actions, log_probs)``."""
    uniform_key, pi_key, next_key = jax.random.split(key, 3)
    batch = obs.shape[0]
    repeat = lambda x: jnp.broadcast_to(x[:, None], (batch, num_samples, x.shape[-1]))  # noqa: E731
    uniform = jax.random.uniform(uniform_key, (batch, num_samples, act_dim), minval=-1.0,
                                 maxval=1.0)
    uniform_logp = jnp.full((batch, num_samples), -act_dim * jnp.log(2.0))
    pi, pi_logp = policy_sample(repeat(obs), pi_key)
    next_pi, next_logp = policy_sample(repeat(next_obs), next_key)
    actions = jax.lax.stop_gradient(jnp.stack([uniform, pi, next_pi]))
    log_probs = jax.lax.stop_gradient(jnp.stack([uniform_logp, pi_logp, next_logp]))
    return actions, log_probs


def conservative_penalty(q_fn, obs, actions, log_probs, data_q, temperature: float = 1.0):
    """Per-member penalty ``(num_qs,)``.

    q_fn(obs (B, n, obs), act (B, n, act)) -> (num_qs, B, n); ``obs`` ``(B, obs)`` are the
    push-down states; ``actions``/``log_probs`` from :func:`sampled_actions`; ``data_q``
    ``(num_qs, B')`` the critics on dataset (s, a), pushed up.
    """
    kinds, batch, num_samples = log_probs.shape
    repeated = jnp.broadcast_to(obs[:, None], (batch, num_samples, obs.shape[-1]))
    q = jnp.stack([q_fn(repeated, actions[k]) for k in range(kinds)], axis=-1)
    # (num_qs, B, n, kinds) -> one log-sum-exp over all n * kinds sampled actions.
    corrected = (q - jnp.moveaxis(log_probs, 0, -1)) / temperature
    corrected = corrected.reshape(*corrected.shape[:2], num_samples * kinds)
    push_down = temperature * jax.scipy.special.logsumexp(corrected, axis=-1)
    return push_down.mean(axis=-1) - data_q.mean(axis=-1)


def critic_step(agent: sac.Agent, state: sac.State, config: Config, push_down_obs,
                next_obs_for_pi, real_batch, bellman_batch, key, weight):
    """One critic step of ``agent`` on its Bellman error (on ``bellman_batch``) plus ``weight``
    times the per-member penalty (pushed down at ``push_down_obs``, the policy's actions drawn
    at them and at ``next_obs_for_pi``; pushed up on ``real_batch``'s (s, a)).

    CQL passes one real batch for all of them, COMBO its mixed batch for the push-down and
    Bellman terms. Returns the new agent state, the per-member penalty and metrics.
    """
    target_key, sample_key = jax.random.split(key)
    target = jax.lax.stop_gradient(agent.td_target(state, bellman_batch, target_key))
    policy_sample = lambda o, k: agent.sample(state.actor_params, o, k)  # noqa: E731
    actions, log_probs = sampled_actions(sample_key, policy_sample, push_down_obs,
                                         next_obs_for_pi, agent.act_dim, config.num_samples)

    def loss_fn(critic_params):
        q_fn = lambda o, a: agent.q(critic_params, o, a)  # noqa: E731
        q = q_fn(bellman_batch.observations, bellman_batch.actions)
        bellman = jnp.mean(jnp.sum((q - target) ** 2, axis=0))
        data_q = q_fn(real_batch.observations, real_batch.actions)
        penalty = conservative_penalty(q_fn, push_down_obs, actions, log_probs, data_q,
                                       config.temperature)
        return bellman + jnp.sum(weight * penalty), (bellman, penalty, q)

    (_, (bellman, penalty, q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.critic_params)
    state = agent.apply_critic_grads(state, grads)
    return state, penalty, {"bellman_loss": bellman, "q_mean": q.mean(),
                            "conservative_penalty": penalty.mean()}
