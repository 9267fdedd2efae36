"""Atomic file output: a file is either its complete new content or untouched, whatever kills the
process. Imports nothing of the suite, so every stage (data, generation, training, results) can
write its files the same way."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


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


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through :func:`atomic_output`."""
    with atomic_output(path) as tmp:
        tmp.write_text(text)


def read_json_object(path: str | os.PathLike) -> dict:
    """The JSON object in ``path``; {} when the file is missing, unreadable or not an object
    (a bookkeeping file that a killed run may have left behind)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def timestamp() -> str:
    """The local time as the run files write it, ``2026-12-08T05:49:10+0000``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
