"""COMBO: conservative offline model-based policy optimisation (Yu et al., 2021), pure functions.

1. init: train the dynamics ensemble on the dataset (as MOPO, see
   :mod:`offrl_jax.algorithms.model_based`; or take the shared one ``pretrain`` fitted) and a
   SAC agent with 3x256 networks (actor lr 1e-4, critic lr 3e-4);
2. refresh, every ``refresh_every`` updates: rollouts of the current stochastic policy in the
   model into the ring buffer (no reward penalty);
3. update, on a minibatch of ``real_ratio`` (0.5) dataset rows and model rows:
   - critic: Bellman error on the whole mixed batch, without entropy in the backup, plus
     ``beta`` (``state.cql_weight``) times the conservative term of CQL
     (:func:`offrl_jax.algorithms.cql.conservative_critic_step`, shared, not copied): push Q down
     with a log-sum-exp over 10 uniform, 10 pi(.|s) and 10 pi(.|s') actions (temperature 1) on
     the mixed batch's states, push it up on the real rows' (s, a);
   - actor and temperature: SAC's step on the mixed batch (the policy maximises Q).

``beta`` is a float32 leaf of the state (initialised from ``config.cql_weight``), so a sweep over
it vmaps like seeds. Per-dataset ``rollout_horizon`` and ``cql_weight`` are in
:data:`TASK_SETTINGS` (shared/REFERENCE.md section 3).
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp

from offrl_jax.algorithms import model_based, sac
from offrl_jax.algorithms.base import Algorithm
from offrl_jax.algorithms.cql import conservative_critic_step
from offrl_jax.algorithms.model_based import ModelBasedConfig, ModelBasedState


@dataclasses.dataclass(frozen=True)
class COMBOConfig(ModelBasedConfig):
    """Critic/actor and conservative-term settings, plus :class:`ModelBasedConfig`'s."""

    real_ratio: float = 0.5
    hidden_dims: tuple[int, ...] = (256, 256, 256)
    num_qs: int = 2
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 1e-4
    gamma: float = 0.99
    tau: float = 0.005
    target_entropy: float | None = None  # None: -act_dim
    cql_weight: float = 5.0  # beta; only the initial value of state.cql_weight
    temperature: float = 1.0
    num_samples: int = 10
    backup_entropy: bool = False


@flax.struct.dataclass
class COMBOState:
    sac: sac.SACState
    model: ModelBasedState
    cql_weight: jax.Array  # () float32, beta
    config: COMBOConfig = flax.struct.field(pytree_node=False)


def init(key, spec, config: COMBOConfig = COMBOConfig(), dataset=None,
         pretrained=None) -> COMBOState:
    """``spec``: ``obs_dim``, ``act_dim`` and ``termination_fn`` (an ``EnvSpec``).
    ``pretrained``: this seed's :func:`model_based.pretrain` ensemble (else trained here)."""
    model, agent, _ = model_based.init_model_and_agent(key, spec, config, dataset, None,
                                                       pretrained)
    return COMBOState(agent, model, jnp.asarray(config.cql_weight, jnp.float32), config)


def refresh(state: COMBOState, dataset, key) -> COMBOState:
    """Model rollouts of the current stochastic policy into the buffer (every refresh_every)."""
    return model_based.refresh_with_policy(state, dataset, key)


def update(state: COMBOState, dataset, key):
    config = state.config
    batch_key, critic_key, actor_key = jax.random.split(key, 3)
    batch, batch_metrics = model_based.mixed_batch(state.model, dataset, batch_key, config)
    real = model_based.real_rows(batch, config)
    sac_state, _, metrics = conservative_critic_step(
        state.sac, config, batch.observations, batch.next_observations, real, batch, critic_key,
        state.cql_weight)
    sac_state, actor_metrics = sac.update_actor_and_alpha(sac_state, batch, actor_key)
    sac_state = sac_state.replace(step=sac_state.step + 1)
    return state.replace(sac=sac_state), {**metrics, **actor_metrics, **batch_metrics,
                                          **model_based.model_metrics(state.model)}


def act(state: COMBOState, obs, key, deterministic: bool = True):
    return sac.act(state.sac, obs, key, deterministic)


# (rollout_horizon, cql_weight = beta) per dataset: REFERENCE s.3.
_H_BETA = {
    "halfcheetah-medium": (5, 0.5), "hopper-medium": (5, 5.0), "walker2d-medium": (1, 5.0),
    "halfcheetah-medium-replay": (5, 0.5), "hopper-medium-replay": (5, 0.5),
    "walker2d-medium-replay": (1, 0.5),
    "halfcheetah-medium-expert": (5, 5.0), "hopper-medium-expert": (5, 5.0),
    "walker2d-medium-expert": (1, 5.0),
}
TASK_SETTINGS = {task: {"rollout_horizon": h, "cql_weight": beta}
                 for task, (h, beta) in _H_BETA.items()}

ALGORITHM = Algorithm("combo", COMBOConfig, init, update, act, refresh=refresh,
                      task_settings=TASK_SETTINGS, pretrain=model_based.pretrain,
                      pretrain_id=model_based.pretrain_id)
