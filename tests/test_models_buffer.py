"""The model-transition ring buffer: masked compacted adds, wrap-around, sampling only filled
entries (docs/algorithms.md#pitfall-6), and sampling an empty buffer."""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offrl_jax.models import Transitions, add, init_buffer, sample

OBS_DIM, ACT_DIM, CAPACITY = 2, 1, 10
jit_add = jax.jit(add)
jit_sample = jax.jit(sample, static_argnums=2)


def numbered_batch(first_id: int, rows: int, with_penalty: bool = False) -> Transitions:
    """Row i carries id first_id + i (>= 1) in every field, so no real row is all zeros."""
    ids = jnp.arange(first_id, first_id + rows, dtype=jnp.float32)
    return Transitions(
        observations=jnp.stack([ids, -ids], axis=1), actions=ids[:, None], rewards=ids,
        next_observations=jnp.stack([ids + 0.5, -ids], axis=1), terminals=(ids % 2 == 0) * 1.0,
        penalties=ids * 0.1 if with_penalty else None,
    )


def test_masked_adds_wrap_around_and_keep_the_newest_entries():
    buffer = init_buffer(CAPACITY, OBS_DIM, ACT_DIM)
    reference = collections.deque(maxlen=CAPACITY)  # ids in insertion order
    rng = np.random.default_rng(0)
    next_id = 1
    for _ in range(12):
        rows = 7
        mask = rng.random(rows) < 0.6
        batch = numbered_batch(next_id, rows)
        reference.extend((np.arange(next_id, next_id + rows)[mask]).tolist())
        next_id += rows
        buffer = jit_add(buffer, batch, mask)
        size = int(buffer.size)
        assert size == len(reference)
        stored = np.asarray(buffer.data.rewards)
        # Filled entries are exactly the newest ids; in ring order starting at the oldest.
        assert sorted(stored[:size].tolist()) == sorted(reference)
        if size == CAPACITY:
            start = int(buffer.insert_position)
            ring = np.concatenate([stored[start:], stored[:start]])
            np.testing.assert_array_equal(ring, list(reference))
        samples = jit_sample(buffer, jax.random.key(next_id), 256)
        ids = np.asarray(samples.rewards)
        assert np.all(ids >= 1) and set(ids.tolist()) <= set(reference)
        # Every field of a sampled row belongs to the same stored transition.
        np.testing.assert_array_equal(np.asarray(samples.observations)[:, 0], ids)
        np.testing.assert_array_equal(np.asarray(samples.next_observations)[:, 0], ids + 0.5)
    assert next_id > 5 * CAPACITY  # wrapped around several times


def test_adding_more_than_capacity_keeps_the_last_rows():
    buffer = init_buffer(CAPACITY, OBS_DIM, ACT_DIM)
    buffer = add(buffer, numbered_batch(1, 3), jnp.ones(3, bool))
    mask = jnp.ones(25, bool).at[24].set(False)  # valid ids 4..27
    buffer = add(buffer, numbered_batch(4, 25), mask)
    assert int(buffer.size) == CAPACITY
    assert sorted(np.asarray(buffer.data.rewards).tolist()) == list(range(18, 28))
    assert int(buffer.insert_position) == (3 + 24) % CAPACITY


def test_add_accepts_rollout_shaped_batches_and_penalties():
    buffer = init_buffer(CAPACITY, OBS_DIM, ACT_DIM, with_penalty=True)
    flat = numbered_batch(1, 6, with_penalty=True)
    batch = jax.tree_util.tree_map(lambda x: x.reshape((2, 3) + x.shape[1:]), flat)
    mask = jnp.array([[True, False, True], [False, True, True]])
    buffer = add(buffer, batch, mask)
    np.testing.assert_array_equal(np.asarray(buffer.data.rewards)[:4], [1, 3, 5, 6])
    np.testing.assert_allclose(np.asarray(buffer.data.penalties)[:4], [0.1, 0.3, 0.5, 0.6])
    np.testing.assert_array_equal(np.asarray(buffer.data.terminals)[:4], [0, 0, 0, 1])
    with pytest.raises(ValueError, match="penalties"):
        add(buffer, numbered_batch(1, 2), jnp.ones(2, bool))


def test_an_all_invalid_add_changes_nothing():
    buffer = add(init_buffer(CAPACITY, OBS_DIM, ACT_DIM), numbered_batch(1, 4), jnp.ones(4, bool))
    after = add(buffer, numbered_batch(100, 5), jnp.zeros(5, bool))
    assert int(after.size) == 4 and int(after.insert_position) == 4
    np.testing.assert_array_equal(after.data.rewards, buffer.data.rewards)


def test_sampling_an_empty_buffer_raises_or_gives_nan_under_jit():
    empty = init_buffer(CAPACITY, OBS_DIM, ACT_DIM)
    with pytest.raises(ValueError, match="empty ModelBuffer"):
        sample(empty, jax.random.key(0), 4)
    traced = jit_sample(empty, jax.random.key(0), 4)
    for leaf in jax.tree_util.tree_leaves(traced):
        assert np.all(np.isnan(np.asarray(leaf)))
