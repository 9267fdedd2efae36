"""What each row of a run's tables ran, where it differs from the algorithm's reference
settings: the config defaults with the task's table (``Registration.make_config(task)``) and the
reference number of updates (the papers' budgets, the ``full`` run profile's,
``docs/algorithms.md#training-length``), which the caller hands in as ``reference_updates``
(``{algorithm: updates}``, :func:`offrl_jax.training.profiles.reference_updates`): the run
profiles are training's, a layer above the tables.

Read from ``config.json`` (every setting resolved, profile and ``--set`` overrides applied) of
the run directory and of every run an ``offrl report`` merged; a run without one has no notes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path


def sample_std(values) -> float:
    """The sample standard deviation (ddof=1) the tables print after "±"; NaN for one value."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    return float(values.std(ddof=1)) if values.size > 1 else float("nan")


def _config_files(run_dir: Path, run_info: dict) -> list[Path]:
    paths = [run_dir / "config.json"]
    for merged in run_info.get("merged_from", {}):
        for base in (Path(merged), run_dir / merged):
            if (base / "config.json").exists():
                paths.append(base / "config.json")
                break
    return [p for p in paths if p.exists()]


def _text(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(_text(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _updates(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 and n % 100_000 == 0 else f"{n / 1000:g}k"


def differences(algorithm: str, task: str, settings: dict, num_updates: int | None,
                reference_updates: Mapping[str, int]) -> list[str]:
    """``path=value (ref. default)`` for each setting unlike the reference config, then
    ``N of M updates`` when the run's budget is not the reference ``M`` of
    ``reference_updates`` (``{algorithm: updates}``; none for an algorithm it lacks)."""
    from offrl_jax.algorithms.base import config_paths
    from offrl_jax.algorithms.registry import ALGORITHMS

    registration = ALGORITHMS.get(algorithm)
    if registration is None:
        return []
    reference = config_paths(registration.make_config(task))
    notes = []
    for path, value in settings.items():
        if path == "total_updates" or path not in reference:  # follows the run's length
            continue
        expected = reference[path]
        same = (list(value) == list(expected) if isinstance(value, (list, tuple))
                else value == expected)
        if not same:
            notes.append(f"{path}={_text(value)} (ref. {_text(expected)})")
    full = reference_updates.get(algorithm)
    if num_updates is not None and full is not None and num_updates != full:
        notes.append(f"{_updates(num_updates)} of {_updates(full)} updates")
    return notes


def run_settings(run_dir: Path, run_info: dict, reference_updates: Mapping[str, int]
                 ) -> dict[tuple[str, str], list[str]]:
    """``{(algorithm, task): [difference, ...]}`` of every cell some ``config.json`` names
    (an empty list: the reference settings); ``reference_updates``: as :func:`differences`."""
    out: dict[tuple[str, str], list[str]] = {}
    for path in _config_files(Path(run_dir), run_info):
        config = json.loads(path.read_text())
        train = config.get("train", {})
        for cell, settings in config.get("settings", {}).items():
            algorithm, _, task = cell.partition("/")
            updates = (train.get(algorithm) or {}).get("num_updates")
            out.setdefault((algorithm, task), differences(algorithm, task, settings, updates,
                                                               reference_updates))
    return out


def settings_text(notes: list[str] | None) -> str:
    """A table cell: ``-`` where unknown, ``reference`` where nothing differs."""
    if notes is None:
        return "-"
    return "; ".join(notes) if notes else "reference"


def row_settings(settings: dict, algorithm: str, tasks: list[str]) -> str:
    """The cell of a row over ``tasks`` (one, or all of an "all tasks" row)."""
    texts = {settings_text(settings.get((algorithm, task))) for task in tasks}
    return texts.pop() if len(texts) == 1 else "per task, above"
