"""COMBO: conservative offline model-based policy optimisation (Yu et al., 2021), as Algorithm 1
of the paper.

1. Fit the dynamics ensemble on the dataset (as MOPO, :mod:`offrl_jax.parts.dynamics`; or take
   the shared one ``pretrain`` fitted) and initialise the SAC agent (3 x 256);
2. every ``rollouts.refresh_every`` updates, roll the current stochastic policy out in the model
   into the buffer, no reward penalty (:meth:`COMBO.refresh`);
3. on a minibatch of ``real_ratio`` (0.5) dataset rows and model rows (:meth:`COMBO.update`):
   - the critic step of the paper's eq. (2): the Bellman error on the whole mixed batch
     (no entropy in the backup) plus ``beta`` (``state.cql_weight``) times the conservative
     term: push Q down on the mixed batch's states with a log-sum-exp over 10 uniform,
     10 pi(.|s) and 10 pi(.|s') actions (temperature 1), push it up on the real rows' (s, a)
     (:func:`offrl_jax.parts.conservative.critic_step`, the part CQL uses too);
   - the policy step: SAC's actor and temperature step on the mixed batch (the policy
     maximises Q).

``beta`` is a float32 leaf of the state (initialised from ``config.cql_weight``), so a sweep over
it vmaps like seeds. Per-dataset ``rollouts.horizon`` and ``cql_weight`` are in
:data:`TASK_SETTINGS`; every default's source: ``docs/algorithms.md#combo``.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from offrl_jax.algorithms.base import Algorithm, Registration
from offrl_jax.parts import conservative, dynamics, rollouts, sac
from offrl_jax.parts.dynamics import EnsembleState


@dataclasses.dataclass(frozen=True)
class COMBOConfig:
    agent: sac.Config = sac.Config(hidden_dims=(256, 256, 256), actor_lr=1e-4, alpha_lr=1e-4,
                                   backup_entropy=False)
    conservative: conservative.Config = conservative.Config()
    dynamics: dynamics.Config = dynamics.Config()
    rollouts: rollouts.Config = rollouts.Config()
    batch_size: int = 256
    real_ratio: float = 0.5
    cql_weight: float = 5.0  # beta; only the initial value of state.cql_weight

    def __post_init__(self):
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValueError(f"COMBOConfig.real_ratio must be in [0, 1], found "
                             f"{self.real_ratio}")


@flax.struct.dataclass
class COMBOState:
    agent: sac.State
    model: EnsembleState
    rollouts: rollouts.State
    cql_weight: jax.Array  # () float32, beta


@dataclasses.dataclass(frozen=True)
class COMBO(dynamics.SharedModel, Algorithm):
    """``COMBO(config, spec)``: ``spec`` has ``obs_dim``, ``act_dim`` and ``termination_fn``."""

    config: COMBOConfig
    name = "combo"

    def __post_init__(self):
        self._parts(agent=sac.Agent(self.config.agent, self.spec.obs_dim, self.spec.act_dim),
                    rollouts=rollouts.Rollouts(self.config.rollouts, self.spec))

    def init(self, key, dataset, pretrained=None) -> COMBOState:
        """Step 1. ``pretrained``: this seed's :meth:`pretrain` model (else fitted here)."""
        model = dynamics.fit_or_take(key, self.spec, dataset, self.config.dynamics, pretrained)
        agent = self.agent.init(jax.random.split(key, 2)[1])
        return COMBOState(agent, model, self.rollouts.init(),
                          jnp.asarray(self.config.cql_weight, jnp.float32))

    def refresh(self, state: COMBOState, dataset, key) -> COMBOState:
        """Step 2: model rollouts of the current stochastic policy into the buffer."""
        return state.replace(rollouts=self.rollouts.refresh(
            state.rollouts, state.model, dataset, key, self.agent.policy_fn(state.agent)))

    def update(self, state: COMBOState, dataset, key):
        """Step 3: the conservative critic step on the mixed batch, then the policy step."""
        config = self.config
        batch_key, critic_key, actor_key = jax.random.split(key, 3)
        real, model_rows, batch_metrics = rollouts.sample(
            state.rollouts, dataset, batch_key, config.batch_size, config.real_ratio)
        batch = rollouts.concatenate(real, model_rows)
        agent, _, metrics = conservative.critic_step(
            self.agent, state.agent, config.conservative, batch.observations,
            batch.next_observations, real, batch, critic_key, state.cql_weight)
        agent, actor_metrics = self.agent.update_actor_and_alpha(agent, batch, actor_key)
        agent = agent.replace(step=agent.step + 1)
        return state.replace(agent=agent), {**metrics, **actor_metrics, **batch_metrics,
                                            **rollouts.metrics(state.rollouts)}

    def act(self, state: COMBOState, obs, key, deterministic: bool = True):
        return self.agent.act(state.agent, obs, key, deterministic)


# (rollouts.horizon, cql_weight = beta) per dataset: docs/algorithms.md#combo.
_H_BETA = {
    "halfcheetah-medium": (5, 0.5), "hopper-medium": (5, 5.0), "walker2d-medium": (1, 5.0),
    "halfcheetah-medium-replay": (5, 0.5), "hopper-medium-replay": (5, 0.5),
    "walker2d-medium-replay": (1, 0.5),
    "halfcheetah-medium-expert": (5, 5.0), "hopper-medium-expert": (5, 5.0),
    "walker2d-medium-expert": (1, 5.0),
}
TASK_SETTINGS = {task: {"rollouts.horizon": h, "cql_weight": beta}
                 for task, (h, beta) in _H_BETA.items()}

ALGORITHM = Registration("combo", COMBOConfig, COMBO, TASK_SETTINGS)
