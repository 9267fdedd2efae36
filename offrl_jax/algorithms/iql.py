"""Implicit Q-learning (Kostrikov et al., 2022) as a pure update function.

- V regresses the target critics' min Q(s, a) of dataset actions with an expectile loss
  (expectile 0.7), so it estimates an upper expectile of in-distribution values without
  querying out-of-distribution actions;
- each Q regresses r + gamma (1 - done) V(s');
- the policy is extracted by advantage-weighted likelihood of dataset actions,
  weights exp(temperature * (Q - V)) clipped at 100, with a cosine-decayed learning rate. As in
  the official code (and CORL, JAX-CORL) the policy is an UNSQUASHED Gaussian with a tanh-bounded
  mean and a state-independent log-std (``policy="gaussian"``): its likelihood is measured in
  action space, so a saturated dataset action (+-1) weighs like any other. A tanh-squashed
  policy fitted on arctanh(a) would put such an action near 7.25 in pre-tanh space and let it
  dominate the fit. ``policy="deterministic"`` regresses a tanh-bounded action with the same
  weights (CORL uses it on some datasets).

As in the paper's locomotion runs, rewards are scaled by 1000 / (max - min episode return).
Every default's source, and what differs from the official code: ``docs/algorithms.md#iql``.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import optax

from offrl_jax.algorithms.base import Algorithm, Registration
from offrl_jax.data import sample_batch
from offrl_jax.networks import (
    MLP,
    DeterministicTanhPolicy,
    GaussianPolicy,
    QEnsemble,
    check_init,
    gaussian_log_prob,
)
from offrl_jax.parts import config_repr, quiet_setting


@dataclasses.dataclass(frozen=True)
class IQLConfig:
    hidden_dims: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    expectile: float = 0.7
    temperature: float = 3.0
    max_weight: float = 100.0
    gamma: float = 0.99
    tau: float = 0.005
    batch_size: int = 256
    total_updates: int = 1_000_000  # length of the actor's cosine schedule
    normalize_rewards: bool = True
    policy: str = "gaussian"  # or "deterministic"
    # The networks' initialisation scheme (offrl_jax.networks.INITS; the official code's is
    # "orthogonal").
    init: str = quiet_setting("flax")

    __repr__ = config_repr

    def __post_init__(self):
        check_init(self.init)
        if self.policy not in ("gaussian", "deterministic"):
            raise ValueError(f"IQLConfig.policy must be 'gaussian' or 'deterministic', found "
                             f"{self.policy!r}")


@flax.struct.dataclass
class IQLState:
    actor_params: dict
    critic_params: dict
    target_critic_params: dict
    value_params: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    value_opt: optax.OptState
    reward_scale: jax.Array
    step: jax.Array


def expectile_loss(diff, expectile):
    """Asymmetric squared loss |expectile - 1(diff < 0)| diff^2; its minimiser over a constant
    c of E[loss(x - c)] is the ``expectile`` expectile of x."""
    weight = jnp.where(diff < 0, 1.0 - expectile, expectile)
    return weight * diff ** 2


def episode_return_range(dataset) -> jax.Array:
    """max - min of the dataset's episode returns (jittable; episodes by ``episode_ids``)."""
    ids = dataset.episode_ids - dataset.episode_ids.min()
    sums = jax.ops.segment_sum(dataset.rewards, ids, num_segments=dataset.size)
    present = jax.ops.segment_sum(jnp.ones_like(dataset.rewards), ids,
                                  num_segments=dataset.size) > 0
    return (jnp.max(jnp.where(present, sums, -jnp.inf))
            - jnp.min(jnp.where(present, sums, jnp.inf)))


@dataclasses.dataclass(frozen=True)
class IQL(Algorithm):
    config: IQLConfig
    name = "iql"

    def __post_init__(self):
        config = self.config
        actor = (GaussianPolicy(config.hidden_dims, self.spec.act_dim,
                                init_scheme=config.init)
                 if config.policy == "gaussian" else
                 DeterministicTanhPolicy(config.hidden_dims, self.spec.act_dim,
                                         init_scheme=config.init))
        self._parts(actor=actor,
                    critic=QEnsemble(config.hidden_dims, 2, init_scheme=config.init),
                    value=MLP(config.hidden_dims, 1, init_scheme=config.init),
                    actor_tx=optax.adam(optax.cosine_decay_schedule(config.actor_lr,
                                                                    config.total_updates)),
                    critic_tx=optax.adam(config.critic_lr),
                    value_tx=optax.adam(config.value_lr))

    def init(self, key, dataset=None, pretrained=None) -> IQLState:
        config, spec = self.config, self.spec
        k1, k2, k3 = jax.random.split(key, 3)
        obs, act = jnp.zeros((1, spec.obs_dim)), jnp.zeros((1, spec.act_dim))
        actor_params = self.actor.init(k1, obs)
        critic_params = self.critic.init(k2, obs, act)
        value_params = self.value.init(k3, obs)
        scale = jnp.asarray(1.0)
        if config.normalize_rewards and dataset is not None:
            scale = 1000.0 / jnp.maximum(episode_return_range(dataset), 1e-6)
        return IQLState(actor_params, critic_params, critic_params, value_params,
                        self.actor_tx.init(actor_params), self.critic_tx.init(critic_params),
                        self.value_tx.init(value_params), scale, jnp.zeros((), jnp.int32))

    def update(self, state: IQLState, dataset, key):
        config = self.config
        actor, critic, value = self.actor, self.critic, self.value
        batch = sample_batch(dataset, key, config.batch_size)
        rewards = batch.rewards * state.reward_scale
        target_q = critic.apply(state.target_critic_params, batch.observations,
                                batch.actions).min(0)

        # 1. V towards the expectile of the target critics' Q over dataset actions.
        def value_loss(params):
            v = value.apply(params, batch.observations)[..., 0]
            return jnp.mean(expectile_loss(target_q - v, config.expectile)), v

        (v_loss, v), v_grads = jax.value_and_grad(value_loss, has_aux=True)(state.value_params)
        v_updates, value_opt = self.value_tx.update(v_grads, state.value_opt,
                                                    state.value_params)
        value_params = optax.apply_updates(state.value_params, v_updates)

        # 2. Each Q towards r + gamma (1 - done) V(s').
        next_v = value.apply(value_params, batch.next_observations)[..., 0]
        td_target = rewards + config.gamma * (1.0 - batch.terminals) * next_v

        def critic_loss(params):
            q = critic.apply(params, batch.observations, batch.actions)
            return jnp.mean(jnp.sum((q - td_target) ** 2, axis=0)), q

        (q_loss, q), q_grads = jax.value_and_grad(critic_loss, has_aux=True)(
            state.critic_params)
        q_updates, critic_opt = self.critic_tx.update(q_grads, state.critic_opt,
                                                      state.critic_params)
        critic_params = optax.apply_updates(state.critic_params, q_updates)

        # 3. Advantage-weighted regression of the policy on dataset actions.
        weights = jnp.minimum(jnp.exp(config.temperature * (target_q - v)), config.max_weight)

        def actor_loss(params):
            if config.policy == "deterministic":
                error = jnp.sum((actor.apply(params, batch.observations) - batch.actions) ** 2,
                                axis=-1)
                return jnp.mean(weights * error)
            mean, log_std = actor.apply(params, batch.observations)
            log_prob = gaussian_log_prob(mean, log_std, batch.actions)
            return -jnp.mean(weights * log_prob)

        a_loss, a_grads = jax.value_and_grad(actor_loss)(state.actor_params)
        a_updates, actor_opt = self.actor_tx.update(a_grads, state.actor_opt,
                                                    state.actor_params)
        actor_params = optax.apply_updates(state.actor_params, a_updates)

        state = state.replace(
            actor_params=actor_params, critic_params=critic_params, value_params=value_params,
            target_critic_params=optax.incremental_update(
                critic_params, state.target_critic_params, config.tau),
            actor_opt=actor_opt, critic_opt=critic_opt, value_opt=value_opt,
            step=state.step + 1)
        return state, {"value_loss": v_loss, "critic_loss": q_loss, "actor_loss": a_loss,
                       "q_mean": q.mean(), "v_mean": v.mean(), "weight_mean": weights.mean()}

    def act(self, state: IQLState, obs, key, deterministic: bool = True):
        if self.config.policy == "deterministic":
            return self.actor.apply(state.actor_params, obs)
        mean, log_std = self.actor.apply(state.actor_params, obs)
        if deterministic:
            return mean
        return jnp.clip(mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape), -1.0, 1.0)


ALGORITHM = Registration("iql", IQLConfig, IQL)
