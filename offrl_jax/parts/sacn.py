"""SAC-N's update of a SAC agent with N critics clipped to their minimum (An et al., 2021), the
part SAC-N and EDAC share.

1. the critic step (:func:`critic_step`): each of the N critics regresses onto
   ``y = r + gamma (1 - d) (min_i Q'_i(s', a') - alpha log pi(a'|s'))``, ``a' ~ pi(.|s')``, the
   minimum over all N target critics, with an optional extra loss term (EDAC's ensemble
   similarity); then the target critics' soft update;
2. the policy step: the actor maximises ``min_i Q_i(s, a) - alpha log pi(a|s)`` and the
   temperature steps towards the target entropy (the SAC part's step).

Both steps read the networks as they were before this update, as in the official code (which
computes every loss first, then steps the optimisers): :func:`clipped_ensemble_step`. Every
default's source: ``docs/algorithms.md#sac-n``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from offrl_jax.parts import sac


def critic_step(agent: sac.Agent, state: sac.State, batch, key,
                extra_loss: Callable | None = None):
    """Step 1: one optimizer step of the N critics on ``sum_i mean_b (Q_i(s, a) - y)^2`` (``y``
    the TD target, the minimum over all N target critics), plus ``extra_loss(critic_params) ->
    (loss, metrics)`` when given; then the target critics' soft update.

    Returns ``(state, metrics)``: ``critic_loss`` (the Bellman part alone, comparable with and
    without an extra term), ``q_mean`` and ``q_std`` (the critics' spread at the dataset's
    (s, a), averaged over rows), and the extra term's metrics."""
    target = jax.lax.stop_gradient(agent.td_target(state, batch, key))

    def loss_fn(critic_params):
        q = agent.q(critic_params, batch.observations, batch.actions)  # (N, B)
        bellman = jnp.mean(jnp.sum((q - target) ** 2, axis=0))
        extra, extra_metrics = (extra_loss(critic_params) if extra_loss is not None
                                else (0.0, {}))
        return bellman + extra, (bellman, q, extra_metrics)

    (_, (bellman, q, extra_metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.critic_params)
    state = agent.apply_critic_grads(state, grads)
    return state, {"critic_loss": bellman, "q_mean": q.mean(), "q_std": q.std(0).mean(),
                   **extra_metrics}


def clipped_ensemble_step(agent: sac.Agent, state: sac.State, batch, key,
                          extra_loss: Callable | None = None):
    """One SAC-N update of the agent on ``batch``: step 1 (:func:`critic_step`, with
    ``extra_loss``) and step 2 (actor and temperature), both from ``state``, the networks
    before this update. Returns ``(state, metrics)``."""
    critic_key, actor_key = jax.random.split(key)
    # Step 1: the critics (their TD target samples a' from the actor before this update).
    critics, critic_metrics = critic_step(agent, state, batch, critic_key, extra_loss)
    # Step 2: actor and temperature, against the critics before this update.
    policy, actor_metrics = agent.update_actor_and_alpha(state, batch, actor_key)
    state = critics.replace(actor_params=policy.actor_params, actor_opt=policy.actor_opt,
                            log_alpha=policy.log_alpha, alpha_opt=policy.alpha_opt,
                            step=state.step + 1)
    return state, {**critic_metrics, **actor_metrics}
