"""A fixed-capacity ring buffer of model transitions, jittable with static shapes.

:func:`add` writes only the rows its mask marks valid, packed one after another from the
insert position with wrap-around (positions from a cumulative sum of the mask, then one
scatter). Filled entries are always the rows ``[0, size)``, and :func:`sample` draws only
from them, so the buffer never yields its initial zeros (``docs/algorithms.md#pitfall-6``).

Sampling an empty buffer is a bug in the caller. Outside a trace it raises ValueError; inside
jit/vmap (where it cannot raise) every sampled field is NaN, so any loss built on it is NaN
instead of silently training on zeros.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class Transitions:
    """A batch of transitions; every leaf has the same leading shape (...).

    observations, next_observations (..., obs_dim); actions (..., act_dim); rewards (...);
    terminals (...) float32 (1 for a true termination); penalties (...) or None.
    """

    observations: jax.Array
    actions: jax.Array
    rewards: jax.Array
    next_observations: jax.Array
    terminals: jax.Array
    penalties: jax.Array | None = None


@struct.dataclass
class ModelBuffer:
    """data: Transitions with leaves (capacity, ...); insert_position, size: () int32."""

    data: Transitions
    insert_position: jax.Array
    size: jax.Array

    @property
    def capacity(self) -> int:
        return self.data.rewards.shape[-1]


def init_buffer(capacity: int, obs_dim: int, act_dim: int,
                with_penalty: bool = False) -> ModelBuffer:
    if capacity < 1:
        raise ValueError(f"ModelBuffer capacity must be >= 1, found {capacity}")

    def zeros(*shape):
        return jnp.zeros((capacity, *shape), jnp.float32)

    data = Transitions(
        observations=zeros(obs_dim), actions=zeros(act_dim), rewards=zeros(),
        next_observations=zeros(obs_dim), terminals=zeros(),
        penalties=zeros() if with_penalty else None,
    )
    return ModelBuffer(data, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def _check_structure(buffer: ModelBuffer, batch: Transitions) -> None:
    if (batch.penalties is None) != (buffer.data.penalties is None):
        has = "has" if buffer.data.penalties is not None else "has no"
        raise ValueError(
            f"the buffer {has} a penalties field but the batch's penalties is "
            f"{'None' if batch.penalties is None else 'set'}; build both the same way")


@jax.jit
def add(buffer: ModelBuffer, batch: Transitions, mask) -> ModelBuffer:
    """Append the rows of ``batch`` where ``mask`` is True, oldest entries overwritten first.

    batch leaves (*mask.shape, ...), e.g. a rollout's (horizon, starts, ...); mask bool of any
    shape. Valid rows are written in row-major order; if more than ``capacity`` are valid,
    only the last ``capacity`` of them are kept.
    """
    _check_structure(buffer, batch)
    mask = jnp.asarray(mask, bool)
    num_rows = mask.size
    flat_mask = mask.reshape(num_rows)
    flat = jax.tree_util.tree_map(
        lambda leaf: leaf.reshape((num_rows,) + leaf.shape[mask.ndim:]), batch)
    capacity = buffer.capacity
    count = jnp.sum(flat_mask, dtype=jnp.int32)
    rank = jnp.cumsum(flat_mask, dtype=jnp.int32) - 1
    keep = flat_mask & (rank >= count - capacity)
    slot = jnp.where(keep, (buffer.insert_position + rank) % capacity, capacity)
    data = jax.tree_util.tree_map(
        lambda stored, new: stored.at[slot].set(new.astype(stored.dtype), mode="drop"),
        buffer.data, flat)
    return ModelBuffer(
        data=data,
        insert_position=(buffer.insert_position + count) % capacity,
        size=jnp.minimum(buffer.size + count, capacity),
    )


def sample(buffer: ModelBuffer, key, batch_size: int) -> Transitions:
    """``batch_size`` transitions drawn uniformly (with replacement) from the filled entries."""
    if not isinstance(buffer.size, jax.core.Tracer) and int(buffer.size) == 0:
        raise ValueError("cannot sample from an empty ModelBuffer: add transitions first")
    return _sample(buffer, key, batch_size)


@functools.partial(jax.jit, static_argnums=2)
def _sample(buffer: ModelBuffer, key, batch_size: int) -> Transitions:
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    empty = buffer.size == 0
    return jax.tree_util.tree_map(
        lambda leaf: jnp.where(empty, jnp.nan, leaf[idx]), buffer.data)
