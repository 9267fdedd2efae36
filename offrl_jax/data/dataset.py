"""The in-memory dataset: a pytree of device arrays, and pure sampling from it.

Shapes: N transitions, ``obs = obs_dim``, ``act = act_dim``. Row i is the transition
``(observations[i], actions[i], rewards[i], next_observations[i])``; ``terminals[i] = 1`` means
the episode really ended (no bootstrap from ``next_observations[i]``), ``timeouts[i] = 1`` means
it was cut by the time limit (bootstrap as usual). ``episode_ids[i]`` numbers the episodes in
order; each episode is a contiguous block of rows.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from offrl_jax.data.validate import validate_arrays


@struct.dataclass
class Dataset:
    """Transitions as a pytree; all fields float32 except ``episode_ids`` (int32).

    observations       (N, obs)
    actions            (N, act)
    rewards            (N,)
    next_observations  (N, obs)
    terminals          (N,)   1.0 where the episode really ended
    timeouts           (N,)   1.0 where the time limit cut the episode
    episode_ids        (N,)   episode index, contiguous blocks in order

    A batch from :func:`sample_batch` is a ``Dataset`` too, with N = batch size (and extra
    leading axes under ``vmap``, e.g. ``(seeds, batch, obs)``).
    """

    observations: jax.Array
    actions: jax.Array
    rewards: jax.Array
    next_observations: jax.Array
    terminals: jax.Array
    timeouts: jax.Array
    episode_ids: jax.Array

    @property
    def size(self) -> int:
        """N, the number of transitions (the leading axis)."""
        return self.rewards.shape[0]

    @property
    def obs_dim(self) -> int:
        return self.observations.shape[-1]

    @property
    def act_dim(self) -> int:
        return self.actions.shape[-1]

    @classmethod
    def from_arrays(cls, *, observations, actions, rewards, next_observations, terminals,
                    timeouts, episode_ids=None, env: str | None = None,
                    source: str = "arrays") -> Dataset:
        """Validate numpy (or array-like) data and put it on the default device.

        ``rewards``/``terminals``/``timeouts`` may be ``(N,)`` or ``(N, 1)``. ``episode_ids``
        is derived when None (see :func:`offrl_jax.data.validate.derive_episode_ids`). With
        ``env`` the dimensions must match that environment. ``source`` names the data in error
        messages (readers pass the file path). Raises :class:`DatasetError`.
        """
        arrays = validate_arrays(
            dict(observations=observations, actions=actions, rewards=rewards,
                 next_observations=next_observations, terminals=terminals, timeouts=timeouts,
                 episode_ids=episode_ids),
            source=source, env=env)
        return cls(**{key: jnp.asarray(value) for key, value in arrays.items()})

    def to_numpy(self) -> dict[str, np.ndarray]:
        """All fields as host numpy arrays (a dict keyed by field name)."""
        return {field: np.asarray(getattr(self, field)) for field in _FIELDS}


_FIELDS = tuple(Dataset.__dataclass_fields__)


@functools.partial(jax.jit, static_argnames="batch_size")
def sample_batch(dataset: Dataset, key: jax.Array, batch_size: int) -> Dataset:
    """``batch_size`` rows drawn uniformly with replacement; a ``Dataset`` of that size.

    Pure and deterministic in ``key``. Many seeds share one copy of the data::

        sample = functools.partial(sample_batch, batch_size=256)
        batches = jax.vmap(sample, in_axes=(None, 0))(dataset, keys)  # (seeds, 256, ...)

    The vmapped gather indexes the single unbatched dataset with per-seed indices; the data is
    never broadcast to ``(seeds, N, ...)``.
    """
    indices = jax.random.randint(key, (batch_size,), 0, dataset.size)
    return jax.tree.map(lambda field: jnp.take(field, indices, axis=0), dataset)


def episodes_to_arrays(episodes) -> dict[str, np.ndarray]:
    """Flatten episodes into transition arrays (numpy, not validated).

    Each episode maps ``observations (T + 1, obs)``, ``actions (T, act)``, ``rewards (T,)``,
    ``terminations (T,)``, ``truncations (T,)`` (Minari's per-episode layout, also what a
    rollout collector naturally produces). Returns the keys of :meth:`Dataset.from_arrays`:
    ``observations = obs[:-1]``, ``next_observations = obs[1:]``, ``terminals``, ``timeouts``
    and ``episode_ids`` (the episode's position in ``episodes``), concatenated in order.
    """
    episodes = list(episodes)

    def stack(key, rows=slice(None)):
        return np.concatenate([np.asarray(episode[key])[rows] for episode in episodes])

    return dict(
        observations=stack("observations", slice(None, -1)),
        actions=stack("actions"),
        rewards=stack("rewards"),
        next_observations=stack("observations", slice(1, None)),
        terminals=stack("terminations"),
        timeouts=stack("truncations"),
        episode_ids=np.concatenate([np.full(len(episode["actions"]), index, dtype=np.int64)
                                    for index, episode in enumerate(episodes)]),
    )


def _episode_starts(dataset: Dataset) -> tuple[np.ndarray, int]:
    ids = np.asarray(dataset.episode_ids)
    return np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]), ids.shape[0]


def episode_returns(dataset: Dataset) -> np.ndarray:
    """Undiscounted return of each episode in row order, ``(episodes,)`` float64.

    An episode whose last step was dropped by a reader (see ``read_d4rl_hdf5``) or that the
    file cut short counts only the rows present.
    """
    starts, _ = _episode_starts(dataset)
    return np.add.reduceat(np.asarray(dataset.rewards, dtype=np.float64), starts)


def episode_lengths(dataset: Dataset) -> np.ndarray:
    """Number of rows of each episode in row order, ``(episodes,)`` int64."""
    starts, n = _episode_starts(dataset)
    return np.diff(np.r_[starts, n])
