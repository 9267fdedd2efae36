"""MOReL: model-based offline RL in a pessimistic MDP (Kidambi et al., 2020), SAC as the learner.

1. init: train the dynamics ensemble on the dataset (:mod:`offrl_jax.algorithms.model_based`;
   or take the shared one ``pretrain`` fitted) and set the "unknown region" threshold from
   dataset statistics: ``threshold_scale`` times the largest disagreement of the members'
   predictions over (up to ``threshold_samples``) dataset (s, a) pairs. Disagreement is the
   maximum pairwise distance between members' predicted means for the SAME (s, a) (REFERENCE
   s.5 mistake 5), the ``pairwise_max`` uncertainty;
2. refresh, every ``refresh_every`` updates: rollouts of the current policy in the model; the
   first transition whose disagreement exceeds the threshold HALTs its rollout: it becomes
   terminal with reward ``min(dataset rewards) - halt_penalty`` and nothing after it is kept;
3. update: one SAC step on model transitions (and ``real_ratio`` of dataset rows, 0 as in the
   paper, whose policy is trained only in the pessimistic MDP).

The original learner is NPG; SAC is the common modern substitute. ``threshold_scale`` and
``halt_penalty`` are recalled defaults *(to verify)*.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from offrl_jax.algorithms import model_based, sac
from offrl_jax.algorithms.base import Algorithm
from offrl_jax.algorithms.model_based import ModelBasedConfig, ModelBasedState
from offrl_jax.models import predict, uncertainty_penalties
from offrl_jax.models.buffer import Transitions

DISAGREEMENT = "pairwise_max"


@dataclasses.dataclass(frozen=True)
class MOReLConfig(ModelBasedConfig):
    real_ratio: float = 0.0
    hidden_dims: tuple[int, ...] = (256, 256)
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 1e-4
    gamma: float = 0.99
    tau: float = 0.005
    threshold_scale: float = 1.0
    threshold_samples: int = 10_000
    halt_penalty: float = 100.0


@flax.struct.dataclass
class MOReLState:
    sac: sac.SACState
    model: ModelBasedState
    threshold: jax.Array     # () disagreement above which a state is unknown
    halt_reward: jax.Array   # () reward of the halting transition
    config: MOReLConfig = flax.struct.field(pytree_node=False)


def dataset_disagreement(ensemble, dataset, key, num_samples: int) -> jax.Array:
    """Members' disagreement on up to ``num_samples`` dataset (s, a) pairs, ``(num_samples,)``."""
    rows = jax.random.choice(key, dataset.size, (min(num_samples, dataset.size),),
                             replace=False)
    mean, logvar = predict(ensemble, dataset.observations[rows], dataset.actions[rows])
    return uncertainty_penalties(mean, logvar)[DISAGREEMENT]


def init(key, spec, config: MOReLConfig = MOReLConfig(), dataset=None,
         pretrained=None) -> MOReLState:
    """``pretrained``: this seed's :func:`model_based.pretrain` ensemble (else trained here);
    the threshold is measured on the dataset either way."""
    model, agent, (sample_key,) = model_based.init_model_and_agent(
        key, spec, config, dataset, DISAGREEMENT, pretrained, extra_keys=1)
    disagreement = dataset_disagreement(model.ensemble, dataset, sample_key,
                                        config.threshold_samples)
    return MOReLState(agent, model, config.threshold_scale * jnp.max(disagreement),
                      jnp.min(dataset.rewards) - config.halt_penalty, config)


def halt_unknown(transitions: Transitions, valid, threshold, halt_reward):
    """Make each rollout's first unknown transition a terminal with the halt reward and drop
    what follows it. Leaves and ``valid`` are ``(horizon, starts, ...)``."""
    unknown = valid & (transitions.penalties > threshold)
    seen = jnp.cumsum(unknown, axis=0)
    first = unknown & (seen == 1)
    valid = valid & ((seen - unknown) == 0)
    transitions = transitions.replace(
        rewards=jnp.where(first, halt_reward, transitions.rewards),
        terminals=jnp.where(first, 1.0, transitions.terminals))
    return transitions, valid


def refresh(state: MOReLState, dataset, key) -> MOReLState:
    """Rollouts in the pessimistic MDP into the buffer (``rollout_length`` in the metrics
    shows how early unknown states halt them)."""
    def transform(transitions, valid):
        return halt_unknown(transitions, valid, state.threshold, state.halt_reward)

    return model_based.refresh_with_policy(state, dataset, key, transform)


def update(state: MOReLState, dataset, key):
    state, metrics = model_based.sac_update_on_mixed_batch(state, dataset, key)
    return state, {**metrics, "halt_threshold": state.threshold}


def act(state: MOReLState, obs, key, deterministic: bool = True):
    return sac.act(state.sac, obs, key, deterministic)


ALGORITHM = Algorithm("morel", MOReLConfig, init, update, act, refresh=refresh,
                      pretrain=model_based.pretrain, pretrain_id=model_based.pretrain_id)
