"""The suite's own D4RL-style datasets: behaviour SAC training, collection, file generation."""

from offrl_jax.generation.generate import generate_env_datasets, is_complete
from offrl_jax.generation.profiles import PROFILES, GenerationProfile, get_profile

__all__ = ["PROFILES", "GenerationProfile", "generate_env_datasets", "get_profile",
           "is_complete"]
