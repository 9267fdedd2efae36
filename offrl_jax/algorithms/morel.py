"""MOReL: model-based offline RL in a pessimistic MDP (Kidambi et al., 2020), SAC as the learner.

1. Fit the dynamics ensemble on the dataset (:mod:`offrl_jax.parts.dynamics`; or take the shared
   one ``pretrain`` fitted) and build the unknown state-action detector (USAD): the threshold
   is the largest disagreement of the members' predictions over EVERY dataset (s, a) pair,
   divided by ``pessimism_coef``. Disagreement is the maximum pairwise distance between
   members' predicted next states for the SAME (s, a), the ``pairwise_max_state`` uncertainty
   (``docs/algorithms.md#pitfall-3``) (:meth:`MOReL.init`);
2. the pessimistic MDP: in a model rollout, the first transition whose disagreement exceeds the
   threshold HALTs it: the rollout is truncated there, as in the official code. The halting
   transition is kept with its reward plus ``truncate_reward`` and is NOT made terminal (the
   critic bootstraps through it, as official MOReL's NPG bootstraps a truncated path with its
   value baseline); nothing after it is kept (:func:`halt_unknown`). The halt rate and the
   rollouts' disagreement against the threshold are logged with every update
   (:func:`halt_statistics`);
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
from offrl_jax.parts import dynamics, rollouts, sac
from offrl_jax.parts.dynamics import EnsembleState, predict, uncertainty_penalties
from offrl_jax.parts.rollouts import Transitions

DISAGREEMENT = "pairwise_max_state"


@dataclasses.dataclass(frozen=True)
class MOReLConfig:
    agent: sac.Config = sac.Config(actor_lr=1e-4, alpha_lr=1e-4)
    dynamics: dynamics.Config = dynamics.Config()
    rollouts: rollouts.Config = rollouts.Config()
    batch_size: int = 256
    real_ratio: float = 0.0
    pessimism_coef: float = 3.0      # threshold = max dataset disagreement / pessimism_coef
    truncate_reward: float = 0.0     # added to the reward of a halting transition
    threshold_chunk: int = 10_000    # rows per ensemble pass while measuring every row

    def __post_init__(self):
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValueError(f"MOReLConfig.real_ratio must be in [0, 1], found "
                             f"{self.real_ratio}")
        if self.pessimism_coef <= 0 or self.threshold_chunk < 1:
            raise ValueError(f"MOReLConfig: pessimism_coef must be > 0 and threshold_chunk "
                             f">= 1, found {self.pessimism_coef} and {self.threshold_chunk}")


@flax.struct.dataclass
class MOReLState:
    """``halt_rate``: the halting transitions' share of the last refresh's stored transitions;
    ``halted_rollouts``: the share of its rollouts that halted."""

    agent: sac.State
    model: EnsembleState
    rollouts: rollouts.State
    threshold: jax.Array        # () disagreement above which a state is unknown
    truncate_reward: jax.Array  # () added to the reward of the halting transition
    halt_rate: jax.Array        # () float32
    halted_rollouts: jax.Array  # () float32


def max_dataset_disagreement(ensemble, dataset, chunk: int) -> jax.Array:
    """The members' largest disagreement over every dataset (s, a) pair, ``()``, measured
    ``chunk`` rows per ensemble pass (the last chunk wraps around to the first rows, which
    cannot change a maximum)."""
    num_chunks = -(-dataset.size // chunk)
    rows = (jnp.arange(num_chunks * chunk) % dataset.size).reshape(num_chunks, chunk)

    def chunk_max(index):
        mean, logvar = predict(ensemble, dataset.observations[index], dataset.actions[index])
        return jnp.max(uncertainty_penalties(mean, logvar)[DISAGREEMENT])

    return jnp.max(jax.lax.map(chunk_max, rows))


def halt_unknown(transitions: Transitions, valid, threshold, truncate_reward):
    """Step 2: truncate each rollout at its first unknown transition, whose reward is raised by
    ``truncate_reward``, and drop what follows it. The halting transition keeps its terminal
    flag (the task's termination function's, usually 0): a halt is a truncation, not an end
    of the episode. Leaves and ``valid`` are ``(horizon, starts, ...)``."""
    unknown = valid & (transitions.penalties > threshold)
    seen = jnp.cumsum(unknown, axis=0)
    first = unknown & (seen == 1)
    valid = valid & ((seen - unknown) == 0)
    transitions = transitions.replace(
        rewards=jnp.where(first, transitions.rewards + truncate_reward, transitions.rewards))
    return transitions, valid


def halt_statistics(transitions: Transitions, valid, threshold, num_starts: int):
    """``(halt_rate, halted_rollouts)`` of one refresh's rows after :func:`halt_unknown`
    (leaves ``(..., horizon, starts)``): the halting transitions are the kept ones above the
    threshold, one per halted rollout. ``halt_rate`` is their share of the kept transitions,
    ``halted_rollouts`` their number over ``num_starts``."""
    halted = jnp.sum(valid & (transitions.penalties > threshold), dtype=jnp.float32)
    kept = jnp.maximum(jnp.sum(valid, dtype=jnp.float32), 1.0)
    return halted / kept, halted / num_starts


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
        _, agent_key = jax.random.split(key)
        disagreement = max_dataset_disagreement(model, dataset, config.threshold_chunk)
        zero = jnp.zeros((), jnp.float32)
        return MOReLState(self.agent.init(agent_key), model, self.rollouts.init(),
                          disagreement / config.pessimism_coef,
                          jnp.asarray(config.truncate_reward, jnp.float32), zero, zero)

    def refresh(self, state: MOReLState, dataset, key) -> MOReLState:
        """Step 3: rollouts in the pessimistic MDP into the buffer, and their halt
        statistics."""
        def transform(transitions, valid):
            return halt_unknown(transitions, valid, state.threshold, state.truncate_reward)

        rollout_state, transitions, valid = self.rollouts.refresh_rows(
            state.rollouts, state.model, dataset, key, self.agent.policy_fn(state.agent),
            transform)
        halt_rate, halted_rollouts = halt_statistics(transitions, valid, state.threshold,
                                                     self.config.rollouts.batch_size)
        return state.replace(rollouts=rollout_state, halt_rate=halt_rate,
                             halted_rollouts=halted_rollouts)

    def update(self, state: MOReLState, dataset, key):
        """Step 3: one SAC step on pessimistic-MDP rows (and ``real_ratio`` dataset rows)."""
        config = self.config
        batch_key, agent_key = jax.random.split(key)
        real, model_rows, batch_metrics = rollouts.sample(
            state.rollouts, dataset, batch_key, config.batch_size, config.real_ratio)
        agent, metrics = self.agent.update(state.agent, rollouts.concatenate(real, model_rows),
                                           agent_key)
        halting = {"halt_threshold": state.threshold, "halt_rate": state.halt_rate,
                   "halted_rollouts": state.halted_rollouts,
                   # the last refresh's mean disagreement (its kept rows) over the threshold
                   "disagreement_over_threshold":
                       state.rollouts.rollout_uncertainty / state.threshold}
        return state.replace(agent=agent), {**metrics, **batch_metrics,
                                            **rollouts.metrics(state.rollouts), **halting}

    def act(self, state: MOReLState, obs, key, deterministic: bool = True):
        return self.agent.act(state.agent, obs, key, deterministic)


# version 2: a halt truncates and bootstraps (mjrl), where version 1 made it terminal.
ALGORITHM = Registration("morel", MOReLConfig, MOReL, version=2)
