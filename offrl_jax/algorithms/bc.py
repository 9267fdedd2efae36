"""Behaviour cloning: a tanh-Gaussian policy fit by maximum likelihood to the dataset's actions.

A baseline of the poster's table and the reference policy pi_ref of ARMOR. The whole algorithm
is the cloning part (:mod:`offrl_jax.parts.cloning`), which ATAC's and ARMOR's warm start share.
"""

from __future__ import annotations

import dataclasses

from offrl_jax.algorithms.base import Algorithm, Registration
from offrl_jax.parts import cloning, config_repr


@dataclasses.dataclass(frozen=True)
class BCConfig(cloning.Config):
    """The cloning part's settings, addressed as BC's own (``bc.batch_size``)."""

    __repr__ = config_repr


BCState = cloning.State


@dataclasses.dataclass(frozen=True)
class BC(Algorithm):
    """``BC(config, spec)``; ``spec`` needs ``obs_dim`` and ``act_dim``."""

    config: BCConfig
    name = "bc"

    def __post_init__(self):
        self._parts(cloner=cloning.Cloner(self.config, self.spec.obs_dim, self.spec.act_dim))

    def init(self, key, dataset=None, pretrained=None) -> BCState:
        return self.cloner.init(key)

    def update(self, state: BCState, dataset, key):
        return self.cloner.update(state, dataset, key)

    def act(self, state: BCState, obs, key, deterministic: bool = True):
        return self.cloner.act(state, obs, key, deterministic)


ALGORITHM = Registration("bc", BCConfig, BC)
