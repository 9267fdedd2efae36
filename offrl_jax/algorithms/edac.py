"""EDAC: ensemble-diversified actor-critic (An et al., 2021), SAC-N with a diversified ensemble,
as pure functions.

Critics that agree on their action-gradients at the data also agree just off it, in the
directions where their gradients agree: their minimum barely falls there, which is why SAC-N
needs hundreds of critics on some datasets. EDAC makes the critics' action-gradients at the
dataset's (s, a) point in different directions, so a few critics disagree quickly off the data.
Per update, on a dataset minibatch:

1. the critic step of SAC-N (:func:`offrl_jax.parts.sacn.critic_step`: every critic onto
   the TD target with the minimum over all N target critics) with, added to its loss, ``eta``
   times the ensemble similarity :func:`ensemble_similarity` of the critics' action-gradients
   :func:`action_gradients` at the minibatch's (s, a) (:meth:`EDAC.diversity_loss`):
   ``ES = mean_b 1/(N - 1) sum_{i != j} <g_i, g_j> / (|g_i| |g_j|)``,
   ``g_i = grad_a Q_i(s_b, a_b)``;
2. the policy step of SAC-N: the actor maximises ``min_i Q_i - alpha log pi``, and the
   temperature step.

As in SAC-N, both steps read the networks before this update. ``eta`` is ``state.eta``, a
float32 leaf of the state (initialised from ``config.eta``), so a sweep over it is a vmap over
states, one compiled program.

Per-dataset ``agent.num_qs`` and ``eta`` are in :data:`TASK_SETTINGS`; every default's source:
``docs/algorithms.md#edac``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp

from offrl_jax.algorithms.base import Algorithm, Registration
from offrl_jax.data import sample_batch
from offrl_jax.parts import sac
from offrl_jax.parts.sacn import clipped_ensemble_step

# Added to each gradient's norm before dividing, as the official code does: a zero gradient
# stays zero instead of becoming 0/0.
NORM_EPS = 1e-10
# The squared norm is floored here before its square root, whose derivative at 0 is infinite:
# without the floor a zero gradient (every ReLU of a critic off) makes the loss's gradient NaN.
_SQUARED_NORM_FLOOR = 1e-30


def action_gradients(q_fn: Callable, observations, actions):
    """``(B, N, A)``: each member's ``grad_a Q_i(s_b, a)`` at ``a = a_b``, for every row.

    ``q_fn(observations (B, obs), actions (B, A)) -> (N, B)`` Q-values of an N-member ensemble.
    Rows are differentiated one at a time (forward mode, one tangent per action dimension), so a
    row's gradients never mix with another row's."""
    def one_row(obs, act):
        return jax.jacfwd(lambda a: q_fn(obs[None], a[None])[:, 0])(act)  # (N, A)

    return jax.vmap(one_row)(observations, actions)


def ensemble_similarity(gradients):
    """The ensemble similarity of ``gradients (B, N, A)``, the N members' action-gradients at B
    rows: per row the sum over ordered pairs ``i != j`` of the cosine similarity of ``g_i`` and
    ``g_j``, divided by ``N - 1``; then the mean over rows. A scalar: ``N`` when the members'
    gradients are parallel, ``0`` when they are orthogonal (``N`` times the mean pairwise cosine).
    """
    num_qs = gradients.shape[-2]
    squared = jnp.sum(gradients ** 2, axis=-1, keepdims=True)
    unit = gradients / (jnp.sqrt(jnp.maximum(squared, _SQUARED_NORM_FLOOR)) + NORM_EPS)
    cosines = unit @ jnp.swapaxes(unit, -1, -2)  # (B, N, N)
    pairs = jnp.sum(cosines * (1.0 - jnp.eye(num_qs)), axis=(-2, -1))
    return jnp.mean(pairs) / (num_qs - 1)


@dataclasses.dataclass(frozen=True)
class EDACConfig:
    agent: sac.Config = sac.Config(hidden_dims=(256, 256, 256), num_qs=10)
    batch_size: int = 256
    eta: float = 1.0  # only the initial value of state.eta

    def __post_init__(self):
        if self.agent.num_qs < 2:
            raise ValueError(f"EDACConfig: agent.num_qs must be >= 2 (the diversity term "
                             f"compares pairs of critics), found {self.agent.num_qs}")


@flax.struct.dataclass
class EDACState:
    agent: sac.State
    eta: jax.Array  # () float32


@dataclasses.dataclass(frozen=True)
class EDAC(Algorithm):
    """``EDAC(config, spec)``; ``spec`` needs ``obs_dim`` and ``act_dim``."""

    config: EDACConfig
    name = "edac"

    def __post_init__(self):
        self._parts(agent=sac.Agent(self.config.agent, self.spec.obs_dim, self.spec.act_dim))

    def init(self, key, dataset=None, pretrained=None) -> EDACState:
        return EDACState(self.agent.init(key), jnp.asarray(self.config.eta, jnp.float32))

    def diversity_loss(self, eta, batch) -> Callable:
        """Step 1's added term as a function of the critics' parameters: ``eta * ES`` at the
        batch's (s, a), and ES as a metric."""
        def loss(critic_params):
            q_fn = lambda obs, act: self.agent.q(critic_params, obs, act)  # noqa: E731
            similarity = ensemble_similarity(
                action_gradients(q_fn, batch.observations, batch.actions))
            return eta * similarity, {"ensemble_similarity": similarity}

        return loss

    def update(self, state: EDACState, dataset, key):
        batch_key, agent_key = jax.random.split(key)
        batch = sample_batch(dataset, batch_key, self.config.batch_size)
        agent, metrics = clipped_ensemble_step(self.agent, state.agent, batch, agent_key,
                                               self.diversity_loss(state.eta, batch))
        return state.replace(agent=agent), metrics

    def act(self, state: EDACState, obs, key, deterministic: bool = True):
        return self.agent.act(state.agent, obs, key, deterministic)


# (agent.num_qs, eta) per dataset: docs/algorithms.md#edac.
_NUM_QS_ETA = {
    "halfcheetah-medium": (10, 1.0), "halfcheetah-medium-replay": (10, 1.0),
    "halfcheetah-medium-expert": (10, 5.0),
    "hopper-medium": (50, 1.0), "hopper-medium-replay": (50, 1.0),
    "hopper-medium-expert": (50, 1.0),
    "walker2d-medium": (10, 1.0), "walker2d-medium-replay": (10, 1.0),
    "walker2d-medium-expert": (10, 5.0),
}
TASK_SETTINGS = {task: {"agent.num_qs": n, "eta": eta} for task, (n, eta) in _NUM_QS_ETA.items()}

ALGORITHM = Registration("edac", EDACConfig, EDAC, TASK_SETTINGS)
