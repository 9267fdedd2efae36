"""The sha256 of a dataset on disk (a D4RL HDF5 file or a Minari directory), and the check a Ray
worker makes before it trains on it: a run's data is made once, by the driver, and every cell
checks that the bytes it loads are the bytes the driver hashed (``run.json``'s
``data.TASK.sha256``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from offrl_jax.data.validate import DatasetError

_CHUNK = 1 << 22


def path_sha256(path: str | os.PathLike) -> str:
    """sha256 (hex) of a file's bytes; of a directory (a Minari dataset), over every file below
    it in sorted order, each as its relative path, its size and its bytes. About 1 s per GB."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(f"{file.relative_to(path).as_posix()}:{file.stat().st_size};".encode())
            _update(digest, file)
    else:
        _update(digest, path)
    return digest.hexdigest()


def _update(digest, file: Path) -> None:
    with open(file, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)


def check_sha256(path: str | os.PathLike, expected: str, where: str = "") -> None:
    """Raise :class:`DatasetError` (naming the file, the expected and the found digest) unless
    ``path``'s :func:`path_sha256` is ``expected``; FileNotFoundError when it is absent.
    ``where``: the host, for the message."""
    path = Path(path)
    host = f" on {where}" if where else ""
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such dataset{host}; every worker must see the driver's data at the same "
            f"path (a shared filesystem: set OFFRL_DATA_DIR or OFFRL_D4RL_DIR to a folder on it "
            f"before `offrl bench --ray`)")
    found = path_sha256(path)
    if found != expected:
        raise DatasetError(
            f"{path}: sha256: expected {expected} (the data the driver made and hashed), found "
            f"{found}{host}; the file changed after the run started, or this host sees another "
            f"file at that path: regenerate or copy it so every host reads the same bytes")


__all__ = ["check_sha256", "path_sha256"]
