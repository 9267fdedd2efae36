"""The Dataset pytree: construction, episode bookkeeping, validation of arrays, sampling."""

import functools

import jax
import numpy as np
import pytest

from offrl_jax.data import (
    Dataset,
    DatasetError,
    derive_episode_ids,
    episode_lengths,
    episode_returns,
    episodes_to_arrays,
    sample_batch,
)
from offrl_jax.data.toy import toy_episodes


def _arrays(lengths=(4, 3, 5), endings=("timeout", "terminal", "none"), env="hopper"):
    return episodes_to_arrays(toy_episodes(env, lengths, endings, seed=1))


def test_from_arrays_types_shapes_and_properties():
    arrays = _arrays()
    arrays["rewards"] = arrays["rewards"][:, None].astype(np.float64)  # (N, 1) float64 accepted
    dataset = Dataset.from_arrays(**arrays, env="hopper")
    assert (dataset.size, dataset.obs_dim, dataset.act_dim) == (12, 11, 3)
    for name, value in dataset.to_numpy().items():
        expected = np.int32 if name == "episode_ids" else np.float32
        assert value.dtype == expected, name
        assert value.shape[0] == 12
    assert dataset.rewards.shape == (12,)
    assert isinstance(dataset.observations, jax.Array)
    np.testing.assert_array_equal(dataset.episode_ids, [0] * 4 + [1] * 3 + [2] * 5)


def test_episode_ids_derived_from_flags_and_discontinuities():
    terminals = np.array([0, 0, 1, 0, 0, 0, 0])
    timeouts = np.array([0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(derive_episode_ids(terminals, timeouts),
                                  [0, 0, 0, 1, 1, 2, 2])
    # An unflagged end: next_observations[4] is not observations[5].
    observations = np.arange(7, dtype=np.float32)[:, None]
    next_observations = observations + 1
    next_observations[5] = 99.0
    ids = derive_episode_ids(np.zeros(7), np.zeros(7), observations, next_observations)
    np.testing.assert_array_equal(ids, [0, 0, 0, 0, 0, 0, 1])


def test_episode_ids_split_unflagged_episode_ends():
    arrays = _arrays(endings=("none", "none", "none"))
    dataset = Dataset.from_arrays(**{**arrays, "episode_ids": None})
    np.testing.assert_array_equal(episode_lengths(dataset), [4, 3, 5])


def test_episode_returns_and_lengths():
    episodes = toy_episodes("walker2d", [2, 5, 1], ["terminal", "both", "timeout"], seed=3)
    dataset = Dataset.from_arrays(**episodes_to_arrays(episodes), env="walker2d")
    expected = [np.sum(episode["rewards"], dtype=np.float64) for episode in episodes]
    np.testing.assert_allclose(episode_returns(dataset), expected, rtol=1e-6)
    np.testing.assert_array_equal(episode_lengths(dataset), [2, 5, 1])


def test_row_both_terminal_and_timeout_is_accepted():
    arrays = _arrays(endings=("both", "terminal", "timeout"))
    dataset = Dataset.from_arrays(**arrays)
    assert float(dataset.terminals[3]) == 1.0 and float(dataset.timeouts[3]) == 1.0


def _expect_error(arrays, *fragments, env=None):
    with pytest.raises(DatasetError) as info:
        Dataset.from_arrays(**arrays, env=env, source="my_data.hdf5")
    message = str(info.value)
    for fragment in ("my_data.hdf5", "expected", "found", *fragments):
        assert fragment in message, (fragment, message)
    return message


def test_array_validation_errors():
    arrays = _arrays()
    _expect_error({**arrays, "actions": arrays["actions"][:-1]}, "'actions'", "12 rows", "11 rows")
    _expect_error({**arrays, "actions": arrays["actions"].astype(str)}, "'actions'", "numeric")
    _expect_error({**arrays, "rewards": np.ones((12, 2))}, "'rewards'", "(12, 2)")
    _expect_error({**arrays, "episode_ids": np.r_[arrays["episode_ids"][:-1], 0]},
                  "'episode_ids'", "contiguous", "episode id 0 again at row 11")
    _expect_error({**arrays, "episode_ids": arrays["episode_ids"].astype(np.float32)},
                  "'episode_ids'", "integer")
    terminal_inside = arrays["terminals"].copy()
    terminal_inside[1] = 1.0
    _expect_error({**arrays, "terminals": terminal_inside}, "'terminals'", "last row",
                  "first at row 1")
    _expect_error(arrays, "'observations'", "obs_dim 17 for env 'walker2d'", "found 11",
                  env="walker2d")
    _expect_error({**arrays, "actions": np.zeros((12, 6))}, "'actions'",
                  "act_dim 3 for env 'hopper'", "found 6", env="hopper")
    _expect_error({key: value[:0] for key, value in arrays.items()}, "'observations'", "0 rows")


def test_sample_batch_deterministic_and_rows_are_real():
    dataset = Dataset.from_arrays(**_arrays())
    batch = sample_batch(dataset, jax.random.key(0), 64)
    again = sample_batch(dataset, jax.random.key(0), 64)
    other = sample_batch(dataset, jax.random.key(1), 64)
    assert isinstance(batch, Dataset) and batch.size == 64 and batch.obs_dim == 11
    for name in ("observations", "actions", "rewards", "episode_ids"):
        np.testing.assert_array_equal(getattr(batch, name), getattr(again, name))
    assert not np.array_equal(batch.observations, other.observations)
    data, sampled = dataset.to_numpy(), batch.to_numpy()
    for row in range(64):
        matches = np.flatnonzero(np.all(data["observations"] == sampled["observations"][row],
                                        axis=1))
        assert matches.size == 1, row
        source_row = matches[0]
        for name in ("actions", "rewards", "next_observations", "terminals", "timeouts",
                     "episode_ids"):
            np.testing.assert_array_equal(sampled[name][row], data[name][source_row])
    assert np.unique(sampled["observations"], axis=0).shape[0] > 1


def test_sample_batch_vmapped_over_keys_shares_the_data():
    n, obs_dim = 37, 11
    arrays = episodes_to_arrays(toy_episodes("hopper", [20, 17], seed=5))
    dataset = Dataset.from_arrays(**arrays)
    assert dataset.size == n
    keys = jax.random.split(jax.random.key(7), 4)
    sample = jax.vmap(functools.partial(sample_batch, batch_size=8), in_axes=(None, 0))
    batches = sample(dataset, keys)
    assert batches.observations.shape == (4, 8, obs_dim)
    assert batches.actions.shape == (4, 8, 3) and batches.rewards.shape == (4, 8)
    for seed in range(4):  # each seed's batch is what that key gives unbatched
        single = sample_batch(dataset, keys[seed], 8)
        np.testing.assert_array_equal(batches.observations[seed], single.observations)
    assert not np.array_equal(batches.observations[0], batches.observations[1])
    # No per-seed copy of the data anywhere in the compiled program.
    hlo = jax.jit(sample).lower(dataset, keys).as_text()
    assert f"4x{n}x{obs_dim}xf32" not in hlo
    assert f"{n}x{obs_dim}xf32" in hlo
