"""Adversarially trained actor critic (ATAC; Cheng et al., 2022), the model-free sibling of ARMOR.

A Stackelberg game between a slow actor and a fast, relatively pessimistic critic:

- each of the twin critics f_i minimises ``mean(f_i(s, pi(s)) - f_i(s, a_data)) + beta * E_i``,
  written ``l / beta + E_i`` when beta > 1 (:func:`normalized_sum`), where the Bellman error
  ``E_i = (1 - w) * TD + w * residual`` mixes the TD error against the target critics (min of the
  twin targets) and the residual error whose target ``r + gamma f_i(s', a')`` keeps its gradient;
  after each step every critic layer's kernel is projected to Frobenius norm <= ``norm_constraint``
  (:func:`project_l2`) and the targets follow with rate ``tau``;
- the actor maximises the FIRST critic ``f_1(s, pi(s))`` with SAC's entropy term (automatic
  temperature towards ``-act_dim``), at the slow rate 5e-7;
- init warm-starts (:func:`warm_start`): ``warmstart_steps`` of behaviour cloning (``bc.update``)
  and, in the same ``lax.scan``, a Bellman fit of the critics to that policy.

Settings from the paper and the public lightATAC code (``docs/algorithms.md#atac``): fast rate
5e-4 for critics and temperature, slow rate 5e-7 for the actor, beta 3 (3 to 16 in the paper),
w 0.5, tau 5e-3, 3x256 networks, 100k warm-start steps at the fast rate. Choices of ours: the
warm start projects the critics too (so every critic the game sees lies in the norm ball), and
the BC part is plain maximum likelihood (``bc.BC.update``) without lightATAC's entropy bonus.

The pieces ARMOR shares (:func:`bellman_error`, :func:`critic_step`, :func:`actor_step`,
:func:`warm_start`) take the agent's :class:`~offrl_jax.parts.sac.State`, which holds the actor, the
twin critics, their targets and the temperature, and a config with ATAC's fields (``agent``,
``batch_size``, ``residual_weight``, ``norm_constraint``, ``fixed_alpha``, ``warmstart_lr``).
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import optax

from offrl_jax.algorithms import bc
from offrl_jax.algorithms.base import Algorithm, Registration
from offrl_jax.data import sample_batch
from offrl_jax.parts import sac


@dataclasses.dataclass(frozen=True)
class ATACConfig:
    # Slow actor, fast critics; lightATAC tunes the temperature at the fast rate.
    agent: sac.Config = sac.Config(hidden_dims=(256, 256, 256), actor_lr=5e-7, critic_lr=5e-4,
                                   alpha_lr=5e-4, tau=5e-3)
    beta: float = 3.0
    residual_weight: float = 0.5  # w in E = (1 - w) TD + w residual
    norm_constraint: float = 100.0
    batch_size: int = 256
    fixed_alpha: float | None = None  # None: automatic temperature; 0.0: no entropy term
    warmstart_steps: int = 100_000
    warmstart_lr: float = 5e-4


@flax.struct.dataclass
class ATACState:
    agent: sac.State
    beta: jax.Array  # () float32, initialised from config.beta; a float leaf, so it sweeps


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


def warm_start(agent: sac.Agent, state: sac.State, config, dataset, key, num_steps: int):
    """``num_steps`` of behaviour cloning of the actor and a Bellman fit of the critics to that
    policy (the ``residual_weight`` mix, no pessimism), in one ``lax.scan``.

    Both use ``config.warmstart_lr``; the critics are projected and their targets updated every
    step. Returns the agent state with new actor, critic and target parameters (optimizer states
    of the main phase untouched) and the last step's metrics.
    """
    cloner = bc.BC(bc.BCConfig(hidden_dims=config.agent.hidden_dims,
                               learning_rate=config.warmstart_lr, batch_size=config.batch_size),
                   agent)
    critic_tx = optax.adam(config.warmstart_lr)
    gamma, tau = config.agent.gamma, config.agent.tau

    def step(carry, step_key):
        bc_state, critic_params, target_params, critic_opt = carry
        bc_key, batch_key, next_key = jax.random.split(step_key, 3)
        bc_state, bc_metrics = cloner.update(bc_state, dataset, bc_key)
        batch = sample_batch(dataset, batch_key, config.batch_size)
        next_act, _ = agent.sample(bc_state.actor_params, batch.next_observations, next_key)
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


@dataclasses.dataclass(frozen=True)
class ATAC(Algorithm):
    config: ATACConfig
    name = "atac"

    def __post_init__(self):
        self._parts(agent=sac.Agent(self.config.agent, self.spec.obs_dim, self.spec.act_dim))

    def init_updates(self, dataset_size: int) -> int:
        return self.config.warmstart_steps

    def init(self, key, dataset=None, pretrained=None) -> ATACState:
        config = self.config
        init_key, warm_key = jax.random.split(key)
        agent = self.agent.init(init_key)
        if config.warmstart_steps > 0:
            if dataset is None:
                raise ValueError("atac.init: warmstart_steps > 0 needs the dataset "
                                 "(pass it, or set warmstart_steps=0)")
            agent, _ = warm_start(self.agent, agent, config, dataset, warm_key,
                                  config.warmstart_steps)
        return ATACState(agent, jnp.asarray(config.beta, jnp.float32))

    def update(self, state: ATACState, dataset, key):
        config, critic, agent = self.config, self.agent, state.agent
        batch_key, next_key, pi_key, actor_key = jax.random.split(key, 4)
        batch = sample_batch(dataset, batch_key, config.batch_size)
        obs, next_obs = batch.observations, batch.next_observations
        next_act, _ = critic.sample(agent.actor_params, next_obs, next_key)
        pi_act, _ = critic.sample(agent.actor_params, obs, pi_key)
        pi_act = jax.lax.stop_gradient(pi_act)
        target_next = critic.q(agent.target_critic_params, next_obs, next_act).min(0)
        size = config.batch_size

        # The critics: relative pessimism l(f, pi) + beta * E(f).
        def loss_fn(critic_params):
            # One critic call on [(s, a); (s', a'); (s, pi(s))]: (num_qs, 3B).
            q_all = critic.q(critic_params, jnp.concatenate([obs, next_obs, obs]),
                             jnp.concatenate([batch.actions, next_act, pi_act]))
            q, q_next, q_pi = q_all[:, :size], q_all[:, size:2 * size], q_all[:, 2 * size:]
            bellman = bellman_error(q, q_next, target_next, batch.rewards, batch.terminals,
                                    config.agent.gamma, config.residual_weight)
            pessimism = jnp.mean(q_pi - q, axis=-1)
            loss = jnp.sum(normalized_sum(pessimism, bellman, state.beta))
            return loss, (bellman, pessimism, q)

        (loss, (bellman, pessimism, q)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            agent.critic_params)
        agent = critic_step(critic, agent, grads, config.norm_constraint)
        # The actor: maximise f_1(s, pi(s)) with entropy, at the slow rate.
        agent, actor_metrics = actor_step(critic, agent, config, obs, actor_key)
        agent = agent.replace(step=agent.step + 1)
        return state.replace(agent=agent), {
            "critic_loss": loss, "bellman_loss": bellman.mean(), "pessimism": pessimism.mean(),
            "q_data_mean": q.mean(), **actor_metrics}

    def act(self, state: ATACState, obs, key, deterministic: bool = True):
        return self.agent.act(state.agent, obs, key, deterministic)


# beta per dataset (docs/algorithms.md#atac): small beta (more pessimism, the policy stays near
# the data's) where the data is near-expert, the official command-line default 16 where it is
# broad or suboptimal. Unlisted tasks keep the lightATAC default of ATACConfig.
_BETA = {"medium": 16.0, "medium-replay": 16.0, "random": 16.0,
         "medium-expert": 1.0, "expert": 1.0}
TASK_SETTINGS = {f"{env}-{kind}": {"beta": beta}
                 for env in ("halfcheetah", "hopper", "walker2d") for kind, beta in _BETA.items()}

ALGORITHM = Registration("atac", ATACConfig, ATAC, TASK_SETTINGS)
