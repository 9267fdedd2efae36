"""The suite's own D4RL-style datasets: behaviour SAC training, collection, file generation."""

from offrl_jax.generation.data_profiles import DATA_PROFILES, DataProfile, get_data_profile
from offrl_jax.generation.generate import generate_env_datasets, is_complete

__all__ = ["DATA_PROFILES", "DataProfile", "generate_env_datasets", "get_data_profile",
           "is_complete"]
