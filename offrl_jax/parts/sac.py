"""The SAC agent part: soft actor-critic (Haarnoja et al., 2018) as pure functions.

The agent of the behaviour policies (dataset generation), MOPO, COMBO, MOReL, RAMBO and CQL,
and the actor-critic of ATAC and ARMOR, which replace its losses but keep its networks and
optimizers. Tanh-Gaussian actor, an ensemble of ``num_qs`` critics with target copies, automatic
entropy tuning towards ``-act_dim``. ``batch`` is any pytree with fields ``observations (B,
obs)``, ``actions (B, act)``, ``rewards (B,)``, ``next_observations (B, obs)`` and ``terminals
(B,)``. ``Agent(config, obs_dim, act_dim)`` builds the networks and optimizers once; the
state (:class:`State`) holds arrays only. Every default's source:
``docs/algorithms.md#sac-agent``.
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
    check_init,
    sample_tanh_gaussian,
    squashed_action,
)
from offrl_jax.parts import config_repr, quiet_setting, set_parts


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
    # The actor's and critics' initialisation scheme (offrl_jax.networks.INITS).
    init: str = quiet_setting("flax")

    __repr__ = config_repr

    def __post_init__(self):
        check_init(self.init)


@flax.struct.dataclass
class State:
    """The agent's arrays: actor, critics and their targets, the log-temperature, the three
    optimizer states and the number of updates."""

    actor_params: dict
    critic_params: dict
    target_critic_params: dict
    log_alpha: jax.Array
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    alpha_opt: optax.OptState
    step: jax.Array


@dataclasses.dataclass(frozen=True)
class Agent:
    """The SAC agent for one config and observation/action sizes: its networks and optimizers
    are built once, here; every method is a pure function of a :class:`State`."""

    config: Config
    obs_dim: int
    act_dim: int

    def __post_init__(self):
        config = self.config
        parts = {
            "actor": TanhGaussianPolicy(config.hidden_dims, self.act_dim,
                                        init_scheme=config.init),
            "critic": QEnsemble(config.hidden_dims, config.num_qs, init_scheme=config.init),
            "actor_tx": optax.adam(config.actor_lr),
            "critic_tx": optax.adam(config.critic_lr),
            "alpha_tx": optax.adam(config.alpha_lr),
            "target_entropy": (-float(self.act_dim) if config.target_entropy is None
                               else config.target_entropy),
        }
        set_parts(self, **parts)

    def init(self, key) -> State:
        actor_key, critic_key = jax.random.split(key)
        obs = jnp.zeros((1, self.obs_dim))
        act = jnp.zeros((1, self.act_dim))
        actor_params = self.actor.init(actor_key, obs)
        critic_params = self.critic.init(critic_key, obs, act)
        log_alpha = jnp.log(jnp.asarray(self.config.init_alpha, jnp.float32))
        return State(
            actor_params=actor_params,
            critic_params=critic_params,
            target_critic_params=critic_params,
            log_alpha=log_alpha,
            actor_opt=self.actor_tx.init(actor_params),
            critic_opt=self.critic_tx.init(critic_params),
            alpha_opt=self.alpha_tx.init(log_alpha),
            step=jnp.zeros((), jnp.int32),
        )

    def sample(self, actor_params, obs, key):
        """Sampled actions ``(..., act)`` and their log-probabilities ``(...)``."""
        mean, log_std = self.actor.apply(actor_params, obs)
        return sample_tanh_gaussian(mean, log_std, key)

    def act(self, state: State, obs, key, deterministic: bool = True):
        mean, log_std = self.actor.apply(state.actor_params, obs)
        return squashed_action(mean, log_std, key, deterministic)

    def policy_fn(self, state: State):
        """``policy_fn(key, obs) -> actions`` sampling the current stochastic policy."""
        return lambda key, obs: self.sample(state.actor_params, obs, key)[0]

    def q(self, critic_params, obs, act):
        """``(num_qs, ...)`` Q-values."""
        return self.critic.apply(critic_params, obs, act)

    def td_target(self, state: State, batch, key):
        """``r + gamma (1 - done) (min_i Q'_i(s', a') - alpha log pi(a'|s'))``, ``(B,)``;
        without the entropy term when ``config.backup_entropy`` is False."""
        next_act, next_logp = self.sample(state.actor_params, batch.next_observations, key)
        next_q = self.q(state.target_critic_params, batch.next_observations, next_act).min(0)
        if self.config.backup_entropy:
            next_q = next_q - jnp.exp(state.log_alpha) * next_logp
        return batch.rewards + self.config.gamma * (1.0 - batch.terminals) * next_q

    def apply_critic_grads(self, state: State, grads, project=None) -> State:
        """One critic optimizer step (then ``project(params)``, when given), and the target
        critics' soft update with rate ``tau``."""
        updates, critic_opt = self.critic_tx.update(grads, state.critic_opt,
                                                    state.critic_params)
        critic_params = optax.apply_updates(state.critic_params, updates)
        if project is not None:
            critic_params = project(critic_params)
        return state.replace(critic_params=critic_params, critic_opt=critic_opt,
                             target_critic_params=optax.incremental_update(
                                 critic_params, state.target_critic_params, self.config.tau))

    def update_actor_and_alpha(self, state: State, batch, key):
        """One actor step maximising ``min_i Q_i - alpha log pi`` and one temperature step."""
        alpha = jnp.exp(state.log_alpha)

        def actor_loss(actor_params):
            actions, logp = self.sample(actor_params, batch.observations, key)
            q = self.q(state.critic_params, batch.observations, actions).min(0)
            return jnp.mean(alpha * logp - q), logp

        (loss, logp), grads = jax.value_and_grad(actor_loss, has_aux=True)(state.actor_params)
        updates, actor_opt = self.actor_tx.update(grads, state.actor_opt, state.actor_params)
        actor_params = optax.apply_updates(state.actor_params, updates)

        entropy_gap = jax.lax.stop_gradient(-logp.mean() - self.target_entropy)
        alpha_grad = entropy_gap  # d/dlog_alpha of log_alpha * (entropy - target)
        alpha_updates, alpha_opt = self.alpha_tx.update(alpha_grad, state.alpha_opt,
                                                        state.log_alpha)
        log_alpha = optax.apply_updates(state.log_alpha, alpha_updates)
        state = state.replace(actor_params=actor_params, actor_opt=actor_opt,
                              log_alpha=log_alpha, alpha_opt=alpha_opt)
        return state, {"actor_loss": loss, "alpha": alpha, "entropy": -logp.mean()}

    def update(self, state: State, batch, key):
        """One SAC step: critics towards the soft TD target, then actor and temperature."""
        critic_key, actor_key = jax.random.split(key)
        target = jax.lax.stop_gradient(self.td_target(state, batch, critic_key))

        def critic_loss(critic_params):
            q = self.q(critic_params, batch.observations, batch.actions)
            return jnp.mean(jnp.sum((q - target) ** 2, axis=0)), q

        (loss, q), grads = jax.value_and_grad(critic_loss, has_aux=True)(state.critic_params)
        state = self.apply_critic_grads(state, grads)
        state, actor_metrics = self.update_actor_and_alpha(state, batch, actor_key)
        state = state.replace(step=state.step + 1)
        return state, {"critic_loss": loss, "q_mean": q.mean(), **actor_metrics}
