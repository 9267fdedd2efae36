"""A store of pretrained per-seed pytrees (dynamics models), shared across algorithms and runs.

MOPO, COMBO, MOReL and RAMBO with equal ensemble settings train the same ensemble for the same
seed and dataset (``Algorithm.pretrain``; :func:`offrl_jax.parts.dynamics.model_key`),
and a full-size D4RL ensemble costs minutes to fit. The training loop therefore asks
:func:`load_or_fit` for each seed's pytree before ``init``: entries found in the store are
loaded, the missing seeds are fitted together by the caller's ``fit`` (one vmapped program) and
saved. The runner keeps its store in ``OUT/models/``.

An entry is one seed's pytree, keyed by :class:`EntryKey`: the dataset's fingerprint (sha256 over
every array's dtype, shape and bytes, :func:`dataset_fingerprint`), the env name,
``pretrain_id`` and the init key's data (the seed and the key ``pretrain`` receives). It is one
saved tree (:mod:`offrl_jax.pytrees`), the directory ``ROOT/<env>__seed<seed>__<hash of the
key>``: the leaves in flattening order and a header holding the full key, each leaf's path, dtype
and shape, and a sha256 over the leaves' bytes.

Robustness:
- An entry is written into a temporary directory named for this one write (orbax's own
  temporary name, ``ENTRY.orbax-checkpoint-tmp``, is the same for every writer) and renamed
  only when complete, so a killed write leaves no entry and a half-written one is never read.
  Writers of the same entry at the same time (two Ray cells, two runs sharing a store) never
  mix their files: the first rename publishes the entry, and :func:`load_or_fit` saves a
  missing entry with ``replace=False``, so a later writer finding it there drops its copy (the
  fit is deterministic in the key: both are the same). Replacing an entry (refitting a corrupt
  one) first moves the old one aside.
- A corrupt entry (unreadable, a header or leaf missing, or leaves whose sha256 differs from the
  header's) is REFITTED and overwritten, with a printed warning naming the file
  and the damage. The fit is deterministic in the key, so refitting restores exactly the entry
  that was lost; stopping a long benchmark over a damaged cache file would gain nothing.
- An intact entry that does not match (its header's key differs from the one its name hashes, or
  its leaves' paths, dtypes or shapes differ from what ``pretrain`` now returns) raises
  :class:`ModelStoreError` naming the file, the expected and the found values: it means the code
  changed what a pretrained pytree is without changing ``pretrain_id`` (bump its version) or the
  file was copied from elsewhere, which a silent refit would hide.

Leaves must be plain numeric arrays (no typed PRNG keys). A model reused on another backend
(fitted on a CPU, loaded on a GPU) is the CPU's fit: the backend and JAX version that fitted it
are in the header (and in the runner's ``run.json``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from offrl_jax import pytrees

FORMAT_VERSION = 2  # 1: one .npz file per entry (before pytrees were saved one way)


class ModelStoreError(ValueError):
    """A store entry that is intact but does not match what was asked for."""


class CorruptEntryError(ModelStoreError):
    """A store entry that cannot be read back intact (it is refitted by :func:`load_or_fit`)."""


def dataset_fingerprint(dataset) -> str:
    """sha256 over every array of a dataset pytree (leaf paths, dtypes, shapes and bytes), as hex.
    Host work proportional to the dataset's size (about 0.3 s per 100 MB)."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(dataset)[0]:
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{jax.tree_util.keystr(path)}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class EntryKey:
    """What one seed's pretrained pytree depends on. ``init_key``: the key data of the key
    ``pretrain`` receives (``jax.random.key_data``), so a change in how keys are derived from
    seeds misses instead of loading another key's model."""

    env: str
    dataset: str
    pretrain_id: str
    seed: int
    init_key: tuple[int, ...]

    def as_json(self) -> dict:
        return dataclasses.asdict(self) | {"init_key": list(self.init_key)}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_json(), sort_keys=True).encode()).hexdigest()


def _leaf_layout(template) -> list[dict]:
    return [{"path": jax.tree_util.keystr(path), "dtype": np.dtype(leaf.dtype).str,
             "shape": list(leaf.shape)}
            for path, leaf in jax.tree_util.tree_flatten_with_path(template)[0]]


def _leaves_sha256(leaves: Sequence[np.ndarray]) -> str:
    return pytrees.leaves_sha256(list(leaves))


class ModelStore:
    """Pretrained pytrees on disk under ``root`` (created on the first save)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: EntryKey) -> Path:
        env = "".join(c if c.isalnum() or c in "-_." else "_" for c in key.env)
        return self.root / f"{env}__seed{key.seed}__{key.digest()[:16]}"

    def save(self, key: EntryKey, tree, replace: bool = True) -> Path:
        """Write one seed's pytree (whole or not at all); returns the entry's path. An entry
        already there is replaced, or with ``replace=False`` kept (this write is dropped);
        concurrent writers: see the module docstring."""
        leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]
        meta = {"format_version": FORMAT_VERSION, "key": key.as_json(),
                "leaves": _leaf_layout(tree), "sha256": _leaves_sha256(leaves),
                "fitted_on": {"backend": jax.default_backend(), "jax": jax.__version__,
                              "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}}
        final = self.path(key).expanduser().resolve()
        unique = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        temporary = final.parent / f".{final.name}.tmp-{unique}"
        aside = final.parent / f".{final.name}.old-{unique}"
        try:
            pytrees.save(temporary, {f"leaf_{i:05d}": leaf for i, leaf in enumerate(leaves)},
                         meta)
            if replace and final.exists():
                try:
                    os.rename(final, aside)
                except FileNotFoundError:  # another writer moved it first
                    pass
            try:
                os.rename(temporary, final)
            except OSError:  # a non-empty entry is there: another writer published it first
                if not final.is_dir():
                    raise
        finally:
            for leftover in (temporary, aside):
                shutil.rmtree(leftover, ignore_errors=True)
        return final

    def load(self, key: EntryKey, template) -> Any | None:
        """The stored pytree (host numpy leaves, ``template``'s structure), or None when there
        is no entry. ``template``: the pytree's structure with shapes and dtypes (e.g. from
        ``jax.eval_shape``). Raises :class:`CorruptEntryError` or :class:`ModelStoreError`."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            arrays, meta = pytrees.load(path)
            leaves = [np.asarray(arrays[f"leaf_{i:05d}"]) for i in range(len(meta["leaves"]))]
        except (pytrees.PytreeFileError, KeyError, TypeError) as error:
            raise CorruptEntryError(f"{path}: expected a model store entry (a saved tree with "
                                    f"a header and its leaves), found an unreadable one "
                                    f"({type(error).__name__}: {error})") from error
        if _leaves_sha256(leaves) != meta.get("sha256"):
            raise CorruptEntryError(f"{path}: key 'sha256': expected {meta.get('sha256')} (the "
                                    f"header's), found {_leaves_sha256(leaves)} over the stored "
                                    f"leaves")
        found = meta.get("key")
        if meta.get("format_version") != FORMAT_VERSION or found != key.as_json():
            raise ModelStoreError(f"{path}: key 'key': expected {key.as_json()} (format "
                                  f"{FORMAT_VERSION}), found {found} (format "
                                  f"{meta.get('format_version')}); the file does not belong "
                                  f"under this name: delete it")
        expected = _leaf_layout(template)
        if meta["leaves"] != expected:
            raise ModelStoreError(
                f"{path}: key 'leaves': expected {_describe(expected)}, found "
                f"{_describe(meta['leaves'])}; the pretrained pytree changed without a new "
                f"pretrain_id ({key.pretrain_id!r}): change its version, or delete the file")
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), leaves)


def _describe(layout: list[dict]) -> str:
    return ", ".join(f"{leaf['path']} {leaf['dtype']}{tuple(leaf['shape'])}" for leaf in layout)


def load_or_fit(store: ModelStore | None, keys: Sequence[EntryKey], template,
                fit: Callable[[list[int]], Any],
                log: Callable[[str], None] | None = None,
                chunk: int | None = None) -> tuple[Any, dict]:
    """Each key's pytree, stacked along a new leading axis in the order of ``keys`` (host numpy
    leaves), and a report of what was reused and fitted.

    ``fit(indices)`` returns the pytrees of ``keys[i]`` for ``i in indices`` stacked the same way
    (one call for all missing entries, or one per ``chunk`` of them in order, each saved before
    the next starts, so a kill during a long fit keeps the finished chunks). ``store=None`` fits
    every key and saves nothing.
    ``log`` receives one progress line per action (reuse, fit). The report:
    ``{"store", "pretrain_id", "dataset_sha256", "reused", "fitted", "refitted", "files",
    "load_seconds", "fit_seconds"}``; ``refitted`` maps a seed to why its entry was refitted,
    its seed is also in ``fitted``; ``files`` are the entries' names under the store's root.
    """
    started = time.perf_counter()
    trees: list[Any] = [None] * len(keys)
    refitted: dict[int, str] = {}
    if store is not None:
        for i, key in enumerate(keys):
            try:
                trees[i] = store.load(key, template)
            except CorruptEntryError as error:
                refitted[key.seed] = str(error)
                if log:
                    log(f"WARNING corrupt model store entry, refitting it: {error}")
    reused = [i for i, tree in enumerate(trees) if tree is not None]
    missing = [i for i, tree in enumerate(trees) if tree is None]
    load_seconds = time.perf_counter() - started
    where = f" from {store.root}" if store is not None else ""
    if reused and log:
        log(f"reusing models for seeds {[keys[i].seed for i in reused]}{where} "
            f"({load_seconds:.1f} s)")
    fit_seconds = 0.0
    size = chunk or len(missing) or 1  # no chunk: one program for every missing entry
    for start in range(0, len(missing), size):
        group = missing[start:start + size]
        seeds = [keys[i].seed for i in group]
        if log:  # one compiled program, silent until it ends: say what it is doing
            log(f"fitting {len(group)} model(s) for seeds {seeds} (one program, to early "
                f"stopping; minutes on a CPU)...")
        started = time.perf_counter()
        fitted = jax.device_get(fit(group))
        seconds = time.perf_counter() - started
        fit_seconds += seconds
        for j, i in enumerate(group):
            trees[i] = jax.tree_util.tree_map(lambda leaf, j=j: np.asarray(leaf[j]), fitted)
            if store is not None:
                store.save(keys[i], trees[i], replace=keys[i].seed in refitted)
        if log:
            stored = f", saved to {store.root}" if store is not None else ", no store"
            log(f"fitting {len(group)} model(s) for seeds {seeds}: {seconds:.1f} s{stored}")
    stacked = jax.tree_util.tree_map(lambda *leaves: np.stack(leaves), *trees)
    report = {
        "store": str(store.root) if store is not None else None,
        "pretrain_id": keys[0].pretrain_id if keys else None,
        "dataset_sha256": keys[0].dataset if keys else None,
        "reused": [keys[i].seed for i in reused],
        "fitted": [keys[i].seed for i in missing],
        "refitted": {str(seed): reason for seed, reason in refitted.items()},
        "files": [store.path(key).name for key in keys] if store is not None else [],
        "load_seconds": round(load_seconds, 3),
        "fit_seconds": round(fit_seconds, 3),
    }
    return stacked, report


__all__ = ["CorruptEntryError", "EntryKey", "ModelStore", "ModelStoreError",
           "dataset_fingerprint", "load_or_fit"]
