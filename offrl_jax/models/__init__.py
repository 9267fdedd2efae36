"""Dynamics models: the Gaussian ensemble, model rollouts and the model-transition buffer."""

from offrl_jax.models.buffer import ModelBuffer, Transitions, add, init_buffer, sample
from offrl_jax.models.checkpoint import restore_model, save_model
from offrl_jax.models.ensemble import (
    PENALTY_NAMES,
    EnsembleConfig,
    EnsembleState,
    evaluate,
    init_ensemble,
    predict,
    sample_members,
    sample_step,
    select_seed,
    train_ensemble,
    train_ensembles,
    uncertainty_penalties,
)
from offrl_jax.models.rollout import Rollout, rollout

__all__ = [
    "PENALTY_NAMES", "EnsembleConfig", "EnsembleState", "ModelBuffer", "Rollout", "Transitions",
    "add", "evaluate", "init_buffer", "init_ensemble", "predict", "restore_model", "rollout",
    "sample", "sample_members", "sample_step", "save_model", "select_seed", "train_ensemble",
    "train_ensembles", "uncertainty_penalties",
]
