"""RAMBO: robust adversarial model-based offline RL (Rigter et al., 2022), as Algorithm 1 of
the paper, calibrated to the official code (marc-rigter/rambo).

1. Fit the dynamics ensemble on the dataset (or take the shared one ``pretrain`` fitted,
   :mod:`offrl_jax.parts.dynamics`), measure the dataset's state mean and std (the agent sees
   normalised states, ``normalize_states``), and pretrain the SAC actor by behaviour cloning
   (``bc_pretrain_steps`` of maximum likelihood on dataset actions, by default 50 epochs of the
   dataset, a compiled scan);
2. every ``rollouts.refresh_every`` (250) updates:
   a. ``adversary_steps`` adversarial model steps (:meth:`RAMBO.adversary_loss`,
      :meth:`RAMBO.adversarial_model_steps`) on states that advance through the model under
      the policy, ``rollouts.horizon`` steps from a fresh dataset batch at a time: the model
      samples (s', r) with one elite; with the agent's critics the advantage ``A = r + gamma
      (1 - done) V(s') - Q(s, a)`` (V(s') = min_i Q_i(s', mu(s')), the deterministic next
      action) is normalised over the batch, and the model minimises ``adversary_weight *
      E[A * log p_M(s', r | s, a)] + L_M(real data)``, with ``p_M`` the density under the
      mixture of the elites and ``L_M`` the ensemble's own training loss summed over members
      (NLL, log-variance bounds, weight decay): it moves its probability towards transitions
      the agent values less while keeping its fit to the real data. With ``adversary_weight``
      0, and before the agent's first update (its critics are untrained), the model stays as
      fitted;
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
import math

import flax.struct
import jax
import jax.numpy as jnp
import optax

from offrl_jax.algorithms.base import Algorithm, Registration
from offrl_jax.data import sample_batch
from offrl_jax.networks import gaussian_log_density, tanh_gaussian_log_prob_of_action
from offrl_jax.parts import dynamics, rollouts, sac
from offrl_jax.parts.dynamics import EnsembleState, predict, training_loss


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
    bc_pretrain_steps: int | None = None  # None: bc_pretrain_epochs over the dataset
    bc_pretrain_epochs: int = 50
    bc_lr: float = 1e-4
    normalize_states: bool = True

    def __post_init__(self):
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValueError(f"RAMBOConfig.real_ratio must be in [0, 1], found "
                             f"{self.real_ratio}")

    def bc_steps(self, dataset_size: int) -> int:
        """BC pretraining steps: ``bc_pretrain_steps``, or ``bc_pretrain_epochs`` passes over
        ``dataset_size`` rows at ``batch_size``."""
        if self.bc_pretrain_steps is not None:
            return self.bc_pretrain_steps
        return math.ceil(self.bc_pretrain_epochs * dataset_size / self.batch_size)


@flax.struct.dataclass
class RAMBOState:
    agent: sac.State
    model: EnsembleState
    rollouts: rollouts.State
    model_opt: optax.OptState
    adversary_weight: jax.Array  # () float32
    obs_mean: jax.Array          # (obs,) the agent's input normalisation
    obs_std: jax.Array           # (obs,)


def _gaussian_log_prob(mean, logvar, target):
    """Sum over output dims of log N(target; mean, exp(logvar)); broadcasts over members."""
    return jnp.sum(gaussian_log_density((target - mean) ** 2 * jnp.exp(-logvar), logvar),
                   axis=-1)


def elite_mixture_log_prob(ensemble: EnsembleState, mean, logvar, target):
    """log of the density of ``target`` ``(B, D)`` under the equal mixture of the elites'
    Gaussians (``mean``, ``logvar`` ``(M, B, D)`` of every member), ``(B,)``."""
    elites = ensemble.elite_indices
    per_elite = _gaussian_log_prob(mean[elites], logvar[elites], target[None])
    return jax.scipy.special.logsumexp(per_elite, axis=0) - jnp.log(elites.shape[0])


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

    @staticmethod
    def normalise(state: RAMBOState, obs):
        """The agent's view of raw states ``(..., obs)``."""
        return (obs - state.obs_mean) / state.obs_std

    def normalised_batch(self, state: RAMBOState, batch):
        return batch.replace(observations=self.normalise(state, batch.observations),
                             next_observations=self.normalise(state, batch.next_observations))

    def pretrain_actor(self, state: RAMBOState, dataset, key) -> RAMBOState:
        """Step 1's behaviour cloning of the SAC actor: Adam steps of -log pi(a_data | s)."""
        config, tx = self.config, self.bc_tx
        agent = state.agent

        def step(carry, step_key):
            params, opt_state = carry
            batch = sample_batch(dataset, step_key, config.batch_size)

            def nll(p):
                mean, log_std = self.agent.actor.apply(p, self.normalise(state,
                                                                         batch.observations))
                return -jnp.mean(tanh_gaussian_log_prob_of_action(mean, log_std,
                                                                  batch.actions))

            grads = jax.grad(nll)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (agent.actor_params, tx.init(agent.actor_params)),
                                      jax.random.split(key, config.bc_steps(dataset.size)))
        return state.replace(agent=agent.replace(actor_params=params))

    def init_updates(self, dataset_size: int) -> int:
        return self.config.bc_steps(dataset_size)

    def init(self, key, dataset, pretrained=None) -> RAMBOState:
        """Step 1. ``pretrained``: this seed's :meth:`pretrain` model (else fitted here); the
        actor's BC pretraining always runs here (it is not shared)."""
        model = dynamics.fit_or_take(key, self.spec, dataset, self.config.dynamics, pretrained)
        _, agent_key, bc_key = jax.random.split(key, 3)
        if self.config.normalize_states:
            obs_mean = jnp.mean(dataset.observations, axis=0)
            obs_std = jnp.std(dataset.observations, axis=0)
            obs_std = jnp.where(obs_std < 1e-12, 1.0, obs_std)
        else:
            obs_mean = jnp.zeros((self.spec.obs_dim,), jnp.float32)
            obs_std = jnp.ones((self.spec.obs_dim,), jnp.float32)
        state = RAMBOState(self.agent.init(agent_key), model, self.rollouts.init(),
                           self.model_tx.init(model.params),
                           jnp.asarray(self.config.adversary_weight, jnp.float32),
                           obs_mean, obs_std)
        return self.pretrain_actor(state, dataset, bc_key)

    def adversary_loss(self, params, state: RAMBOState, real, obs, actions, key):
        """Step 2a: ``(loss, (metrics, next_obs, done))`` of the model parameters: the
        advantage-weighted log-likelihood of the model's own samples under the elite mixture,
        plus the ensemble's training loss on real transitions (summed over members)."""
        ensemble = state.model.replace(params=params)
        agent, critic = state.agent, self.agent
        member_key, noise_key = jax.random.split(key)
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
        seen_next = self.normalise(state, next_obs)
        next_actions = critic.act(agent, seen_next, None, deterministic=True)
        next_v = critic.q(agent.critic_params, seen_next, next_actions).min(0)
        q = critic.q(agent.critic_params, self.normalise(state, obs), actions).min(0)
        advantage = reward + critic.config.gamma * (1.0 - done) * next_v - q
        advantage = jax.lax.stop_gradient(
            (advantage - advantage.mean()) / (advantage.std() + 1e-6))
        log_prob = elite_mixture_log_prob(ensemble, mean, logvar, sample)
        adversarial = jnp.mean(advantage * log_prob)
        supervised = training_loss(ensemble, real.observations, real.actions, real.rewards,
                                   real.next_observations)
        loss = state.adversary_weight * adversarial + supervised
        return loss, ({"adversary_loss": adversarial, "model_loss": supervised},
                      next_obs, done)

    def adversarial_model_steps(self, state: RAMBOState, dataset, key
                                ) -> tuple[RAMBOState, dict]:
        """Step 2a: ``adversary_steps`` Adam steps of :meth:`adversary_loss` on the model. Its
        states start from a dataset batch and advance through the model under the current
        policy; every ``rollouts.horizon`` steps, and wherever a rollout ended (a terminal or
        non-finite state), they restart from the dataset. Kept only when the adversary is on
        (``adversary_weight`` > 0) and the agent has trained (its step > 0)."""
        config, tx = self.config, self.model_tx
        horizon = config.rollouts.horizon
        batch_size = config.adversary_batch_size

        def step(carry, inputs):
            params, opt_state, obs, ended = carry
            index, step_key = inputs
            real_key, start_key, action_key, loss_key = jax.random.split(step_key, 4)
            real = sample_batch(dataset, real_key, batch_size)
            restart = ended | (index % horizon == 0)
            obs = jnp.where(restart[:, None],
                            sample_batch(dataset, start_key, batch_size).observations, obs)
            actions, _ = self.agent.sample(state.agent.actor_params, self.normalise(state, obs),
                                           action_key)
            grads, (metrics, next_obs, done) = jax.grad(self.adversary_loss, has_aux=True)(
                params, state, real, obs, jax.lax.stop_gradient(actions), loss_key)
            updates, opt_state = tx.update(grads, opt_state, params)
            ended = (done > 0) | ~jnp.all(jnp.isfinite(next_obs), axis=-1)
            metrics = {**metrics, "restarted_fraction": restart.mean()}
            return (optax.apply_updates(params, updates), opt_state, next_obs, ended), metrics

        start = (jnp.zeros((batch_size, self.spec.obs_dim), jnp.float32),
                 jnp.ones((batch_size,), bool))
        inputs = (jnp.arange(config.adversary_steps),
                  jax.random.split(key, config.adversary_steps))
        (params, model_opt, _, _), metrics = jax.lax.scan(
            step, (state.model.params, state.model_opt, *start), inputs)
        active = (state.adversary_weight > 0) & (state.agent.step > 0)
        keep = lambda new, old: jax.tree_util.tree_map(  # noqa: E731
            lambda a, b: jnp.where(active, a, b), new, old)
        return (state.replace(model=state.model.replace(
                    params=keep(params, state.model.params)),
                    model_opt=keep(model_opt, state.model_opt)),
                {**metrics, "adversary_active": active})

    def refresh(self, state: RAMBOState, dataset, key) -> RAMBOState:
        """Step 2: adversarial model steps, then (2b) rollouts in the adversarial model."""
        adversary_key, rollout_key = jax.random.split(key)
        state, _ = self.adversarial_model_steps(state, dataset, adversary_key)
        actor_params = state.agent.actor_params

        def policy(policy_key, obs):
            return self.agent.sample(actor_params, self.normalise(state, obs), policy_key)[0]

        return state.replace(rollouts=self.rollouts.refresh(
            state.rollouts, state.model, dataset, rollout_key, policy))

    def update(self, state: RAMBOState, dataset, key):
        """Step 3: one SAC step on dataset rows and model rows (normalised states)."""
        config = self.config
        batch_key, agent_key = jax.random.split(key)
        real, model_rows, batch_metrics = rollouts.sample(
            state.rollouts, dataset, batch_key, config.batch_size, config.real_ratio)
        batch = self.normalised_batch(state, rollouts.concatenate(real, model_rows))
        agent, metrics = self.agent.update(state.agent, batch, agent_key)
        return state.replace(agent=agent), {**metrics, **batch_metrics,
                                            **rollouts.metrics(state.rollouts)}

    def act(self, state: RAMBOState, obs, key, deterministic: bool = True):
        return self.agent.act(state.agent, self.normalise(state, obs), key, deterministic)


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
