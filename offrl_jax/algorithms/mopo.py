"""MOPO: model-based offline policy optimisation (Yu et al., 2020) as pure update functions.

1. init: train a dynamics ensemble on the dataset (7 members, 5 elites; see
   :mod:`offrl_jax.algorithms.model_based`; or take the one ``pretrain`` fitted, shared with
   COMBO, MOReL and RAMBO) and a SAC agent (2x256, actor lr 1e-4, critic lr 3e-4, gamma 0.99,
   tau 0.005, automatic entropy towards -|A|);
2. refresh, every ``refresh_every`` updates: roll the current stochastic policy out in the model
   (``rollout_batch_size`` dataset start states, horizon ``rollout_horizon``), storing each
   transition's uncertainty u(s, a) (``penalty``: MOPO's "aleatoric" max over members of
   ||sigma||_2 by default, or "pairwise_max" / "ensemble_std");
3. update: one SAC step on a minibatch of ``real_ratio`` (0.05) dataset rows and model rows whose
   rewards are ``r - lambda * u(s, a)``: SAC in the uncertainty-penalised MDP.

``lambda`` is ``state.penalty_coef``, a float32 leaf of the state (initialised from
``config.penalty_coef``), not a static config field: a sweep over lambda is a vmap over states
that differ only in that leaf, so four values train as ONE compiled program (see
:func:`offrl_jax.algorithms.model_based.sweep_init`). The rollout horizon sets the buffer's shape
and stays static. The penalty is applied when a batch is sampled, so the buffer keeps the raw
model rewards and uncertainties.

Per-dataset ``rollout_horizon`` and ``penalty_coef`` are in :data:`TASK_SETTINGS`
(shared/REFERENCE.md section 3; random sets from the official MOPO code, D4RL v0).
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from offrl_jax.algorithms import model_based, sac
from offrl_jax.algorithms.base import Algorithm
from offrl_jax.algorithms.model_based import ModelBasedConfig, ModelBasedState
from offrl_jax.models import PENALTY_NAMES


@dataclasses.dataclass(frozen=True)
class MOPOConfig(ModelBasedConfig):
    """SAC settings, the penalty, plus the model/rollout settings of :class:`ModelBasedConfig`."""

    real_ratio: float = 0.05
    hidden_dims: tuple[int, ...] = (256, 256)
    num_qs: int = 2
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 1e-4
    gamma: float = 0.99
    tau: float = 0.005
    target_entropy: float | None = None  # None: -act_dim
    penalty: str = "aleatoric"
    penalty_coef: float = 1.0  # lambda; only the initial value of state.penalty_coef

    def __post_init__(self):
        super().__post_init__()
        if self.penalty not in PENALTY_NAMES:
            raise ValueError(f"MOPOConfig.penalty must be one of {PENALTY_NAMES}, found "
                             f"{self.penalty!r}")


@flax.struct.dataclass
class MOPOState:
    sac: sac.SACState
    model: ModelBasedState
    penalty_coef: jax.Array  # () float32, lambda
    config: MOPOConfig = flax.struct.field(pytree_node=False)


def init(key, spec, config: MOPOConfig = MOPOConfig(), dataset=None,
         pretrained=None) -> MOPOState:
    """``spec``: ``obs_dim``, ``act_dim`` and ``termination_fn`` (an ``EnvSpec``).
    ``pretrained``: this seed's :func:`model_based.pretrain` ensemble (else trained here)."""
    model, agent, _ = model_based.init_model_and_agent(key, spec, config, dataset,
                                                       config.penalty, pretrained)
    return MOPOState(agent, model, jnp.asarray(config.penalty_coef, jnp.float32), config)


def refresh(state: MOPOState, dataset, key) -> MOPOState:
    """Model rollouts of the current stochastic policy into the buffer (every refresh_every)."""
    return model_based.refresh_with_policy(state, dataset, key)


def update(state: MOPOState, dataset, key):
    """One SAC step on the mixed batch with penalised model rewards."""
    return model_based.sac_update_on_mixed_batch(state, dataset, key, state.penalty_coef)


def act(state: MOPOState, obs, key, deterministic: bool = True):
    return sac.act(state.sac, obs, key, deterministic)


# (rollout_horizon, penalty_coef) per dataset: REFERENCE s.3.
_H_LAMBDA = {
    "halfcheetah-medium": (5, 0.5), "hopper-medium": (5, 5.0), "walker2d-medium": (5, 0.5),
    "halfcheetah-medium-replay": (5, 0.5), "hopper-medium-replay": (5, 2.5),
    "walker2d-medium-replay": (1, 2.5),
    "halfcheetah-medium-expert": (5, 2.5), "hopper-medium-expert": (5, 5.0),
    "walker2d-medium-expert": (1, 2.5),
    "halfcheetah-random": (5, 0.5), "hopper-random": (5, 1.0), "walker2d-random": (1, 1.0),
}
TASK_SETTINGS = {task: {"rollout_horizon": h, "penalty_coef": coef}
                 for task, (h, coef) in _H_LAMBDA.items()}

ALGORITHM = Algorithm("mopo", MOPOConfig, init, update, act, refresh=refresh,
                      task_settings=TASK_SETTINGS, pretrain=model_based.pretrain,
                      pretrain_id=model_based.pretrain_id)
