"""The TD3 agent part: twin delayed deep deterministic policy gradient (Fujimoto et al., 2018)
as pure functions, shared by TD3+BC and ReBRAC.

A deterministic tanh actor, ``num_qs`` critics (a LayerNorm after each hidden layer with
``critic_layer_norm``) and target copies of both. The algorithm writes its own TD target and
actor loss (their behaviour-cloning terms are its key step); this part gives the pieces:

- :meth:`Agent.target_action`: target policy smoothing, ``clip(pi'(s') + clip(eps, -c, c), -1,
  1)`` with ``eps ~ N(0, policy_noise^2)`` and ``c = noise_clip``;
- :meth:`Agent.target_q`: ``min_i Q'_i(s', a')``;
- :meth:`Agent.critic_step`: one step on ``sum_i mean_batch (Q_i(s, a) - y)^2``;
- :meth:`Agent.delayed_actor_step`: one step on the algorithm's actor loss, kept only on every
  ``policy_freq``-th update, together with the soft update of the target actor and critics.

The delay is jittable: the actor's step is computed at every update and kept or dropped by a
select on the traced ``step``, never by a Python branch. Under the training loop's vmap over
seeds a ``lax.cond`` would become that same select (``docs/algorithms.md#pitfall-1``); the
select also keeps the actor-loss metrics meaningful at every update. ``State`` holds arrays
only; ``Agent(config, obs_dim, act_dim)`` builds the networks and optimizers once. Every
default's source: ``docs/algorithms.md#td3-agent``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from offrl_jax.networks import DeterministicTanhPolicy, QEnsemble, check_init
from offrl_jax.parts import config_repr, quiet_setting, set_parts

# Added to the dataset's per-dimension state std before dividing (official TD3+BC and ReBRAC).
STATE_STD_EPS = 1e-3


@dataclasses.dataclass(frozen=True)
class Config:
    """The agent's networks, rates, TD target and delays; an algorithm's config nests one as
    ``td3`` with its own values (``rebrac.ReBRACConfig().td3.actor_lr == 1e-3``)."""

    hidden_dims: tuple[int, ...] = (256, 256)  # actor and critics
    num_qs: int = 2
    critic_layer_norm: bool = False
    actor_layer_norm: bool = False
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    policy_noise: float = 0.2  # std of the target policy smoothing noise
    noise_clip: float = 0.5
    policy_freq: int = 2  # one actor and target update per policy_freq critic updates
    # The actor's and critics' initialisation scheme (offrl_jax.networks.INITS).
    init: str = quiet_setting("flax")

    __repr__ = config_repr

    def __post_init__(self):
        check_init(self.init)
        if self.policy_freq < 1:
            raise ValueError(f"policy_freq must be >= 1, found {self.policy_freq}")
        if self.num_qs < 1:
            raise ValueError(f"num_qs must be >= 1, found {self.num_qs}")
        if self.policy_noise < 0 or self.noise_clip < 0:
            raise ValueError(f"policy_noise and noise_clip must be >= 0, found "
                             f"{self.policy_noise} and {self.noise_clip}")


@flax.struct.dataclass
class State:
    """The agent's arrays: actor, critics, their targets, two optimizer states and the number
    of updates done (critic steps)."""

    actor_params: dict
    critic_params: dict
    target_actor_params: dict
    target_critic_params: dict
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    step: jax.Array


def smoothing_noise(key, shape, policy_noise: float, noise_clip: float) -> jax.Array:
    """Target policy smoothing noise ``clip(N(0, policy_noise^2), -noise_clip, noise_clip)``."""
    return jnp.clip(policy_noise * jax.random.normal(key, shape), -noise_clip, noise_clip)


def normalized_lambda(q, scale) -> jax.Array:
    """``scale / mean|q|``, a constant for the gradient: the weight that puts the actor's Q
    term on the scale of its BC term whatever the scale of the rewards (TD3+BC's lambda with
    ``scale = alpha``; ReBRAC's with ``scale = 1``)."""
    return jax.lax.stop_gradient(scale / jnp.mean(jnp.abs(q)))


def state_moments(observations, enabled: bool) -> tuple[jax.Array, jax.Array]:
    """``(mean, std + STATE_STD_EPS)`` per dimension of ``observations (N, obs)``, or ``(0,
    1)`` when not ``enabled``: inputs are ``(obs - mean) / std``."""
    if not enabled:
        dim = observations.shape[-1]
        return jnp.zeros(dim, jnp.float32), jnp.ones(dim, jnp.float32)
    return observations.mean(0), observations.std(0) + STATE_STD_EPS


@dataclasses.dataclass(frozen=True)
class Agent:
    """The TD3 agent for one config and observation/action sizes: its networks and optimizers
    are built once, here; every method is a pure function of a :class:`State`."""

    config: Config
    obs_dim: int
    act_dim: int

    def __post_init__(self):
        config = self.config
        parts = {
            "actor": DeterministicTanhPolicy(config.hidden_dims, self.act_dim,
                                             config.actor_layer_norm, init_scheme=config.init),
            "critic": QEnsemble(config.hidden_dims, config.num_qs, config.critic_layer_norm,
                                init_scheme=config.init),
            "actor_tx": optax.adam(config.actor_lr),
            "critic_tx": optax.adam(config.critic_lr),
        }
        set_parts(self, **parts)

    def init(self, key) -> State:
        actor_key, critic_key = jax.random.split(key)
        actor_params = self.actor.init(actor_key, jnp.zeros((1, self.obs_dim)))
        critic_params = self.critic.init(critic_key, jnp.zeros((1, self.obs_dim)),
                                         jnp.zeros((1, self.act_dim)))
        return State(
            actor_params=actor_params,
            critic_params=critic_params,
            target_actor_params=actor_params,
            target_critic_params=critic_params,
            actor_opt=self.actor_tx.init(actor_params),
            critic_opt=self.critic_tx.init(critic_params),
            step=jnp.zeros((), jnp.int32),
        )

    def act(self, actor_params, obs):
        """The actor's action ``(..., act)`` in (-1, 1)."""
        return self.actor.apply(actor_params, obs)

    def q(self, critic_params, obs, act):
        """``(num_qs, ...)`` Q-values."""
        return self.critic.apply(critic_params, obs, act)

    def target_action(self, state: State, next_obs, key):
        """The smoothed target action ``clip(pi'(s') + noise, -1, 1)``, ``(B, act)``."""
        action = self.act(state.target_actor_params, next_obs)
        noise = smoothing_noise(key, action.shape, self.config.policy_noise,
                                self.config.noise_clip)
        return jnp.clip(action + noise, -1.0, 1.0)

    def target_q(self, state: State, next_obs, next_act):
        """``min_i Q'_i(s', a')`` of the target critics, ``(B,)``."""
        return self.q(state.target_critic_params, next_obs, next_act).min(0)

    def critic_step(self, state: State, obs, actions, target):
        """One critic step towards ``target (B,)`` (held constant)."""
        target = jax.lax.stop_gradient(target)

        def loss_fn(critic_params):
            q = self.q(critic_params, obs, actions)
            return jnp.mean(jnp.sum((q - target) ** 2, axis=0)), q

        (loss, q), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.critic_params)
        updates, critic_opt = self.critic_tx.update(grads, state.critic_opt,
                                                    state.critic_params)
        critic_params = optax.apply_updates(state.critic_params, updates)
        return (state.replace(critic_params=critic_params, critic_opt=critic_opt),
                {"critic_loss": loss, "q_mean": q.mean()})

    def actor_due(self, state: State) -> jax.Array:
        """Whether the update numbered ``state.step`` (from 0) steps the actor and the targets:
        every ``policy_freq``-th one, the first after ``policy_freq`` critic steps (as official
        TD3 and TD3+BC count)."""
        return (state.step + 1) % self.config.policy_freq == 0

    def delayed_actor_step(self, state: State, actor_loss: Callable):
        """One actor step on ``actor_loss(actor_params) -> (loss, metrics)`` and the targets'
        soft update with rate ``tau``, both kept only when :meth:`actor_due`; then ``step +
        1``. Call it after :meth:`critic_step`, with a loss that reads the new critics."""
        (loss, metrics), grads = jax.value_and_grad(actor_loss, has_aux=True)(
            state.actor_params)
        updates, actor_opt = self.actor_tx.update(grads, state.actor_opt, state.actor_params)
        actor_params = optax.apply_updates(state.actor_params, updates)
        due = self.actor_due(state)

        def when_due(new, old):
            return jax.tree_util.tree_map(lambda n, o: jnp.where(due, n, o), new, old)

        tau = self.config.tau
        state = state.replace(
            actor_params=when_due(actor_params, state.actor_params),
            actor_opt=when_due(actor_opt, state.actor_opt),
            target_actor_params=when_due(
                optax.incremental_update(actor_params, state.target_actor_params, tau),
                state.target_actor_params),
            target_critic_params=when_due(
                optax.incremental_update(state.critic_params, state.target_critic_params, tau),
                state.target_critic_params),
            step=state.step + 1)
        return state, {"actor_loss": loss, **metrics}
