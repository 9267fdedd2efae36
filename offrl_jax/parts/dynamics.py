"""The dynamics model part: a Gaussian ensemble (or ARMOR's single model) fitted to the dataset.

The model predicts ``(s' - s, r)`` as a diagonal Gaussian per member, is fitted by maximum
likelihood with per-layer weight decay and learned log-variance bounds on a bootstrap of the
data (:func:`offrl_jax.models.ensemble.train_ensemble`), stops on a holdout split and ranks its
members by holdout error (the best ``elites`` are used for rollouts). Defaults (MBPO's and
MOPO's 7 members, 5 elites, 4 x 200): ``docs/algorithms.md#dynamics-ensemble``.

A model is a function of the init key, the dataset and this config only: :func:`model_key`
derives its key the same way in every algorithm, so for one seed and dataset MOPO, COMBO,
MOReL and RAMBO fit the IDENTICAL ensemble, and :func:`model_id` names it. The training loop
fits it once per seed and shares it (:mod:`offrl_jax.models.store`).

Algorithms reach the model through this part: besides fitting it, the part hands them what they
read from it (:func:`predict`, :func:`sample_members`, :func:`uncertainty_penalties` and
:data:`PENALTY_NAMES`, :func:`training_loss` for RAMBO's adversary, the state type
:class:`EnsembleState`).
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from offrl_jax.models import (
    PENALTY_NAMES,
    EnsembleConfig,
    EnsembleState,
    predict,
    sample_members,
    train_ensemble,
    uncertainty_penalties,
)
from offrl_jax.models.ensemble import training_loss

__all__ = [
    "MODEL_KEY_TAG", "PAPER_WEIGHT_DECAYS", "PENALTY_NAMES", "Config", "EnsembleState",
    "SharedModel", "fit", "fit_or_take", "model_id", "model_key", "predict", "sample_members",
    "training_loss", "uncertainty_penalties",
]

# fold_in tag of the dynamics model's key. fold_in(key, i) equals split(key, n)[i] (JAX's
# partitionable threefry), so a small tag would collide with the keys algorithms split from the
# same init key; this one ("MODL") is far above any split count.
MODEL_KEY_TAG = 0x4D4F444C

# MBPO/MOPO per-layer L2 weights for the 4 x 200 ensemble.
PAPER_WEIGHT_DECAYS = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)


@dataclasses.dataclass(frozen=True)
class Config:
    """``weight_decays=None``: the paper's per-layer values for 4 hidden layers, else
    ``linspace(2.5e-5, 1e-4)`` over the layers. ``bootstrap=False`` fits every member on all the
    training rows (ARMOR's single model)."""

    members: int = 7
    elites: int = 5
    hidden_dims: tuple[int, ...] = (200, 200, 200, 200)
    weight_decays: tuple[float, ...] | None = None
    lr: float = 1e-3
    batch_size: int = 256
    max_epochs: int = 1000
    patience: int = 5
    max_holdout: int = 1000
    bootstrap: bool = True

    def ensemble_config(self) -> EnsembleConfig:
        decays = self.weight_decays
        layers = len(self.hidden_dims) + 1
        if decays is None:
            decays = (PAPER_WEIGHT_DECAYS if layers == len(PAPER_WEIGHT_DECAYS) else
                      tuple(float(d) for d in np.linspace(2.5e-5, 1e-4, layers)))
        return EnsembleConfig(
            num_members=self.members, num_elites=self.elites,
            hidden_sizes=tuple(self.hidden_dims), weight_decays=tuple(decays),
            learning_rate=self.lr, batch_size=self.batch_size, max_holdout=self.max_holdout,
            bootstrap=self.bootstrap, max_epochs=self.max_epochs, patience=self.patience)


def model_key(key) -> jax.Array:
    """The dynamics model's training key from an algorithm's init key: the same derivation in
    every model-based algorithm, so equal seeds train equal models. Other init keys are split
    from ``key`` and never collide with this one."""
    return jax.random.fold_in(key, MODEL_KEY_TAG)


def _check_dims(what: str, dims, spec) -> None:
    if tuple(dims) != (spec.obs_dim, spec.act_dim):
        raise ValueError(f"{what} has obs/act dims {tuple(dims)} but the env spec "
                         f"{getattr(spec, 'name', spec)!r} expects ({spec.obs_dim}, "
                         f"{spec.act_dim})")


def fit(key, spec, dataset, config: Config) -> EnsembleState:
    """The model fitted on the whole dataset (holdout split inside) with :func:`model_key` of
    the init key ``key``. Jittable, vmappable over ``key`` with the dataset shared."""
    if dataset is None:
        raise ValueError("model-based algorithms fit their dynamics model in init: pass the "
                         "dataset (init(key, dataset))")
    _check_dims("dataset", (dataset.obs_dim, dataset.act_dim), spec)
    return train_ensemble(model_key(key), dataset.observations, dataset.actions,
                          dataset.rewards, dataset.next_observations, config.ensemble_config())


def fit_or_take(key, spec, dataset, config: Config,
                pretrained: EnsembleState | None) -> EnsembleState:
    """``pretrained`` (one seed's :func:`fit`, from the model store) after checking its dims,
    else :func:`fit`."""
    if pretrained is None:
        return fit(key, spec, dataset, config)
    _check_dims("pretrained model", (pretrained.obs_dim, pretrained.act_dim), spec)
    return pretrained


def model_id(config: Config) -> str:
    """What a :func:`fit` result depends on besides the dataset, env and key (bump the version
    when the fit changes what it computes). Equal ids mean bit-identical models for equal
    inputs; the string is the one earlier releases wrote, so their model stores stay valid."""
    return f"fit_model/v1:{config.ensemble_config()!r}"


class SharedModel:
    """Mixin of an :class:`~offrl_jax.algorithms.base.Algorithm` whose config has a
    ``dynamics`` part: its model is ``pretrain`` (fitted once per seed by the training loop and
    shared, through :attr:`pretrain_id`, with every algorithm of equal dynamics config)."""

    def pretrain(self, key, dataset) -> EnsembleState:
        return fit(key, self.spec, dataset, self.config.dynamics)

    @property
    def pretrain_id(self) -> str:
        return model_id(self.config.dynamics)
