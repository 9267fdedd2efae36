"""MOPO: model-based offline policy optimisation (Yu et al., 2020), as Algorithm 1 of the paper.

1. Fit the dynamics ensemble on the dataset (:mod:`offrl_jax.parts.dynamics`; or take the one
   ``pretrain`` fitted, shared with COMBO, MOReL and RAMBO) and initialise the SAC agent;
2. every ``rollouts.refresh_every`` updates, roll the current stochastic policy out in the model
   (``rollouts.batch_size`` dataset start states, ``rollouts.horizon`` steps), storing each
   transition's uncertainty u(s, a) (``penalty``: MOPO's "aleatoric" max over members of
   ||sigma||_2 by default, or "pairwise_max" / "ensemble_std") (:meth:`MOPO.refresh`);
3. the uncertainty-penalised reward ``r~(s, a) = r(s, a) - lambda * u(s, a)`` on the model rows
   (:meth:`MOPO.penalized`);
4. one SAC step on a minibatch of ``real_ratio`` (0.05) dataset rows and penalised model rows:
   SAC in the uncertainty-penalised MDP (:meth:`MOPO.update`).

``lambda`` is ``state.penalty_coef``, a float32 leaf of the state (initialised from
``config.penalty_coef``), not a static config field: a sweep over lambda is a vmap over states
that differ only in that leaf, so four values train as ONE compiled program. The rollout horizon
sets the buffer's shape and stays static. The penalty is applied when a batch is sampled, so the
buffer keeps the raw model rewards and uncertainties.

Per-dataset ``rollouts.horizon`` and ``penalty_coef`` are in :data:`TASK_SETTINGS`; every
default's source: ``docs/algorithms.md#mopo``.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from offrl_jax.algorithms.base import Algorithm, Registration
from offrl_jax.parts import dynamics, rollouts, sac
from offrl_jax.parts.dynamics import PENALTY_NAMES, EnsembleState
from offrl_jax.parts.rollouts import Transitions


@dataclasses.dataclass(frozen=True)
class MOPOConfig:
    agent: sac.Config = sac.Config(actor_lr=1e-4, alpha_lr=1e-4)
    dynamics: dynamics.Config = dynamics.Config()
    rollouts: rollouts.Config = rollouts.Config()
    batch_size: int = 256
    real_ratio: float = 0.05
    penalty: str = "aleatoric"
    penalty_coef: float = 1.0  # lambda; only the initial value of state.penalty_coef

    def __post_init__(self):
        if self.penalty not in PENALTY_NAMES:
            raise ValueError(f"MOPOConfig.penalty must be one of {PENALTY_NAMES}, found "
                             f"{self.penalty!r}")
        if not 0.0 <= self.real_ratio <= 1.0:
            raise ValueError(f"MOPOConfig.real_ratio must be in [0, 1], found {self.real_ratio}")


@flax.struct.dataclass
class MOPOState:
    agent: sac.State
    model: EnsembleState
    rollouts: rollouts.State
    penalty_coef: jax.Array  # () float32, lambda


@dataclasses.dataclass(frozen=True)
class MOPO(dynamics.SharedModel, Algorithm):
    """``MOPO(config, spec)``: ``spec`` has ``obs_dim``, ``act_dim`` and ``termination_fn``."""

    config: MOPOConfig
    name = "mopo"

    def __post_init__(self):
        self._parts(agent=sac.Agent(self.config.agent, self.spec.obs_dim, self.spec.act_dim),
                    rollouts=rollouts.Rollouts(self.config.rollouts, self.spec,
                                               self.config.penalty))

    def init(self, key, dataset, pretrained=None) -> MOPOState:
        """Step 1. ``pretrained``: this seed's :meth:`pretrain` model (else fitted here)."""
        model = dynamics.fit_or_take(key, self.spec, dataset, self.config.dynamics, pretrained)
        agent = self.agent.init(jax.random.split(key, 2)[1])
        return MOPOState(agent, model, self.rollouts.init(),
                         jnp.asarray(self.config.penalty_coef, jnp.float32))

    def refresh(self, state: MOPOState, dataset, key) -> MOPOState:
        """Step 2: model rollouts of the current stochastic policy, with u(s, a), into the
        buffer."""
        return state.replace(rollouts=self.rollouts.refresh(
            state.rollouts, state.model, dataset, key, self.agent.policy_fn(state.agent)))

    @staticmethod
    def penalized(model_rows: Transitions, penalty_coef) -> Transitions:
        """Step 3: the model rows with rewards ``r - lambda * u(s, a)``."""
        return model_rows.replace(
            rewards=model_rows.rewards - penalty_coef * model_rows.penalties)

    def update(self, state: MOPOState, dataset, key):
        """Step 4: one SAC step on dataset rows and penalised model rows."""
        config = self.config
        batch_key, agent_key = jax.random.split(key)
        real, model_rows, batch_metrics = rollouts.sample(
            state.rollouts, dataset, batch_key, config.batch_size, config.real_ratio)
        batch = rollouts.concatenate(real, self.penalized(model_rows, state.penalty_coef))
        agent, metrics = self.agent.update(state.agent, batch, agent_key)
        return state.replace(agent=agent), {**metrics, **batch_metrics,
                                            **rollouts.metrics(state.rollouts)}

    def act(self, state: MOPOState, obs, key, deterministic: bool = True):
        return self.agent.act(state.agent, obs, key, deterministic)


# (rollouts.horizon, penalty_coef) per dataset: docs/algorithms.md#mopo.
_H_LAMBDA = {
    "halfcheetah-medium": (5, 0.5), "hopper-medium": (5, 5.0), "walker2d-medium": (5, 0.5),
    "halfcheetah-medium-replay": (5, 0.5), "hopper-medium-replay": (5, 2.5),
    "walker2d-medium-replay": (1, 2.5),
    "halfcheetah-medium-expert": (5, 2.5), "hopper-medium-expert": (5, 5.0),
    "walker2d-medium-expert": (1, 2.5),
    "halfcheetah-random": (5, 0.5), "hopper-random": (5, 1.0), "walker2d-random": (1, 1.0),
}
TASK_SETTINGS = {task: {"rollouts.horizon": h, "penalty_coef": coef}
                 for task, (h, coef) in _H_LAMBDA.items()}

ALGORITHM = Registration("mopo", MOPOConfig, MOPO, TASK_SETTINGS)
