"""SAC-N (An et al., 2021): soft actor-critic with N critics clipped to their minimum, as pure
functions.

The paper's finding: the minimum over N independently trained critics falls with their spread,
and their spread grows away from the data, so clipped Q-learning with a large N already
penalises the actions the dataset does not cover. Per update, on a dataset minibatch:

1. the critic step: each of the N critics regresses onto
   ``y = r + gamma (1 - d) (min_i Q'_i(s', a') - alpha log pi(a'|s'))``, ``a' ~ pi(.|s')``, the
   minimum over all N target critics; the loss is the sum over critics of their mean squared
   error, then the target critics' soft update;
2. the policy step: the actor maximises ``min_i Q_i(s, a) - alpha log pi(a|s)``, ``a ~ pi(.|s)``,
   and the temperature steps towards the target entropy (the SAC part's step).

Both steps read the networks as they were before this update, as in the official code (which
computes every loss first, then steps the optimisers). Steps 1 and 2 are the part
:mod:`offrl_jax.parts.sacn` (:func:`~offrl_jax.parts.sacn.clipped_ensemble_step`), which EDAC
(:mod:`offrl_jax.algorithms.edac`) shares, adding a term to step 1.

Per-dataset N is in :data:`TASK_SETTINGS`; every default's source: ``docs/algorithms.md#sac-n``.
"""

from __future__ import annotations

import dataclasses

import flax.struct
import jax

from offrl_jax.algorithms.base import Algorithm, Registration
from offrl_jax.data import sample_batch
from offrl_jax.parts import sac
from offrl_jax.parts.sacn import clipped_ensemble_step


@dataclasses.dataclass(frozen=True)
class SACNConfig:
    agent: sac.Config = sac.Config(hidden_dims=(256, 256, 256), num_qs=10)
    batch_size: int = 256


@flax.struct.dataclass
class SACNState:
    agent: sac.State


@dataclasses.dataclass(frozen=True)
class SACN(Algorithm):
    """``SACN(config, spec)``; ``spec`` needs ``obs_dim`` and ``act_dim``."""

    config: SACNConfig
    name = "sacn"

    def __post_init__(self):
        self._parts(agent=sac.Agent(self.config.agent, self.spec.obs_dim, self.spec.act_dim))

    def init(self, key, dataset=None, pretrained=None) -> SACNState:
        return SACNState(self.agent.init(key))

    def update(self, state: SACNState, dataset, key):
        batch_key, agent_key = jax.random.split(key)
        batch = sample_batch(dataset, batch_key, self.config.batch_size)
        agent, metrics = clipped_ensemble_step(self.agent, state.agent, batch, agent_key)
        return state.replace(agent=agent), metrics

    def act(self, state: SACNState, obs, key, deterministic: bool = True):
        return self.agent.act(state.agent, obs, key, deterministic)


# N per dataset: docs/algorithms.md#sac-n.
_NUM_QS = {
    "halfcheetah-medium": 10, "halfcheetah-medium-replay": 10, "halfcheetah-medium-expert": 10,
    "hopper-medium": 500, "hopper-medium-replay": 200, "hopper-medium-expert": 200,
    "walker2d-medium": 20, "walker2d-medium-replay": 20, "walker2d-medium-expert": 20,
}
TASK_SETTINGS = {task: {"agent.num_qs": n} for task, n in _NUM_QS.items()}

ALGORITHM = Registration("sacn", SACNConfig, SACN, TASK_SETTINGS)
