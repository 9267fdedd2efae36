"""One cell of a benchmark: an (algorithm, task) pair, all its seeds (and sweep points) in one
:class:`~offrl_jax.training.Trainer`, run the same way by the local runner
(:func:`offrl_jax.training.runner.run_plan`) and by a Ray worker
(:mod:`offrl_jax.training.distributed`).

A cell writes only files that are its own, under the run directory ``OUT``, ``NAME`` being
``ALGO__TASK`` (``ALGO__TASK__sweep-LEAF`` for a sweep)::

    records/NAME.jsonl   its evaluations (rewritten atomically after each one)
    logs/NAME/           its scalar logs (and TensorBoard event files)
    checkpoints/NAME/    its training checkpoints
    cells/NAME.json      what it ran and where: schedule, config, the data's path and sha256,
                         the models it reused or fitted, host, device, start, end, status

The files every cell contributes to, ``run.json``, ``config.json``, the summary tables and the
plots, are the driver's alone, written from what the cells return. The model store
``OUT/models/`` is shared on purpose (one fit per seed serves every model-based algorithm): its
entries are written atomically, concurrent writers included (:mod:`offrl_jax.models.store`), and
under Ray :func:`fit_models` fills it before the cells that need it start (one fit per task and
``pretrain_id``, :func:`model_groups`), so those cells only read it.

A cell given no dataset (a Ray worker) loads the file the driver made and recorded in
``run.json`` (``data.TASK.path``) after checking that its sha256 is the one the driver recorded
(``data.TASK.sha256``), and refuses to run on a host whose library versions or commit differ from
the driver's (another build of XLA or MuJoCo gives other numbers).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from offrl_jax.algorithms.base import Algorithm
from offrl_jax.algorithms.registry import get_algorithm
from offrl_jax.data import Dataset, load_task_dataset
from offrl_jax.data.checksum import check_sha256
from offrl_jax.files import read_json_object, timestamp, write_text_atomic
from offrl_jax.models.store import ModelStore
from offrl_jax.results.labels import cell_name, point_label
from offrl_jax.results.provenance import (
    device_description,
    git_commit,
    library_versions,
    process_commit,
)
from offrl_jax.results.records import records_path, write_records, write_scalar_logs
from offrl_jax.results.tensorboard import TensorBoardLogs
from offrl_jax.tasks import Task, get_task, parse_task_argument
from offrl_jax.training.loop import TrainConfig, Trainer


@dataclasses.dataclass(frozen=True)
class Cell:
    """Everything one cell needs, picklable, so a Ray worker can run it from this alone.

    ``task``: the task argument as given to ``offrl bench`` (a name, ``NAME=ENV:PATH`` or a
    Minari id), which a worker registers again; ``task_name``: the task's name. ``data``: the
    task's entry of ``run.json``'s ``data`` (``path``, ``format``, ``sha256``, ...).
    ``provenance``: the driver's library ``versions`` and ``commit``, which a worker must have
    (None: not checked, as in a local run). ``sweep_checked``: the driver's run plan checked the
    sweep against the algorithm's state, so the cell's :class:`Trainer` does not again.
    """

    algorithm: str
    task: str
    task_name: str
    config: Any
    train: TrainConfig
    seeds: tuple[int, ...]
    sweep: dict
    out_dir: str
    data: dict
    data_profile: str
    label: str = ""
    progress: bool = True
    tensorboard: bool = False
    provenance: dict | None = None
    sweep_checked: bool = False

    @property
    def name(self) -> str:
        """The cell's files' name: ``ALGO__TASK`` (``ALGO__TASK__sweep-LEAF`` in a sweep)."""
        return cell_name(self.algorithm, self.task_name, self.sweep)


def cell_file(out_dir: str | Path, cell: Cell) -> Path:
    return Path(out_dir) / "cells" / f"{cell.name}.json"


def model_groups(cells: list[Cell], made: Mapping[tuple[str, str], Algorithm]
                 ) -> dict[tuple[str, str], list[Cell]]:
    """``{(task name, pretrain_id): cells}``: the cells whose algorithms pretrain the same models
    (MOPO, COMBO, MOReL and RAMBO with equal ``dynamics.*`` settings share one ensemble per seed;
    ARMOR's single model has its own id), in the cells' order. ``made``: each cell's algorithm,
    made for its config and task, by ``(algorithm, task name)`` (a run plan's)."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        algorithm = made[(cell.algorithm, cell.task_name)]
        if algorithm.pretrain is not None:
            groups.setdefault((cell.task_name, algorithm.pretrain_id), []).append(cell)
    return groups


def check_worker(provenance: dict | None) -> None:
    """Raise RuntimeError, naming this host, the library and both versions, unless this process
    runs the driver's library versions and commit (when both commits are known)."""
    if not provenance:
        return
    host = platform.node()
    found = library_versions()
    for name, expected in provenance.get("versions", {}).items():
        if found.get(name) != expected:
            raise RuntimeError(
                f"host {host}: {name} {found.get(name)}, the driver's {expected}; every Ray node "
                f"must run the same versions (install the same checkout and constraints)")
    expected = provenance.get("commit", "unknown")
    commit, _ = git_commit()
    if "unknown" not in (commit, expected) and commit != expected:
        raise RuntimeError(f"host {host}: offrl_jax at commit {commit}, the driver's at "
                           f"{expected}; every Ray node must run the same checkout")


def load_cell_dataset(cell: Cell) -> tuple[Task, Dataset]:
    """``cell``'s task, registered in this process, and the dataset the driver recorded for it,
    checked by its sha256 first (a :class:`~offrl_jax.data.DatasetError` naming the file and
    both digests on a mismatch; FileNotFoundError when this host does not see the file)."""
    path = cell.data["path"]
    check_sha256(path, cell.data["sha256"], where=f"host {platform.node()}")
    task = parse_task_argument(cell.task)
    if task.path is not None and Path(task.path).resolve() != Path(path).resolve():
        raise FileNotFoundError(
            f"task {task.name!r}: host {platform.node()} finds its data at {task.path}, the "
            f"driver at {path}; every node must see the data at the driver's path")
    if task.path is None:  # a built-in task: the driver's file, not this host's own lookup
        task = dataclasses.replace(task, path=path, fmt=cell.data["format"])
    return task, load_task_dataset(task)


def _task_and_dataset(cell: Cell, dataset: Dataset | None) -> tuple[Task, Dataset]:
    if dataset is not None:  # the driver's process: the task is registered, the data loaded
        return get_task(cell.task_name), dataset
    check_worker(cell.provenance)
    return load_cell_dataset(cell)


def _log(cell: Cell):
    if not cell.progress:
        return None

    def log(line):
        print(f"{cell.label}: {line}", flush=True)

    return log


def _where() -> dict:
    import jax

    return {"host": platform.node(), "pid": os.getpid(), "device": device_description(),
            "device_count": jax.device_count()}


def _code() -> dict:
    """The commit of the code this process runs (``code_modified`` when it has local changes)."""
    commit, dirty = process_commit()
    return {"commit": commit, **({"code_modified": True} if dirty else {})}


def fit_models(cell: Cell, dataset: Dataset | None = None) -> dict | None:
    """Load or fit, in ``OUT/models/``, every seed's model that ``cell``'s algorithm pretrains,
    as the cell itself would (the same :meth:`Trainer.prepare_models`, so the same numbers);
    returns its report (None for an algorithm without ``pretrain``). Writes only store
    entries."""
    task, dataset = _task_and_dataset(cell, dataset)
    trainer = Trainer(get_algorithm(cell.algorithm), cell.config, dataset, task.spec,
                      list(cell.seeds), cell.train, sweep=cell.sweep,
                      model_store=ModelStore(Path(cell.out_dir) / "models"), log=_log(cell),
                      sweep_checked=cell.sweep_checked)
    report = trainer.prepare_models()
    return None if report is None else {**report, **_where()}


def run_cell(cell: Cell, dataset: Dataset | None = None, made: Algorithm | None = None) -> dict:
    """Train and evaluate one cell to its end (resuming from its checkpoints), writing only its
    own files (module docstring); returns what ``cells/NAME.json`` holds: ``algorithm``,
    ``task``, ``sweep``, ``seeds``, ``train``, ``config``, ``data``, ``models`` (the report of
    :func:`~offrl_jax.models.store.load_or_fit`, for algorithms with ``pretrain``), ``host``,
    ``pid``, ``device``, ``device_count``, ``started``, ``finished``, ``seconds``, ``status``,
    and ``invocations``: one entry (``started``, ``seconds``, ``updates`` trained, ``status``,
    the ``commit`` of the code, where it ran) per call that worked on the cell, earlier ones (a
    killed run, an earlier invocation's, a finished cell called again) kept from the file, so a
    cell resumed across invocations and machines says where its time went and which code trained
    it.
    ``seconds`` is this call's, kept current at every evaluation; ``total_seconds`` their sum;
    ``started`` the first call's start; ``finished`` when its training ended (a later call that
    found nothing left to train, 0 ``updates``, keeps it).

    A cell file that says finished, for this very cell, with records complete to the last
    update but no checkpoints (results kept in git, checked out on another machine) is not
    trained again: the call adds a 0-update invocation and returns. Without checkpoints any other
    cell trains from the start.

    ``dataset``: the task's data, already loaded (the local runner); None: load and check it
    (:func:`load_cell_dataset`). ``made``: the cell's algorithm, already made for its config and
    task (the local runner's plan); None: made here."""
    started, clock = timestamp(), time.perf_counter()
    task, dataset = _task_and_dataset(cell, dataset)
    out_dir = Path(cell.out_dir)
    previous = read_json_object(cell_file(out_dir, cell))
    earlier = _earlier_invocations(previous)
    if _finished_elsewhere(cell, task.name, previous, out_dir):
        # A finished cell whose checkpoints are gone (results kept in git, checked out on a
        # fresh machine): its records are complete, retraining would only repeat them.
        # Where it trained stays in the file; this call, which trained nothing, is listed.
        info = {**previous, "seconds": 0.0, "invocations": [*earlier, {
            "started": started, "seconds": 0.0, "updates": 0, "status": "finished",
            "note": "records complete to the last update, no checkpoint: not retrained",
            **_code(), **_where()}]}
        write_text_atomic(cell_file(out_dir, cell), json.dumps(info, indent=2))
        if cell.progress:
            print(f"{cell.label}: finished {previous.get('finished')} (records complete to "
                  f"update {cell.train.num_updates}); its checkpoints are absent, not "
                  f"retrained", flush=True)
        return info
    if (previous and not (out_dir / "checkpoints" / cell.name).exists()
            and cell.progress and records_path(out_dir, cell.algorithm, task.name,
                                               cell.sweep).exists()):
        print(f"{cell.label}: records of an earlier call but no checkpoint to resume from; "
              f"training from the start (the records are replaced as it goes)", flush=True)
    # Written only when a call ends its training: a call that trains nothing keeps it.
    finished_before = previous.get("finished")
    trained = {"updates": 0}  # by this call
    info = {"algorithm": cell.algorithm, "task": task.name, "sweep": cell.sweep,
            "seeds": list(cell.seeds), "train": dataclasses.asdict(cell.train),
            "config": repr(cell.config),
            "algorithm_version": get_algorithm(cell.algorithm).version,
            "data": {key: cell.data.get(key) for key in ("dataset_id", "path", "sha256")},
            **_where(), "started": started, "status": "running"}

    def stamp(status: str) -> None:  # this call's time so far, beside the earlier calls'
        seconds = round(time.perf_counter() - clock, 1)
        this = {"started": started, "seconds": seconds, "updates": trained["updates"],
                "status": status, **_code(),
                **{k: info[k] for k in ("host", "pid", "device", "device_count")}}
        info.update(seconds=seconds, status=status, invocations=[*earlier, this],
                    total_seconds=round(sum(i.get("seconds") or 0.0
                                            for i in [*earlier, this]), 1),
                    started=(earlier[0].get("started") if earlier else started))
        write_text_atomic(cell_file(out_dir, cell), json.dumps(info, indent=2))

    # A sweep's files are apart from the unswept run's, so both can share out_dir.
    trainer = Trainer(get_algorithm(cell.algorithm), cell.config, dataset, task.spec,
                      list(cell.seeds), cell.train,
                      checkpoint_dir=out_dir / "checkpoints" / cell.name, sweep=cell.sweep,
                      model_store=ModelStore(out_dir / "models"), log=_log(cell), made=made,
                      sweep_checked=cell.sweep_checked)
    models = trainer.prepare_models()
    if models is not None:
        info["models"] = models
    stamp("running")
    progress_line = _ProgressLine(cell.label, cell.train.eval_every, len(cell.seeds), cell.sweep,
                                  cell.progress)
    tensorboard = (TensorBoardLogs(out_dir, cell.algorithm, task.name, cell.sweep)
                   if cell.tensorboard else None)

    def on_interval(i, n, all_records, new):
        trained["updates"] += cell.train.eval_every
        write_records(out_dir, cell.algorithm, task.name, all_records, cell.sweep)
        write_scalar_logs(out_dir, cell.algorithm, task.name, all_records, cell.sweep)
        if tensorboard is not None:
            tensorboard.write(all_records)
        stamp("running")
        progress_line(i, n, new)

    try:
        carry = trainer.run(on_interval)
    finally:
        if tensorboard is not None:
            tensorboard.close()
    write_records(out_dir, cell.algorithm, task.name, carry["records"], cell.sweep)
    info["finished"] = (finished_before if finished_before and not trained["updates"]
                        else timestamp())
    stamp("finished")
    return info


def _finished_elsewhere(cell: Cell, task_name: str, previous: dict, out_dir: Path) -> bool:
    """Whether ``previous`` (the cell file's content) records this very cell finished (same
    algorithm and algorithm version (a file without one: version 1), task, sweep, seeds,
    schedule, config and data sha256), its checkpoints are absent
    and its records hold every row's evaluation at the last update, as many rows as at the first
    evaluation. A cell with checkpoints resumes from them as ever (0 updates when finished)."""
    if previous.get("status") != "finished":
        return False
    if (out_dir / "checkpoints" / cell.name).exists():
        return False
    expected = {"algorithm": cell.algorithm, "task": task_name, "sweep": cell.sweep,
                "seeds": list(cell.seeds), "train": dataclasses.asdict(cell.train),
                "config": repr(cell.config), "sha256": cell.data.get("sha256")}
    found = {**{k: previous.get(k) for k in expected if k != "sha256"},
             "sha256": (previous.get("data") or {}).get("sha256")}
    if json.loads(json.dumps(expected)) != json.loads(json.dumps(found)):
        return False
    if previous.get("algorithm_version", 1) != get_algorithm(cell.algorithm).version:
        return False
    path = records_path(out_dir, cell.algorithm, task_name, cell.sweep)
    try:
        records = [json.loads(line) for line in path.read_text().splitlines() if line]
    except (OSError, ValueError):
        return False
    steps = [r.get("step") for r in records]
    if not steps:
        return False
    last, first = cell.train.num_updates, min((s for s in steps if s is not None), default=None)
    final = [r for r in records if r.get("step") == last]
    return (bool(final) and len(final) == steps.count(first)
            and {r.get("seed") for r in final} == set(cell.seeds))


def finished_without_checkpoint(cell: Cell) -> bool:
    """Whether :func:`run_cell` would find ``cell`` finished, with its records complete, and not
    train it (its checkpoints absent): the Ray driver fits no models for such a cell."""
    out_dir = Path(cell.out_dir)
    return _finished_elsewhere(cell, cell.task_name, read_json_object(cell_file(out_dir, cell)),
                               out_dir)



def _earlier_invocations(previous: dict) -> list[dict]:
    """The invocations a cell file's content records (an older file without the list counts as
    one; a "running" status there means that call was killed); none for an empty one."""
    if not previous:
        return []
    if "invocations" in previous:
        calls = previous["invocations"]
    else:
        calls = [{k: previous.get(k) for k in ("started", "seconds", "status", "host", "pid",
                                                 "device", "device_count")}]
    return [{**c, "status": "killed" if c.get("status") == "running" else c.get("status")}
            for c in calls]


class _ProgressLine:
    """Prints evaluations done, the latest score (per sweep point), updates/s and the time
    left. The rate is measured from the end of the call's first interval on: the first one
    also holds the start-up (init, such as ATAC's 100k-update warm start, half an hour on a
    2-core CPU, or a checkpoint's restore) and the compilations, and would make every later
    estimate wrong; its own line says so."""

    def __init__(self, label: str, eval_every: int, num_seeds: int, sweep: dict,
                 enabled: bool, clock: Callable[[], float] = time.perf_counter):
        self.label, self.eval_every, self.num_seeds = label, eval_every, num_seeds
        self.sweep = sweep
        self.enabled = enabled
        self.clock = clock
        self.started = clock()
        self.first_done: float | None = None
        self.intervals = 0

    def __call__(self, i: int, n: int, new: list[dict]) -> None:
        self.intervals += 1
        now = self.clock()
        if self.first_done is None:
            self.first_done = now
            elapsed, intervals, what = now - self.started, 1, "incl. start-up, compilation, "
        else:
            elapsed, intervals, what = now - self.first_done, self.intervals - 1, "incl. "
        if not self.enabled:
            return
        rate = intervals * self.eval_every / max(elapsed, 1e-9)
        left = (n - i) * self.eval_every / max(rate, 1e-9)
        scores: dict[str, list[float]] = {}
        for r in new:
            point = f"[{point_label(r['sweep'])}] " if self.sweep else ""
            scores.setdefault(point, [])
            if not r["failed"]:
                scores[point].append(r["normalized_score"])
        score = ", ".join(point + (f"{np.mean(s):.1f} ± {np.std(s):.1f}" if s else "all failed")
                          for point, s in scores.items())
        rows = f"x{self.num_seeds} seeds"
        if self.sweep:
            rows = (f"x{len(new)} rows: {len(scores)} sweep point(s) of "
                    f"{', '.join(self.sweep)} x {self.num_seeds} seeds")
        print(f"{self.label}: eval {i}/{n}, score {score}, {rate:.0f} updates/s "
              f"({rows}, {what}evaluation), ~{left / 60:.1f} min left", flush=True)


__all__ = ["Cell", "cell_file", "check_worker", "finished_without_checkpoint", "fit_models",
           "load_cell_dataset", "model_groups", "run_cell"]
