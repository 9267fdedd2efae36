"""``offrl report DIR [DIR ...] --out MERGED``: several run directories (other machines, other
seeds, Ray workers) merged into one set of records, tables and plots.

A merge refuses what cannot be one table: a task whose data differs between the runs (another
dataset id, e.g. ``hopper-medium-gen1`` against a real D4RL file), or the same evaluation of the
same (algorithm, task, seed, sweep point) in two runs, which would count a seed twice. Errors
name the directories, the task or cell, and what each holds.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from offrl_jax.files import write_text_atomic
from offrl_jax.results.provenance import training_commits
from offrl_jax.results.records import load_records, write_records
from offrl_jax.results.summary import write_summary


class MergeError(ValueError):
    """Runs that cannot be merged into one table."""


def _run_info(directory: Path) -> dict:
    path = directory / "run.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise MergeError(f"{path}: expected a run's run.json, found "
                         f"{type(error).__name__}: {error}") from None


def merge_runs(directories: list[str | Path], out_dir: str | Path,
               algorithms: list[str] | None = None, *,
               reference_updates: Mapping[str, int]) -> list[dict]:
    """Merge the runs into ``out_dir`` (records, ``run.json`` naming every source, summary
    tables and plots); returns the summary rows. ``algorithms`` keeps those algorithms' records
    alone (each must be in at least one of the runs). ``reference_updates``: each algorithm's
    reference budget (:func:`~offrl_jax.results.settings.differences`)."""
    directories = [Path(d) for d in directories]
    out_dir = Path(out_dir)
    infos = {d: _run_info(d) for d in directories}
    data: dict[str, tuple[Path, dict]] = {}
    for directory, info in infos.items():
        for task, task_info in info.get("data", {}).items():
            if task not in data:
                data[task] = (directory, task_info)
                continue
            first_dir, first = data[task]
            if first.get("dataset_id") != task_info.get("dataset_id"):
                raise MergeError(
                    f"task {task!r}: {first_dir} ran it on {first.get('dataset_id')!r} and "
                    f"{directory} on {task_info.get('dataset_id')!r}; results on two versions "
                    f"of a dataset cannot share a table")
            digests = (first.get("sha256"), task_info.get("sha256"))
            if None not in digests and digests[0] != digests[1]:
                raise MergeError(
                    f"task {task!r}: {first_dir} and {directory} both ran "
                    f"{first.get('dataset_id')!r}, but on different files (sha256 {digests[0]} "
                    f"and {digests[1]}); results on two versions of a dataset cannot share a "
                    f"table")
    cells: dict[tuple, Path] = {}
    groups: dict[tuple, list[dict]] = defaultdict(list)
    found = set()
    for directory in directories:
        for record in load_records(directory):
            found.add(record["algorithm"])
            if algorithms is not None and record["algorithm"] not in algorithms:
                continue
            point = json.dumps(record.get("sweep") or {}, sort_keys=True)
            cell = (record["algorithm"], record["task"], record["seed"], point, record["step"])
            if cell in cells:
                raise MergeError(
                    f"{record['algorithm']} on {record['task']}, seed {record['seed']}"
                    f"{' ' + point if record.get('sweep') else ''}, step {record['step']}: in "
                    f"{cells[cell]} and in {directory}; a seed may come from one run only")
            cells[cell] = directory
            sweep_key = tuple(sorted((record.get("sweep") or {}).keys()))
            groups[(record["algorithm"], record["task"], sweep_key)].append(record)
    missing = sorted(set(algorithms or ()) - found)
    if missing:
        raise MergeError(f"--algos {' '.join(missing)}: in none of the runs "
                         f"({', '.join(str(d) for d in directories)}), which hold "
                         f"{', '.join(sorted(found)) or 'no records'}")
    for (algo, task, sweep_key), records in groups.items():
        records.sort(key=lambda r: (r["step"], json.dumps(r.get("sweep") or {}), r["seed"]))
        sweep = {name: [] for name in sweep_key} or None
        write_records(out_dir, algo, task,
                      [{k: v for k, v in r.items() if k not in ("algorithm", "task")}
                       for r in records], sweep)

    # Read from each run's cells/ (a merged directory has none: its run.json's), so a run whose
    # driver predates trained_by_commit is still described.
    trained_by: dict[str, list[str]] = {}
    for directory, info in infos.items():
        found_by = (training_commits(directory) if (Path(directory) / "cells").is_dir()
                    else info.get("trained_by_commit") or {})
        for commit, names in found_by.items():
            trained_by.setdefault(commit, []).extend(
                n for n in names if n not in trained_by[commit]
                and (algorithms is None or n.split("__")[0] in algorithms))
    trained_by = {commit: names for commit, names in trained_by.items() if names}

    def joined(key):
        return "; ".join(sorted({str(info.get(key)) for info in infos.values()}))

    merged = {
        "merged_from": {str(d): {k: info.get(k) for k in ("profile", "commit", "device",
                                                          "started", "finished", "seeds",
                                                          "algorithms", "tasks", "train")}
                        for d, info in infos.items()},
        "profile": joined("profile"), "device": joined("device"),
        "device_count": max(int(info.get("device_count") or 1) for info in infos.values()),
        "commit": joined("commit"),
        "code_modified_since_commit": any(info.get("code_modified_since_commit")
                                          for info in infos.values()),
        "trained_by_commit": trained_by,
        "versions": next(iter(infos.values())).get("versions", {}),
        "data": {task: info for task, (_, info) in data.items()},
    }
    write_text_atomic(out_dir / "run.json", json.dumps(merged, indent=2))
    return write_summary(out_dir, reference_updates)
