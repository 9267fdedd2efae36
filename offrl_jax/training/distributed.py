"""Cells as Ray tasks: ``offrl bench --ray auto`` spreads the (algorithm, task) cells of a run over
the GPUs of one machine or of a Ray cluster.

The driver (the ``offrl bench`` process) makes every task's data first and records each file's
sha256 in ``run.json``; then it submits, as Ray tasks,

1. one model fit per (task, ``pretrain_id``) (:func:`offrl_jax.training.cells.fit_models`):
   MOPO, COMBO, MOReL and RAMBO share one dynamics ensemble per seed, so it is fitted once,
   into ``OUT/models/``, before any cell that uses it starts;
2. one task per cell (:func:`offrl_jax.training.cells.run_cell`), each asking for
   ``gpus_per_cell`` GPUs (Ray gives it those GPUs alone through ``CUDA_VISIBLE_DEVICES``); a
   cell that uses a shared model waits for its fit (the fit's result is an argument of the
   cell's task), the others start at once.

Each task runs in a fresh worker process (``max_calls=1``: JAX picks its devices once per
process) that loads the data from the driver's path, refuses it unless its sha256 matches, and
writes only its own files into the run directory, which every node must see at the same path (a
shared filesystem). The driver alone writes ``run.json`` (updated as each cell returns),
``config.json`` and the summary, so a Ray run leaves exactly the files of a local run, and
resumes, reports and reuses models the same way. A worker that dies is retried by Ray and
resumes from the cell's last checkpoint.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator


class RayUnavailable(RuntimeError):
    """``--ray`` without the ``ray`` package, or a cluster that cannot run the cells."""


class CellsFailed(RuntimeError):
    """Cells that raised under Ray (the others ran to their end)."""


@dataclasses.dataclass(frozen=True)
class RayConfig:
    """``address``: ``auto`` (the cluster ``ray start`` runs on this machine, or ``RAY_ADDRESS``),
    ``local`` (start a Ray instance for this run on this machine) or the head's ``HOST:PORT``.
    ``gpus_per_cell``: GPUs each cell (and each model fit) asks for; None: 1 when the cluster
    has GPUs, else 0. ``cpus_per_cell``: CPUs each asks for (Ray's scheduling unit: a node runs
    at most its CPUs / cpus_per_cell cells at once)."""

    address: str = "auto"
    gpus_per_cell: float | None = None
    cpus_per_cell: float = 1.0


def import_ray():
    try:
        import ray
    except ImportError:
        raise RayUnavailable("--ray: the ray package is not installed; install the extra "
                             "(pip install -e '.[ray]', or pip install 'ray>=2.40') on the "
                             "driver and on every node") from None
    return ray


def connect(config: RayConfig) -> dict:
    """Connect to (or, with ``local``, start) Ray unless this process already is; returns
    ``{"address", "nodes", "resources"}`` (the cluster's total resources)."""
    ray = import_ray()
    if not ray.is_initialized():
        if config.address == "local":
            ray.init(include_dashboard=False)
        else:
            ray.init(address=config.address)
    nodes = [node for node in ray.nodes() if node.get("Alive")]
    return {"address": config.address, "nodes": len(nodes),
            "resources": {key: value for key, value in ray.cluster_resources().items()
                          if key in ("CPU", "GPU", "memory")}}


def gpus_per_cell(config: RayConfig) -> float:
    """The GPUs each cell asks for: the configured number, else 1 when the cluster has GPUs,
    else 0. RayUnavailable when no node has that many (the cells would wait forever)."""
    ray = import_ray()
    most = max((node.get("Resources", {}).get("GPU", 0.0) for node in ray.nodes()
                if node.get("Alive")), default=0.0)
    gpus = config.gpus_per_cell
    if gpus is None:
        gpus = 1.0 if most >= 1 else 0.0
    if gpus > most:
        raise RayUnavailable(f"--ray-gpus-per-cell {gpus:g}: no node of the Ray cluster has that "
                             f"many GPUs (the most on one node: {most:g})")
    return float(gpus)


def _prepare_worker(gpus: float) -> None:
    """Before JAX starts in a fresh worker: a fraction of a GPU gets that fraction of its memory
    (JAX takes 75% by default, which two cells on one GPU cannot both have); a cell that asked
    for a GPU refuses a JAX that sees none."""
    if 0 < gpus < 1:
        os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 * gpus:.3f}")
    import platform

    import jax

    if gpus >= 1 and jax.default_backend() == "cpu":
        raise RayUnavailable(f"host {platform.node()}: the cell asked for {gpus:g} GPU(s) but "
                             f"JAX there sees only the CPU (install CUDA-enabled JAX on every "
                             f"node: make install GPU=1)")


def _fit_task(cell, gpus: float):
    from offrl_jax.training.cells import fit_models

    _prepare_worker(gpus)
    return fit_models(cell)


def _cell_task(cell, gpus: float, *fits):
    """``fits``: the reports of the model fits this cell waits for (Ray runs the task once they
    are done)."""
    from offrl_jax.training.cells import run_cell

    _prepare_worker(gpus)
    return run_cell(cell)


def run_on_ray(cells: list, groups: dict, config: RayConfig, gpus: float
               ) -> Iterator[tuple[str, object, dict | None, BaseException | None]]:
    """Submit the model fits (``groups``: :func:`~offrl_jax.training.cells.model_groups`) and
    the cells, and yield ``(kind, item, result, error)`` as each finishes: ``("fit", (task,
    pretrain_id), report, None)`` or ``("cell", cell, info, None)``, with the error instead of
    the result for one that failed (a cell whose model fit failed fails too)."""
    ray = import_ray()
    options = {"num_gpus": gpus, "num_cpus": config.cpus_per_cell}
    fit_remote = ray.remote(max_calls=1)(_fit_task)
    cell_remote = ray.remote(max_calls=1)(_cell_task)
    pending = {}
    fits_of: dict[str, list] = {}
    for key, group in groups.items():
        ref = fit_remote.options(name=f"fit {key[0]} {key[1][:40]}", **options).remote(
            group[0], gpus)
        pending[ref] = ("fit", key)
        for cell in group:
            fits_of.setdefault(cell.name, []).append(ref)
    for cell in cells:
        ref = cell_remote.options(name=cell.name, **options).remote(
            cell, gpus, *fits_of.get(cell.name, []))
        pending[ref] = ("cell", cell)
    while pending:
        (ready,), _ = ray.wait(list(pending), num_returns=1)
        kind, item = pending.pop(ready)
        try:
            yield kind, item, ray.get(ready), None
        except ray.exceptions.RayError as error:
            yield kind, item, None, error


__all__ = ["CellsFailed", "RayConfig", "RayUnavailable", "connect", "gpus_per_cell", "import_ray",
           "run_on_ray"]
