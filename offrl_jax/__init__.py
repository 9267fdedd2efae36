"""offrl_jax: a JAX benchmark suite for offline RL on MuJoCo locomotion."""

__version__ = "0.1.0"
