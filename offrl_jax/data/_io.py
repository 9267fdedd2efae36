"""File helpers shared by the readers and writers: guarded HDF5 opening, and atomic output
(:func:`offrl_jax.files.atomic_output`, re-exported for them)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import h5py

from offrl_jax.data.validate import DatasetError
from offrl_jax.files import atomic_output

__all__ = ["atomic_output", "open_hdf5", "read_array"]


@contextlib.contextmanager
def open_hdf5(path: Path) -> Iterator[h5py.File]:
    """Open ``path`` read-only; a truncated or non-HDF5 file (or a failing read) is a DatasetError.

    h5py errors raised inside the block (OSError for unreadable data, KeyError for a damaged
    object header) are wrapped too; a missing file stays a FileNotFoundError.
    """
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as handle:
            yield handle
    except DatasetError:
        raise
    except (OSError, KeyError, RuntimeError) as err:  # h5py's errors for damaged files
        raise DatasetError(
            f"{path}: key '/': expected a readable HDF5 file, found a truncated, corrupt or "
            f"non-HDF5 file ({err})") from err


def read_array(handle: h5py.Group, key: str, source: str):
    """``handle[key]`` as a numpy array, or None when absent; a group there is a DatasetError."""
    if key not in handle:
        return None
    item = handle[key]
    if not isinstance(item, h5py.Dataset):
        raise DatasetError(f"{source}: key '{item.name}': expected an array, found an HDF5 group")
    return item[()]
