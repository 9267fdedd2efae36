"""JAX's persistent compilation cache for the suite's programs.

A program compiled once (a cell's training interval, its evaluation, a device check's timed
call) is written to disk, and every later process that compiles the same program for the same
device with the same versions reads it back instead of compiling: a resumed cell, a second
``offrl bench`` into the same run, the warm half of the device check. On a GPU that saves the
tens of seconds each costly algorithm's interval takes to compile (``docs/speed.md``).

``$OFFRL_JAX_CACHE_DIR`` names the folder (default ``<data cache>/jax_compilation_cache``, the
data cache being :func:`offrl_jax.data.cache_dir`); ``off`` disables the cache. The cache's key
holds the program, the device kind and the jax/jaxlib versions, so one folder can serve several
machines and versions (each reads only its own entries).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_VAR = "OFFRL_JAX_CACHE_DIR"
OFF = "off"

# jax.monitoring events of the persistent cache, counted by cache_events().
_EVENTS = {"/jax/compilation_cache/cache_hits": "hits",
           "/jax/compilation_cache/cache_misses": "misses",
           "/jax/compilation_cache/compile_requests_use_cache": "requests"}
_counts = {name: 0 for name in _EVENTS.values()}
_listening = False


def cache_directory() -> Path | None:
    """The folder ``$OFFRL_JAX_CACHE_DIR`` names (None for ``off``), else the default under
    the data cache."""
    value = os.environ.get(CACHE_DIR_VAR, "").strip()
    if value.lower() == OFF:
        return None
    if value:
        return Path(value).expanduser()
    from offrl_jax.data import cache_dir

    return cache_dir() / "jax_compilation_cache"


def enable_compilation_cache(directory: str | Path | None = None,
                             min_compile_s: float = 1.0) -> Path | None:
    """Point JAX's persistent cache at ``directory`` (default :func:`cache_directory`; ``"off"``
    disables it) for the rest of this process, and count its events (:func:`cache_events`).
    Programs that compile in under ``min_compile_s`` seconds are not written (JAX's default
    threshold; 0 writes every one). Returns the folder, or None when disabled.

    Safe to call after earlier compilations: JAX's cache state is reset so the new folder is
    the one used from the next compilation on."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    if directory is None:
        path = cache_directory()
    else:
        path = None if str(directory).strip().lower() == OFF else Path(directory).expanduser()
    _listen()
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        path = path.resolve()
    jax.config.update("jax_compilation_cache_dir", None if path is None else str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_s))
    # Every entry, however small (an evaluation's policy call compiles in well under 1 s).
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    compilation_cache.reset_cache()
    return path


def cache_events() -> dict[str, int]:
    """Counts since the process started listening: ``requests`` (compilations that asked the
    persistent cache), ``hits`` (read from it), ``misses`` (compiled and written)."""
    return dict(_counts)


def _listen() -> None:
    global _listening
    if _listening:
        return
    import jax

    def count(event: str, **_) -> None:
        name = _EVENTS.get(event)
        if name is not None:
            _counts[name] += 1

    jax.monitoring.register_event_listener(count)
    _listening = True
