"""The benchmark runner: algorithms x tasks x seeds into records, tables and plots.

For each task the dataset is found (a registered file, a real D4RL file under
``$OFFRL_D4RL_DIR``, or the suite's generated data, made first when missing); for each algorithm
one :class:`~offrl_jax.training.Trainer` trains all seeds in one program. Records are rewritten
atomically after every evaluation, and checkpoints let a killed sweep resume where it stopped.

``sweep`` (``{leaf: values}``) also sweeps hyperparameters that are float leaves of every chosen
algorithm's state (MOPO's ``penalty_coef``): each (algorithm, task) then trains values x seeds
rows in one program, and each value is its own row of the score table (``mopo[penalty_coef=1]``).
Names are checked against every algorithm's state before any data is made or loaded.

Pretrained models (the dynamics ensembles of MOPO, COMBO, MOReL and RAMBO, ARMOR's model) are kept
in ``OUT/models/`` (:mod:`offrl_jax.models.store`): each (dataset, env, ``pretrain_id``, seed) is
fitted once, by the first algorithm that needs it, and loaded by every later algorithm, sweep and
run into the same ``OUT``. ``run.json``'s ``models`` says, per algorithm and task, which seeds
were reused and which fitted.

A run is first a :class:`~offrl_jax.training.plan.RunPlan` (:func:`~offrl_jax.training.plan.
plan_run`: every config resolved and checked, every algorithm made once), then
:func:`run_plan` executes it. Each (algorithm, task) is a cell (:mod:`offrl_jax.training.cells`)
that writes only its own files (records, logs, checkpoints, ``cells/ALGO__TASK.json``); this
process, the driver, alone writes ``run.json`` (:class:`RunBook`), ``config.json`` and the
summary. Cells run one after another here, or as Ray tasks over the GPUs of a cluster with
``ray`` (:mod:`offrl_jax.training.distributed`): the same cells, the same files, the same
bookkeeping.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from offrl_jax.algorithms.base import ConfigError, config_paths
from offrl_jax.algorithms.registry import ALGORITHMS
from offrl_jax.data import find_task_dataset, load_task_dataset, read_d4rl_metadata
from offrl_jax.data.checksum import path_sha256
from offrl_jax.files import write_text_atomic
from offrl_jax.generation.versions import task_generated_file
from offrl_jax.results.provenance import provenance, training_commits
from offrl_jax.results.summary import write_summary
from offrl_jax.results.tensorboard import require as require_tensorboard
from offrl_jax.tasks import Task
from offrl_jax.training.cells import Cell, finished_without_checkpoint, model_groups, run_cell
from offrl_jax.training.distributed import RayConfig
from offrl_jax.training.plan import RunPlan, plan_run
from offrl_jax.training.profiles import reference_updates


def ensure_dataset(task: Task, data_profile: str, progress: bool = True) -> dict:
    """Locate the task's data, generating the suite's own when nothing is on disk."""
    try:
        path, fmt = find_task_dataset(task, task_generated_file(task, data_profile))
    except FileNotFoundError:
        if task.path is not None:
            raise
        from offrl_jax.generation import generate_env_datasets

        print(f"generating {task.name} ({data_profile} data profile): no dataset on disk",
              flush=True)
        generate_env_datasets(task.env, data_profile, kinds=[task.kind], progress=progress)
        path, fmt = find_task_dataset(task, task_generated_file(task, data_profile))
    # The bytes a run trains on: a Ray worker refuses a file whose sha256 differs.
    info = {"path": str(Path(path).resolve()), "format": fmt, "dataset_id": Path(path).stem,
            "sha256": path_sha256(path)}
    if task.minari_id is not None:  # its own environment and reference scores, not D4RL's
        from offrl_jax.tasks.minari import describe

        info.update(dataset_id=task.minari_id, minari=describe(task.spec))
    if fmt == "d4rl":
        meta = read_d4rl_metadata(path)
        if "recipe" in meta:
            info["dataset_id"] = meta.get("dataset_id", f"{task.env}-{task.kind}-gen0")
            info["generated"] = {"recipe": meta["recipe"],
                                 "behaviour": meta.get("behaviour", {}),
                                 "statistics": meta.get("statistics"),
                                 "reference_check": meta.get("reference_check"),
                                 "checksum": meta.get("checksum")}
    return info


def check_same_data(run_info_path: Path, previous: dict, task_name: str, info: dict) -> None:
    """A run directory holds one version of each task's data: resuming or adding to it with
    another version (other generated data, a real D4RL file) is an error."""
    before = previous.get("data", {}).get(task_name)
    if before is None:
        return
    if "dataset_id" not in before:
        raise ValueError(
            f"{run_info_path}: key 'data.{task_name}.dataset_id' missing (a run made before "
            f"datasets had versioned ids); expected {info['dataset_id']!r}: use a new output "
            f"directory")
    if before["dataset_id"] != info["dataset_id"]:
        raise ValueError(
            f"{run_info_path}: key 'data.{task_name}.dataset_id': expected "
            f"{before['dataset_id']!r} (this run directory's data), found "
            f"{info['dataset_id']!r}; results on two versions of a dataset cannot share a run: "
            f"use a new output directory")


class RunBook:
    """``OUT/run.json``, the driver's record of a run: its provenance, first and latest start,
    algorithms, tasks, seeds and sweep, each task's data (path, sha256, id), each cell's
    schedule and config as it is handed out, the models each cell reused or fitted, and the
    end. Written by the driver alone (atomically, at every step), for a local run and a Ray run
    alike. ``previous``: the file an earlier invocation into the same ``OUT`` left ({} for a
    new run), whose start it keeps and whose data it must match."""

    def __init__(self, plan: RunPlan, argv: list[str] | None):
        self.path = plan.out_dir / "run.json"
        self.info = provenance(plan.profile, argv)
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.previous = json.loads(self.path.read_text()) if self.path.exists() else {}
        if self.previous:  # a resumed (or repeated) run keeps its first start
            self.info["started"] = self.previous.get("started")
        self.info.setdefault("started", now)
        self.info["this_invocation_started"] = now
        self.info.update({"algorithms": list(plan.algorithms),
                          "tasks": [task.name for task in plan.tasks],
                          "seeds": list(plan.seeds), "train": {}, "data": {}})
        if plan.sweep:
            self.info["sweep"] = plan.sweep
        if _same_run(self.previous, self.info):
            # Another invocation's algorithms into the same OUT (same tasks, seeds, sweep):
            # their cells stay in the run, so their entries stay in run.json.
            self.info["algorithms"] = _union(self.previous.get("algorithms", []),
                                             plan.algorithms)
            for key in ("train", "configs", "models"):
                if self.previous.get(key):
                    self.info[key] = dict(self.previous[key])

    def write(self) -> None:
        write_text_atomic(self.path, json.dumps(self.info, indent=2))

    def add_data(self, task: Task, data_profile: str, progress: bool) -> dict:
        """The task's data located (generated when missing: :func:`ensure_dataset`), checked
        against the earlier invocations' (:func:`check_same_data`) and recorded."""
        data = self.info["data"][task.name] = ensure_dataset(task, data_profile, progress)
        check_same_data(self.path, self.previous, task.name, data)
        return data

    def add_cell(self, plan: RunPlan, algorithm: str, task_name: str) -> None:
        self.info["train"][algorithm] = dataclasses.asdict(plan.trains[algorithm])
        self.info.setdefault("configs", {})[f"{algorithm}/{task_name}"] = repr(
            plan.configs[(algorithm, task_name)])

    def add_models(self, algorithm: str, task_name: str, models: dict) -> None:
        self.info.setdefault("models", {})[f"{algorithm}/{task_name}"] = models

    def worker_provenance(self) -> dict:
        """What a Ray worker must match: the driver's library ``versions`` and ``commit``."""
        return {"versions": self.info["versions"], "commit": self.info["commit"]}

    def finish(self) -> None:
        self.info["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.info["trained_by_commit"] = training_commits(self.path.parent)
        self.write()


CONFIG_FORMAT = 1


def write_run_config(plan: RunPlan) -> Path:
    """``OUT/config.json``: everything a run was made of, every setting resolved (profile,
    task tables and overrides applied), so ``offrl bench --config OUT/config.json`` relaunches
    exactly this run, whatever the defaults in the code have become since."""
    document = {
        "format": CONFIG_FORMAT, "profile": plan.profile, "algorithms": list(plan.algorithms),
        "tasks": list(plan.task_arguments), "seeds": list(plan.seeds), "sweep": plan.sweep,
        "train": {name: dataclasses.asdict(train) for name, train in plan.trains.items()},
        "settings": {f"{a}/{t}": config_paths(config)
                     for (a, t), config in plan.configs.items()},
    }
    path = plan.out_dir / "config.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    if _same_run(previous, document) and previous.get("format") == CONFIG_FORMAT:
        # An earlier invocation into the same OUT ran other algorithms on the same tasks and
        # seeds: the file keeps them, so it still relaunches every cell of the directory.
        document["algorithms"] = _union(previous["algorithms"], document["algorithms"])
        document["train"] = {**previous.get("train", {}), **document["train"]}
        document["settings"] = {**previous.get("settings", {}), **document["settings"]}
    write_text_atomic(path, json.dumps(document, indent=2) + "\n")
    return path


def _same_run(previous: dict, current: dict) -> bool:
    """Whether an earlier invocation's ``run.json`` or ``config.json`` (``previous``) is of the
    same run as ``current``: same profile, tasks, seeds and sweep (other algorithms may
    differ)."""
    return bool(previous) and all(previous.get(key) == current.get(key)
                                  for key in ("profile", "tasks", "seeds")) and (
        (previous.get("sweep") or {}) == (current.get("sweep") or {}))


def _union(first, second) -> list:
    return list(dict.fromkeys([*first, *second]))


def read_run_config(path: str | Path) -> dict:
    """A ``config.json`` written by :func:`write_run_config`, checked (file, key, expected,
    found in every message)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: expected a run's config.json, found an unreadable file "
                          f"({type(error).__name__}: {error})") from None
    if document.get("format") != CONFIG_FORMAT:
        raise ConfigError(f"{path}: key 'format': expected {CONFIG_FORMAT}, found "
                          f"{document.get('format')!r}")
    for key in ("profile", "algorithms", "tasks", "seeds", "sweep", "train", "settings"):
        if key not in document:
            raise ConfigError(f"{path}: key {key!r} missing")
    return document


def run_plan(plan: RunPlan, argv: list[str] | None = None, progress: bool = True,
             tensorboard: bool = False, ray: RayConfig | None = None) -> list[dict]:
    """Train and evaluate every cell of ``plan`` (every algorithm x task, all seeds and sweep
    points in each) and write the tables; returns the summary's rows.

    ``tensorboard``: also write the scalar logs as TensorBoard event files
    (:mod:`offrl_jax.results.tensorboard`); without tensorboardX installed, a
    :class:`~offrl_jax.results.tensorboard.TensorBoardUnavailable` before anything runs.
    ``ray``: run the cells as Ray tasks (:mod:`offrl_jax.training.distributed`) instead of one
    after another in this process; the records and ``run.json`` are the same.
    """
    if tensorboard:
        require_tensorboard()  # before any data step or training
    book = RunBook(plan, argv)
    write_run_config(plan)
    if ray is not None:
        _run_cells_on_ray(plan, book, progress, tensorboard, ray)
    else:
        _run_cells_here(plan, book, progress, tensorboard)
    book.finish()
    out_dir = plan.out_dir
    rows = write_summary(out_dir, reference_updates(ALGORITHMS))
    print(f"results: {out_dir / 'summary.md'} (raw records in {out_dir / 'records'}, plots in "
          f"{out_dir / 'plots'})", flush=True)
    return rows


def run_benchmark(algorithms: list[str], tasks: list[str], seeds: list[int], profile: str,
                  out_dir: str | Path, *, argv: list[str] | None = None, progress: bool = True,
                  tensorboard: bool = False, ray: RayConfig | None = None,
                  **choices) -> list[dict]:
    """:func:`~offrl_jax.training.plan.plan_run` (``choices``: its ``overrides``,
    ``eval_backend``, ``sweep``, ``schedule``, ``exact``), then :func:`run_plan`."""
    if tensorboard:
        require_tensorboard()  # before the plan, as before any data step
    return run_plan(plan_run(algorithms, tasks, seeds, profile, out_dir, **choices), argv,
                    progress, tensorboard, ray)


def _cell(plan: RunPlan, book: RunBook, algorithm: str, task: Task, argument: str, number: int,
          progress: bool, tensorboard: bool, worker: bool = False) -> Cell:
    """The cell of ``algorithm`` on ``task``, ``number`` of the plan's; a ``worker`` cell (Ray)
    names the run directory by its absolute path and carries the driver's provenance."""
    total = len(plan.algorithms) * len(plan.tasks)
    out_dir = plan.out_dir.resolve() if worker else plan.out_dir
    return Cell(algorithm, argument, task.name, plan.configs[(algorithm, task.name)],
                plan.trains[algorithm], plan.seeds, plan.sweep, str(out_dir),
                book.info["data"][task.name], plan.data_profile,
                f"[{number}/{total}] {algorithm} {task.name}", progress, tensorboard,
                book.worker_provenance() if worker else None, sweep_checked=True)


def _run_cells_here(plan: RunPlan, book: RunBook, progress: bool, tensorboard: bool) -> None:
    """The cells one after another in this process, each task's data made (when missing) and
    loaded once for all its cells, each cell trained with the plan's made algorithm."""
    done = 0
    for task, argument in zip(plan.tasks, plan.task_arguments, strict=True):
        book.add_data(task, plan.data_profile, progress)
        book.write()
        dataset = load_task_dataset(task, plan.data_files[task.name])
        for algorithm in plan.algorithms:
            book.add_cell(plan, algorithm, task.name)
            book.write()
            done += 1
            info = run_cell(_cell(plan, book, algorithm, task, argument, done, progress,
                                  tensorboard), dataset, made=plan.made[(algorithm, task.name)])
            if "models" in info:
                book.add_models(algorithm, task.name, info["models"])
                book.write()


def _run_cells_on_ray(plan: RunPlan, book: RunBook, progress: bool, tensorboard: bool,
                      ray: RayConfig) -> None:
    """The cells as Ray tasks: every task's data made and hashed here first, the shared models
    fitted once each, the cells dispatched; ``run.json`` updated (here alone) as each returns.
    Raises CellsFailed naming every failed cell after the others have finished."""
    from offrl_jax.training import distributed

    cluster = distributed.connect(ray)
    gpus = distributed.gpus_per_cell(ray)
    for task in plan.tasks:
        book.add_data(task, plan.data_profile, progress)
    cells = []
    for algorithm, task, argument in plan.cells():
        book.add_cell(plan, algorithm, task.name)
        cells.append(_cell(plan, book, algorithm, task, argument, len(cells) + 1, progress,
                           tensorboard, worker=True))
    # A cell finished earlier whose checkpoints are gone is not retrained: no fit for it.
    groups = model_groups([cell for cell in cells if not finished_without_checkpoint(cell)],
                          plan.made)
    run_info = book.info
    run_info["ray"] = {**cluster, "gpus_per_cell": gpus, "cpus_per_cell": ray.cpus_per_cell,
                       "driver_device": run_info["device"], "cells": {}}
    book.write()
    if progress:
        print(f"ray: {len(cells)} cell(s) and {len(groups)} model fit(s) on {cluster['nodes']} "
              f"node(s) ({cluster['resources']}), {gpus:g} GPU(s) per cell", flush=True)
    failed = []
    for kind, item, result, error in distributed.run_on_ray(cells, groups, ray, gpus):
        if kind == "fit":  # item: (task, pretrain_id); the report names the pretrain_id
            users = [cell.algorithm for cell in groups[item]]
            run_info.setdefault("model_fits", {})[f"{item[0]}/{'+'.join(users)}"] = {
                "algorithms": users,
                **(result or {"error": str(error).strip().splitlines()[-1]})}
        elif error is not None:
            failed.append(f"{item.algorithm} on {item.task_name}: "
                          f"{str(error).strip().splitlines()[-1]}")
        else:
            if "models" in result:
                book.add_models(item.algorithm, item.task_name, result["models"])
            run_info["ray"]["cells"][item.name] = {name: result[name] for name in (
                "host", "pid", "device", "device_count", "started", "finished", "seconds")}
        if error is not None and progress:
            print(f"ray: {kind} {getattr(item, 'name', item)} failed: {error}", flush=True)
        book.write()
    # The devices that trained (the driver's own JAX does no device work under Ray).
    done = run_info["ray"]["cells"].values()
    if done:
        run_info["device"] = "; ".join(sorted({cell["device"] for cell in done}))
        run_info["device_count"] = max(cell["device_count"] for cell in done)
    if failed:
        run_info["ray"]["failed"] = failed
        book.write()
        raise distributed.CellsFailed(f"{len(failed)} of {len(cells)} cell(s) failed (the "
                                      f"others are done; run the same command again to "
                                      f"resume): " + "; ".join(failed))
