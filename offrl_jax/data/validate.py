"""Checks that turn raw arrays into a dataset we are willing to train on.

Every failure raises :class:`DatasetError` whose message names the source (a file path, or
``"arrays"`` for in-memory data), the key, what was expected and what was found, e.g.::

    /data/hopper.hdf5: key 'observations': expected obs_dim 11 for env 'hopper', found 17
    (shape (1000, 17))

Conventions (they hold for every reader):

- ``rewards``, ``terminals``, ``timeouts`` may be stored ``(N,)`` or ``(N, 1)``.
- ``terminals`` and ``timeouts`` must be binary (0/1 or bool).
- A row may be both terminal and timeout (Gymnasium reports both when an agent falls on the
  last allowed step). The terminal flag takes precedence: the Bellman backup does not bootstrap
  from that row; the timeout only says the episode also hit its time limit.
- A terminal or timeout row must be the last row of its episode.
- Each episode occupies one contiguous block of rows (``episode_ids`` never comes back to an
  earlier episode).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from offrl_jax.tasks import get_env_spec

FLOAT_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts")
"""Keys every dataset has; all are stored as float32."""

_FLAG_KEYS = ("terminals", "timeouts")
_VECTOR_KEYS = ("rewards", "terminals", "timeouts")


class DatasetError(ValueError):
    """A dataset file or array set that cannot be loaded as it is (the message says why)."""


def error(source: str, key: str, expected: str, found: str) -> DatasetError:
    """The one message format: ``{source}: key '{key}': expected {expected}, found {found}``."""
    return DatasetError(f"{source}: key '{key}': expected {expected}, found {found}")


def derive_episode_ids(terminals: np.ndarray, timeouts: np.ndarray,
                       observations: np.ndarray | None = None,
                       next_observations: np.ndarray | None = None) -> np.ndarray:
    """Episode index of each row, ``(N,)`` int32, counting from 0 in file order.

    An episode ends after row i when row i is terminal or timeout, and, when both observation
    arrays are given, also when ``next_observations[i]`` is not ``observations[i + 1]``: that
    catches episode ends the file forgot to flag (D4RL medium-replay has such unmarked
    timeouts), so episode returns and lengths stay right.
    """
    ends = (np.asarray(terminals) > 0.5) | (np.asarray(timeouts) > 0.5)
    n = ends.shape[0]
    if observations is not None and next_observations is not None and n > 1:
        same = np.isclose(next_observations[:-1], observations[1:], rtol=1e-5, atol=1e-6)
        ends[:-1] |= ~np.all(same, axis=1)
    ids = np.zeros(n, dtype=np.int32)
    if n > 1:
        ids[1:] = np.cumsum(ends[:-1], dtype=np.int64)
    return ids


def validate_arrays(arrays: Mapping[str, object], source: str = "arrays",
                    env: str | None = None) -> dict[str, np.ndarray]:
    """Check a dataset given as arrays and return them normalised, as numpy.

    ``arrays`` holds the six :data:`FLOAT_KEYS` and optionally ``episode_ids`` (derived with
    :func:`derive_episode_ids` when absent or None). Returns float32 arrays of shapes
    ``observations/next_observations (N, obs)``, ``actions (N, act)``,
    ``rewards/terminals/timeouts (N,)`` and int32 ``episode_ids (N,)``. When ``env`` is given
    the dimensions must match ``get_env_spec(env)``. Raises :class:`DatasetError`.
    """
    for key in FLOAT_KEYS:
        if key not in arrays or arrays[key] is None:
            present = ", ".join(sorted(k for k in arrays if arrays[k] is not None)) or "none"
            raise error(source, key, "an array", f"no such key (keys present: {present})")

    out: dict[str, np.ndarray] = {}
    for key in FLOAT_KEYS:
        value = np.asarray(arrays[key])
        if value.dtype.kind not in "biuf":
            raise error(source, key, "a numeric array", f"dtype {value.dtype}")
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: caught below
            out[key] = value.astype(np.float32, copy=False)

    n = out["observations"].shape[0] if out["observations"].ndim else 0
    for key in ("observations", "actions"):
        if out[key].ndim != 2:
            raise error(source, key, f"a 2-D array (N, {key[:3]}_dim)", f"shape {out[key].shape}")
    for key in _VECTOR_KEYS:
        value = out[key]
        if value.ndim == 2 and value.shape[1] == 1:
            out[key] = value = value[:, 0]
        if value.ndim != 1:
            raise error(source, key, "shape (N,) or (N, 1)", f"shape {value.shape}")
    if out["next_observations"].shape[1:] != out["observations"].shape[1:] or \
            out["next_observations"].ndim != 2:
        raise error(source, "next_observations",
                    f"the shape of 'observations' {out['observations'].shape}",
                    f"shape {out['next_observations'].shape}")
    for key in FLOAT_KEYS[1:]:
        if out[key].shape[0] != n:
            raise error(source, key, f"{n} rows (the length of 'observations')",
                        f"{out[key].shape[0]} rows")
    if n == 0:
        raise error(source, "observations", "at least one row", "an empty dataset (0 rows)")

    if env is not None:
        spec = get_env_spec(env)
        for key, want in (("observations", spec.obs_dim), ("actions", spec.act_dim)):
            got = out[key].shape[1]
            if got != want:
                raise error(source, key, f"{key[:3]}_dim {want} for env '{env}'",
                            f"{got} (shape {out[key].shape})")

    for key in FLOAT_KEYS:
        bad = ~np.isfinite(out[key])
        if bad.ndim == 2:
            bad_rows = bad.any(axis=1)
        else:
            bad_rows = bad
        if bad_rows.any():
            first = int(np.argmax(bad_rows))
            raise error(source, key, "finite values",
                        f"{int(bad.sum())} NaN/inf values in {int(bad_rows.sum())} rows "
                        f"(first at row {first})")
    for key in _FLAG_KEYS:
        bad = (out[key] != 0.0) & (out[key] != 1.0)
        if bad.any():
            first = int(np.argmax(bad))
            raise error(source, key, "binary values (0/1)",
                        f"{int(bad.sum())} other values (first at row {first}: "
                        f"{out[key][first]!r})")

    episode_ids = arrays.get("episode_ids")
    if episode_ids is None:
        out["episode_ids"] = derive_episode_ids(out["terminals"], out["timeouts"],
                                                out["observations"], out["next_observations"])
    else:
        out["episode_ids"] = _check_episode_ids(np.asarray(episode_ids), n, source)
    _check_flags_end_episodes(out, source)
    return out


def _check_episode_ids(ids: np.ndarray, n: int, source: str) -> np.ndarray:
    if ids.dtype.kind not in "iu":
        raise error(source, "episode_ids", "an integer array", f"dtype {ids.dtype}")
    if ids.shape != (n,):
        raise error(source, "episode_ids", f"shape ({n},)", f"shape {ids.shape}")
    if n and (ids.min() < 0 or ids.max() > np.iinfo(np.int32).max):
        raise error(source, "episode_ids", "ids in [0, 2**31)",
                    f"range [{ids.min()}, {ids.max()}]")
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    if len(starts) != len(np.unique(ids)):
        seen: set[int] = set()
        for start in starts:
            episode = int(ids[start])
            if episode in seen:
                raise error(source, "episode_ids", "each episode's rows to be contiguous",
                            f"episode id {episode} again at row {int(start)} after other episodes")
            seen.add(episode)
    return ids.astype(np.int32)


def _check_flags_end_episodes(out: dict[str, np.ndarray], source: str) -> None:
    ids = out["episode_ids"]
    continues = ids[1:] == ids[:-1]  # row i is followed by a row of the same episode
    for key in _FLAG_KEYS:
        inside = (out[key][:-1] > 0.5) & continues
        if inside.any():
            row = int(np.argmax(inside))
            raise error(source, key, "a flag only on the last row of an episode",
                        f"{int(inside.sum())} flagged rows inside an episode (first at row {row}, "
                        f"episode id {int(ids[row])} continues at row {row + 1})")
