"""File helpers shared by the readers and writers: atomic output and guarded HDF5 opening."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import h5py

from offrl_jax.data.validate import DatasetError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only if the block succeeds.

    The temporary file lives in the same directory (so ``os.replace`` is an atomic rename) and
    is removed on any exception, so ``path`` is either the complete new file or untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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
