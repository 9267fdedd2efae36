"""MOReL: model-based offline RL in a pessimistic MDP (Kidambi et al., 2020), SAC as the learner.

1. Fit the dynamics ensemble on the dataset (:mod:`offrl_jax.parts.dynamics`; or take the shared
   one ``pretrain`` fitted) and build the unknown state-action detector (USAD): the threshold
   is ``threshold_scale`` times the largest disagreement of the members' predictions over (up
   to ``threshold_samples``) dataset (s, a) pairs. Disagreement is the maximum pairwise
   distance between members' predicted means for the SAME (s, a), the ``pairwise_max``
   uncertainty (``docs/algorithms.md#pitfall-3``) (:meth:`MOReL.init`);
2. the pessimistic MDP: in a model rollout, the first transition whose disagreement exceeds the
   threshold HALTs it: it becomes terminal with reward ``min(dataset rewards) -
   halt_penalty`` and nothing after it is kept (:func:`halt_unknown`);
3. plan in the pessimistic MDP: every ``rollouts.refresh_every`` updates, rollouts of the current
   policy in it fill the buffer (:meth:`MOReL.refresh`); one SAC step per update on model rows (and
   ``real_ratio`` of dataset rows, 0 as in the paper, whose policy is trained only in the
   pessimistic MDP) (:meth:`MOReL.update`).

The original learner is NPG; SAC is the common modern substitute. Every default's source, and
what differs from the reference code: ``docs/algorithms.md#morel``.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from offrl_jax.algorithms.base import Algorithm, Registration
from offrl_jax.models import EnsembleState, predict, uncertainty_penalties
from offrl_jax.models.buffer import Transitions
from offrl_jax.parts import dynamics, rollouts, sac

DISAGREEMENT = "pairwise_max"


@dataclasses.dataclass(frozen=True)
class MOReLConfig:
    agent: sac.Config = sac.Config(actor_lr=1e-4, alpha_lr=1e-4)
    dynamics: dynamics.Config = dynamics.Config()
    rollouts: rollouts.Config = rollouts.Config()
    batch_size: int = 256
    real_ratio: float = 0.0
    threshold_scale: float = 1.0
    threshold_samples: int = 10_000
    halt_penalty: float = 100.0

    def __post_init__(self):
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValueError(f"MOReLConfig.real_ratio must be in [0, 1], found "
                             f"{self.real_ratio}")


@flax.struct.dataclass
class MOReLState:
    agent: sac.State
    model: EnsembleState
    rollouts: rollouts.State
    threshold: jax.Array     # () disagreement above which a state is unknown
    halt_reward: jax.Array   # () reward of the halting transition


def dataset_disagreement(ensemble, dataset, key, num_samples: int) -> jax.Array:
    """Members' disagreement on up to ``num_samples`` dataset (s, a) pairs, ``(num_samples,)``."""
    rows = jax.random.choice(key, dataset.size, (min(num_samples, dataset.size),),
                             replace=False)
    mean, logvar = predict(ensemble, dataset.observations[rows], dataset.actions[rows])
    return uncertainty_penalties(mean, logvar)[DISAGREEMENT]


def halt_unknown(transitions: Transitions, valid, threshold, halt_reward):
    """Step 2: make each rollout's first unknown transition a terminal with the halt reward and
    drop what follows it. Leaves and ``valid`` are ``(horizon, starts, ...)``."""
    unknown = valid & (transitions.penalties > threshold)
    seen = jnp.cumsum(unknown, axis=0)
    first = unknown & (seen == 1)
    valid = valid & ((seen - unknown) == 0)
    transitions = transitions.replace(
        rewards=jnp.where(first, halt_reward, transitions.rewards),
        terminals=jnp.where(first, 1.0, transitions.terminals))
    return transitions, valid


@dataclasses.dataclass(frozen=True)
class MOReL(dynamics.SharedModel, Algorithm):
    """``MOReL(config, spec)``: ``spec`` has ``obs_dim``, ``act_dim`` and ``termination_fn``."""

    config: MOReLConfig
    name = "morel"

    def __post_init__(self):
        self._parts(agent=sac.Agent(self.config.agent, self.spec.obs_dim, self.spec.act_dim),
                    rollouts=rollouts.Rollouts(self.config.rollouts, self.spec, DISAGREEMENT))

    def init(self, key, dataset, pretrained=None) -> MOReLState:
        """Step 1. ``pretrained``: this seed's :meth:`pretrain` model (else fitted here); the
        threshold is measured on the dataset either way."""
        config = self.config
        model = dynamics.fit_or_take(key, self.spec, dataset, config.dynamics, pretrained)
        _, agent_key, sample_key = jax.random.split(key, 3)
        disagreement = dataset_disagreement(model, dataset, sample_key, config.threshold_samples)
        return MOReLState(self.agent.init(agent_key), model, self.rollouts.init(),
                          config.threshold_scale * jnp.max(disagreement),
                          jnp.min(dataset.rewards) - config.halt_penalty)

    def refresh(self, state: MOReLState, dataset, key) -> MOReLState:
        """Step 3: rollouts in the pessimistic MDP into the buffer (``rollout_length`` in the
        metrics shows how early unknown states halt them)."""
        def transform(transitions, valid):
            return halt_unknown(transitions, valid, state.threshold, state.halt_reward)

        return state.replace(rollouts=self.rollouts.refresh(
            state.rollouts, state.model, dataset, key, self.agent.policy_fn(state.agent),
            transform))

    def update(self, state: MOReLState, dataset, key):
        """Step 3: one SAC step on pessimistic-MDP rows (and ``real_ratio`` dataset rows)."""
        config = self.config
        batch_key, agent_key = jax.random.split(key)
        real, model_rows, batch_metrics = rollouts.sample(
            state.rollouts, dataset, batch_key, config.batch_size, config.real_ratio)
        agent, metrics = self.agent.update(state.agent, rollouts.concatenate(real, model_rows),
                                           agent_key)
        return state.replace(agent=agent), {**metrics, **batch_metrics,
                                            **rollouts.metrics(state.rollouts),
                                            "halt_threshold": state.threshold}

    def act(self, state: MOReLState, obs, key, deterministic: bool = True):
        return self.agent.act(state.agent, obs, key, deterministic)


ALGORITHM = Registration("morel", MOReLConfig, MOReL)
