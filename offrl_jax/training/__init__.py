"""The generic training loop (seeds vmapped, sharded, checkpointed) and the benchmark runner."""

from offrl_jax.training.loop import TrainConfig, Trainer, make_interval_fn

__all__ = ["TrainConfig", "Trainer", "make_interval_fn"]
