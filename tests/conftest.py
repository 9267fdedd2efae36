import pytest

from offrl_jax.data import Dataset, episodes_to_arrays
from offrl_jax.data.toy import toy_episodes


@pytest.fixture(scope="session")
def toy_hopper_dataset() -> Dataset:
    """A small synthetic hopper-shaped dataset (random-walk observations)."""
    arrays = episodes_to_arrays(toy_episodes("hopper", [200, 150, 250], seed=0))
    return Dataset.from_arrays(**arrays, env="hopper")
