"""Evaluation of policies batched over seeds, on host (Gymnasium) or device (MJX) environments."""

from offrl_jax.evaluation.evaluate import BACKENDS, EvalResult, Evaluator, check_backend

__all__ = ["BACKENDS", "EvalResult", "Evaluator", "check_backend"]
