"""RAMBO: robust adversarial model-based offline RL (Rigter et al., 2022), as Algorithm 1 of
the paper.

1. Fit the dynamics ensemble on the dataset (or take the shared one ``pretrain`` fitted,
   :mod:`offrl_jax.parts.dynamics`), and pretrain the SAC actor by behaviour cloning
   (``bc_pretrain_steps`` of maximum likelihood on dataset actions, a compiled scan);
2. every ``rollouts.refresh_every`` (250) updates:
   a. ``adversary_steps`` adversarial model steps (:meth:`RAMBO.adversary_loss`,
      :meth:`RAMBO.adversarial_model_steps`): on dataset states with the current policy's actions,
      the model samples (s', r); with the agent's critics the advantage ``A = r + gamma (1 -
      done) V(s') - Q(s, a)`` (V(s') = min_i Q_i(s', a' ~ pi)) is normalised over the batch,
      and the model minimises ``adversary_weight * E[A * log p_M(s', r | s, a)] + NLL_M(real
      data)``: it moves its probability towards transitions the agent values less while
      keeping its likelihood on the real data;
   b. rollouts of the current policy in the adversarially trained model into the buffer;
3. one SAC step per update on ``real_ratio`` (0.5) dataset rows and model rows.

The paper updates the model for 1000 steps every 1000 agent updates; here the same ratio is
spread over the refreshes (``adversary_steps`` per ``rollouts.refresh_every`` updates) so the
periodic work stays one static program (no ``lax.cond`` in a vmapped scan,
``docs/algorithms.md#pitfalls``). ``adversary_weight`` is a state leaf, so sweeps over it vmap
like seeds. Every default's source, and what differs from the reference code:
``docs/algorithms.md#rambo``.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import optax

from offrl_jax.algorithms.base import Algorithm, Registration
from offrl_jax.data import sample_batch
from offrl_jax.models import EnsembleState, predict
from offrl_jax.networks import tanh_gaussian_log_prob_of_action
from offrl_jax.parts import dynamics, rollouts, sac


@dataclasses.dataclass(frozen=True)
class RAMBOConfig:
    agent: sac.Config = sac.Config(actor_lr=1e-4, alpha_lr=1e-4)
    dynamics: dynamics.Config = dynamics.Config()
    rollouts: rollouts.Config = rollouts.Config(refresh_every=250)
    batch_size: int = 256
    real_ratio: float = 0.5
    adversary_weight: float = 3e-4
    adversary_steps: int = 250
    adversary_batch_size: int = 256
    model_lr: float = 3e-4
    bc_pretrain_steps: int = 10_000
    bc_lr: float = 1e-4

    def __post_init__(self):
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValueError(f"RAMBOConfig.real_ratio must be in [0, 1], found "
                             f"{self.real_ratio}")


@flax.struct.dataclass
class RAMBOState:
    agent: sac.State
    model: EnsembleState
    rollouts: rollouts.State
    model_opt: optax.OptState
    adversary_weight: jax.Array  # () float32


def _gaussian_log_prob(mean, logvar, target):
    """Sum over output dims of log N(target; mean, exp(logvar)); broadcasts over members."""
    return -0.5 * jnp.sum((target - mean) ** 2 * jnp.exp(-logvar) + logvar
                          + jnp.log(2 * jnp.pi), axis=-1)


@dataclasses.dataclass(frozen=True)
class RAMBO(dynamics.SharedModel, Algorithm):
    """``RAMBO(config, spec)``: ``spec`` has ``obs_dim``, ``act_dim`` and ``termination_fn``."""

    config: RAMBOConfig
    name = "rambo"

    def __post_init__(self):
        config = self.config
        self._parts(agent=sac.Agent(config.agent, self.spec.obs_dim, self.spec.act_dim),
                    rollouts=rollouts.Rollouts(config.rollouts, self.spec),
                    model_tx=optax.adam(config.model_lr), bc_tx=optax.adam(config.bc_lr))

    def pretrain_actor(self, agent: sac.State, dataset, key) -> sac.State:
        """Step 1's behaviour cloning of the SAC actor: ``bc_pretrain_steps`` Adam steps of
        -log pi(a_data | s)."""
        config, tx = self.config, self.bc_tx

        def step(carry, step_key):
            params, opt_state = carry
            batch = sample_batch(dataset, step_key, config.batch_size)

            def nll(p):
                mean, log_std = self.agent.actor.apply(p, batch.observations)
                return -jnp.mean(tanh_gaussian_log_prob_of_action(mean, log_std,
                                                                  batch.actions))

            grads = jax.grad(nll)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (agent.actor_params, tx.init(agent.actor_params)),
                                      jax.random.split(key, config.bc_pretrain_steps))
        return agent.replace(actor_params=params)

    def init(self, key, dataset, pretrained=None) -> RAMBOState:
        """Step 1. ``pretrained``: this seed's :meth:`pretrain` model (else fitted here); the
        actor's BC pretraining always runs here (it is not shared)."""
        model = dynamics.fit_or_take(key, self.spec, dataset, self.config.dynamics, pretrained)
        _, agent_key, bc_key = jax.random.split(key, 3)
        agent = self.pretrain_actor(self.agent.init(agent_key), dataset, bc_key)
        return RAMBOState(agent, model, self.rollouts.init(), self.model_tx.init(model.params),
                          jnp.asarray(self.config.adversary_weight, jnp.float32))

    def adversary_loss(self, params, state: RAMBOState, real, obs, actions, key):
        """Step 2a: ``(loss, metrics)`` of the model parameters: the advantage-weighted
        log-likelihood of the model's own samples plus its Gaussian NLL on real transitions."""
        ensemble = state.model.replace(params=params)
        agent, critic = state.agent, self.agent
        member_key, noise_key, next_key = jax.random.split(key, 3)
        mean, logvar = predict(ensemble, obs, actions)                       # (M, B, D)
        choice = jax.random.randint(member_key, obs.shape[:1], 0,
                                    ensemble.elite_indices.shape[0])
        member = ensemble.elite_indices[choice]
        pick = lambda x: jnp.take_along_axis(x, member[None, :, None], axis=0)[0]  # noqa: E731
        sample = jax.lax.stop_gradient(
            pick(mean) + jnp.exp(0.5 * pick(logvar))
            * jax.random.normal(noise_key, obs.shape[:1] + mean.shape[-1:]))
        next_obs, reward = obs + sample[:, :-1], sample[:, -1]
        done = self.spec.termination_fn(next_obs).astype(jnp.float32)
        next_actions, _ = critic.sample(agent.actor_params, next_obs, next_key)
        next_v = critic.q(agent.critic_params, next_obs, next_actions).min(0)
        q = critic.q(agent.critic_params, obs, actions).min(0)
        advantage = reward + critic.config.gamma * (1.0 - done) * next_v - q
        advantage = jax.lax.stop_gradient(
            (advantage - advantage.mean()) / (advantage.std() + 1e-6))
        log_prob = jnp.take_along_axis(_gaussian_log_prob(mean, logvar, sample[None]),
                                       member[None], axis=0)[0]
        adversarial = jnp.mean(advantage * log_prob)
        real_mean, real_logvar = predict(ensemble, real.observations, real.actions)
        target = jnp.concatenate([real.next_observations - real.observations,
                                  real.rewards[:, None]], axis=-1)
        nll = jnp.mean(jnp.mean((real_mean - target) ** 2 * jnp.exp(-real_logvar), axis=-1)
                       + jnp.mean(real_logvar, axis=-1))
        loss = state.adversary_weight * adversarial + nll
        return loss, {"adversary_loss": adversarial, "model_nll": nll}

    def adversarial_model_steps(self, state: RAMBOState, dataset, key
                                ) -> tuple[RAMBOState, dict]:
        """Step 2a: ``adversary_steps`` Adam steps of :meth:`adversary_loss` on the model."""
        config, tx = self.config, self.model_tx

        def step(carry, step_key):
            params, opt_state = carry
            real_key, start_key, action_key, loss_key = jax.random.split(step_key, 4)
            real = sample_batch(dataset, real_key, config.adversary_batch_size)
            obs = sample_batch(dataset, start_key, config.adversary_batch_size).observations
            actions, _ = self.agent.sample(state.agent.actor_params, obs, action_key)
            grads, metrics = jax.grad(self.adversary_loss, has_aux=True)(
                params, state, real, obs, jax.lax.stop_gradient(actions), loss_key)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), metrics

        (params, model_opt), metrics = jax.lax.scan(
            step, (state.model.params, state.model_opt),
            jax.random.split(key, config.adversary_steps))
        return (state.replace(model=state.model.replace(params=params), model_opt=model_opt),
                metrics)

    def refresh(self, state: RAMBOState, dataset, key) -> RAMBOState:
        """Step 2: adversarial model steps, then (2b) rollouts in the adversarial model."""
        adversary_key, rollout_key = jax.random.split(key)
        state, _ = self.adversarial_model_steps(state, dataset, adversary_key)
        return state.replace(rollouts=self.rollouts.refresh(
            state.rollouts, state.model, dataset, rollout_key,
            self.agent.policy_fn(state.agent)))

    def update(self, state: RAMBOState, dataset, key):
        """Step 3: one SAC step on dataset rows and model rows."""
        config = self.config
        batch_key, agent_key = jax.random.split(key)
        real, model_rows, batch_metrics = rollouts.sample(
            state.rollouts, dataset, batch_key, config.batch_size, config.real_ratio)
        agent, metrics = self.agent.update(state.agent, rollouts.concatenate(real, model_rows),
                                           agent_key)
        return state.replace(agent=agent), {**metrics, **batch_metrics,
                                            **rollouts.metrics(state.rollouts)}

    def act(self, state: RAMBOState, obs, key, deterministic: bool = True):
        return self.agent.act(state.agent, obs, key, deterministic)


# (rollouts.horizon, adversary_weight) per dataset: docs/algorithms.md#rambo.
_H_WEIGHT = {
    "halfcheetah-medium": (5, 3e-4), "hopper-medium": (5, 3e-4), "walker2d-medium": (5, 0.0),
    "halfcheetah-medium-replay": (5, 3e-4), "hopper-medium-replay": (2, 3e-4),
    "walker2d-medium-replay": (5, 0.0),
    "halfcheetah-medium-expert": (5, 3e-4), "hopper-medium-expert": (5, 3e-4),
    "walker2d-medium-expert": (2, 3e-4),
}
TASK_SETTINGS = {task: {"rollouts.horizon": h, "adversary_weight": weight}
                 for task, (h, weight) in _H_WEIGHT.items()}

ALGORITHM = Registration("rambo", RAMBOConfig, RAMBO, TASK_SETTINGS)
