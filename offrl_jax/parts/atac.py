"""ATAC's adversarial training (Cheng et al., 2022), shared by ATAC and ARMOR (Bhardwaj et al.,
2023): a fast, relatively pessimistic critic pair against a slow actor.

- :func:`bellman_error`: per critic ``(1 - w) * TD + w * residual``;
- :func:`normalized_sum`: ``loss + beta * regularizer`` written ``loss / beta + regularizer`` when
  beta > 1;
- :func:`critic_step`: a critic step, the L2 projection of every critic layer
  (:func:`project_l2`) and the target update;
- :func:`actor_step`: a temperature step, then an actor step maximising the first critic plus
  entropy;
- :func:`warm_start`: behaviour cloning of the actor (:mod:`offrl_jax.parts.cloning`) and a
  Bellman fit of the critics, in one ``lax.scan``.

They take the agent's :class:`~offrl_jax.parts.sac.State`, which holds the actor, the twin
critics, their targets and the temperature, and a config with ATAC's fields (``agent``,
``batch_size``, ``residual_weight``, ``norm_constraint``, ``fixed_alpha``, ``warmstart_lr``).
The papers, official code and every default's source: ``docs/algorithms.md#atac``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from offrl_jax.data import sample_batch
from offrl_jax.parts import cloning, sac


def normalized_sum(loss, regularizer, weight):
    """``loss + weight * regularizer``, divided by ``weight`` when weight > 1 (so it reads
    ``loss / weight + regularizer``: the same minimisers, with step sizes that do not grow with
    ``weight``). ``weight`` may be traced (a swept state leaf)."""
    return (loss + weight * regularizer) / jnp.maximum(1.0, weight)


def project_l2(params, max_norm: float):
    """Scale every ``kernel`` leaf so its Frobenius norm is at most ``max_norm``; biases stay.

    Kernels of a :class:`~offrl_jax.networks.QEnsemble` are ``(num_qs, in, out)``: each member's
    layer is projected on its own (the norm runs over the last two axes).
    """

    def project(path, leaf):
        if getattr(path[-1], "key", None) != "kernel":
            return leaf
        norm = jnp.sqrt(jnp.sum(jnp.square(leaf), axis=(-2, -1), keepdims=True))
        return leaf * jnp.minimum(1.0, max_norm / jnp.maximum(norm, 1e-12))

    return jax.tree_util.tree_map_with_path(project, params)


def kernel_norms(params) -> list[jax.Array]:
    """Frobenius norm of every kernel leaf, each ``(num_qs,)`` for a critic ensemble."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return [jnp.sqrt(jnp.sum(jnp.square(leaf), axis=(-2, -1))) for path, leaf in flat
            if getattr(path[-1], "key", None) == "kernel"]


def bellman_error(q, q_next, target_next, rewards, terminals, gamma: float,
                  residual_weight: float):
    """Per-critic ``(1 - w) * TD + w * residual`` mean squared errors, ``(num_qs,)``.

    q, q_next: ``(num_qs, B)`` the critics at (s, a) and at (s', a'); target_next ``(B,)`` the
    target critics' value at (s', a') (min over the twins). The TD target uses ``target_next``;
    the residual target ``r + gamma (1 - done) q_next`` keeps its gradient to the critic. Any
    gradient through ``rewards``/``target_next`` (ARMOR's model) is kept as given.
    """
    continues = gamma * (1.0 - terminals)
    td = jnp.mean(jnp.square(q - (rewards + continues * target_next)), axis=-1)
    residual = jnp.mean(jnp.square(q - (rewards + continues * q_next)), axis=-1)
    return (1.0 - residual_weight) * td + residual_weight * residual


def critic_step(agent: sac.Agent, state: sac.State, grads, max_norm: float) -> sac.State:
    """One fast step of the critics, the L2 projection of their layers, the target update."""
    return agent.apply_critic_grads(state, grads,
                                    project=lambda params: project_l2(params, max_norm))


def actor_step(agent: sac.Agent, state: sac.State, config, obs, key):
    """One temperature step, then one slow actor step maximising the first critic's
    ``f_1(s, pi(s))`` plus entropy (``normalized_sum(-f_1, -entropy, alpha)``).

    ``obs`` ``(B, obs)``; ``config`` has ``fixed_alpha``. Returns the new agent state and
    metrics.
    """
    _, logp = agent.sample(state.actor_params, obs, key)
    entropy = -jnp.mean(logp)
    log_alpha, alpha_opt = state.log_alpha, state.alpha_opt
    if config.fixed_alpha is None:
        # d/d log_alpha of log_alpha * (entropy - target): raise alpha while entropy is low.
        alpha_grad = jax.lax.stop_gradient(entropy - agent.target_entropy)
        alpha_updates, alpha_opt = agent.alpha_tx.update(alpha_grad, alpha_opt, log_alpha)
        log_alpha = optax.apply_updates(log_alpha, alpha_updates)
        alpha = jnp.exp(log_alpha)
    else:
        alpha = jnp.asarray(config.fixed_alpha, jnp.float32)

    def loss_fn(actor_params):
        actions, logp = agent.sample(actor_params, obs, key)
        value = jnp.mean(agent.q(state.critic_params, obs, actions)[0])
        entropy = -jnp.mean(logp)
        # Both branches are evaluated: divide by max(alpha, 1) so alpha = 0 (no entropy term)
        # keeps the unused branch, and with it the gradient, finite.
        weighted = jnp.where(alpha > 1, -value / jnp.maximum(alpha, 1.0) - entropy,
                             -value - alpha * entropy)
        return weighted, value

    (loss, value), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.actor_params)
    updates, actor_opt = agent.actor_tx.update(grads, state.actor_opt, state.actor_params)
    state = state.replace(actor_params=optax.apply_updates(state.actor_params, updates),
                          actor_opt=actor_opt, log_alpha=log_alpha, alpha_opt=alpha_opt)
    return state, {"actor_loss": loss, "actor_value": value, "alpha": alpha,
                   "entropy": entropy}


def warm_start(agent: sac.Agent, state: sac.State, config, dataset, key, num_steps: int,
               target_policy=None):
    """``num_steps`` of behaviour cloning of the actor and a Bellman fit of the critics to that
    policy (the ``residual_weight`` mix, no pessimism), in one ``lax.scan``.

    ``target_policy``: None clones the data's actions (ATAC's warm start); a function
    ``(observations, key) -> actions`` of a fixed policy makes the actor clone that policy's
    sampled actions on the data's states and fits the critics for that policy (its next
    actions in the Bellman targets): ARMOR's warm start for a given pi_ref.

    Both use ``config.warmstart_lr``; the critics are projected and their targets updated every
    step. Returns the agent state with new actor, critic and target parameters (optimizer states
    of the main phase untouched) and the last step's metrics.
    """
    cloner = cloning.Cloner(cloning.Config(hidden_dims=config.agent.hidden_dims,
                                           learning_rate=config.warmstart_lr,
                                           batch_size=config.batch_size,
                                           init=config.agent.init),
                            agent.obs_dim, agent.act_dim)
    critic_tx = optax.adam(config.warmstart_lr)
    gamma, tau = config.agent.gamma, config.agent.tau

    def step(carry, step_key):
        bc_state, critic_params, target_params, critic_opt = carry
        bc_key, batch_key, next_key = jax.random.split(step_key, 3)
        batch = sample_batch(dataset, batch_key, config.batch_size)
        if target_policy is None:
            bc_state, bc_metrics = cloner.update(bc_state, dataset, bc_key)
            next_act, _ = agent.sample(bc_state.actor_params, batch.next_observations, next_key)
        else:
            target_key, clone_key = jax.random.split(bc_key)
            bc_state, bc_metrics = cloner.update_on(
                bc_state, batch.observations, target_policy(batch.observations, target_key),
                clone_key)
            next_act = target_policy(batch.next_observations, next_key)
        target_next = agent.q(target_params, batch.next_observations, next_act).min(0)

        def loss_fn(params):
            q = agent.q(params, batch.observations, batch.actions)
            q_next = agent.q(params, batch.next_observations, next_act)
            return jnp.sum(bellman_error(q, q_next, target_next, batch.rewards,
                                         batch.terminals, gamma, config.residual_weight))

        loss, grads = jax.value_and_grad(loss_fn)(critic_params)
        updates, critic_opt = critic_tx.update(grads, critic_opt, critic_params)
        critic_params = project_l2(optax.apply_updates(critic_params, updates),
                                   config.norm_constraint)
        target_params = optax.incremental_update(critic_params, target_params, tau)
        metrics = {"warmstart_bc_nll": bc_metrics["nll"], "warmstart_bellman": loss}
        return (bc_state, critic_params, target_params, critic_opt), metrics

    carry = (cloner.state_from(state.actor_params), state.critic_params,
             state.target_critic_params, critic_tx.init(state.critic_params))
    (bc_state, critic_params, target_params, _), metrics = jax.lax.scan(
        step, carry, jax.random.split(key, num_steps))
    state = state.replace(actor_params=bc_state.actor_params, critic_params=critic_params,
                          target_critic_params=target_params)
    return state, jax.tree_util.tree_map(lambda m: m[-1], metrics)
