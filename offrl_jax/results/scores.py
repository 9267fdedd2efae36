"""Per-seed scores read from a run's records, the input of every table and plot: the final
and last-10 score of each run, the labels of the rows in their order, and the final scores by
task."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from offrl_jax.results.labels import run_label
from offrl_jax.results.stats import LAST_K


def seed_scores(records: list[dict]) -> dict[tuple[str, str], dict[str, dict[int, float]]]:
    """``{(label, task): {"final": {seed: score}, "last10": {seed: score}, "failed": set}}``,
    ``label`` from :func:`run_label` (the algorithm, or ``ALGO[LEAF=VALUE]`` in a sweep).

    "final" is the last evaluation, "last10" the mean of the last 10 evaluations. Seeds that
    failed (non-finite losses) are listed under "failed" and counted in both like every other
    seed: the training loop keeps their last finite parameters and evaluates them at every
    later evaluation (a method that diverges often must not look better than it is). Only an
    evaluation without a score (records of older runs, or a non-finite evaluation) is left out.
    """
    by_run = defaultdict(lambda: defaultdict(list))
    failed = defaultdict(set)
    for r in records:
        key = (run_label(r), r["task"])
        if r["failed"]:
            failed[key].add(r["seed"])
        if r["normalized_score"] is not None:
            by_run[key][r["seed"]].append((r["step"], r["normalized_score"]))
    out = {}
    for key in set(by_run) | set(failed):
        seeds = {s: sorted(v) for s, v in by_run[key].items()}
        out[key] = {
            "final": {s: v[-1][1] for s, v in seeds.items()},
            "last10": {s: float(np.mean([x for _, x in v[-LAST_K:]])) for s, v in seeds.items()},
            "last_n": min((min(len(v), LAST_K) for v in seeds.values()), default=0),
            "failed": failed[key],
        }
    return out


def labels_in_order(records: list[dict]) -> dict[str, tuple[str, dict]]:
    """``{label: (algorithm, sweep point)}`` sorted by algorithm, then by the swept values as
    numbers (``penalty_coef=2.5`` before ``penalty_coef=10``); an unswept run first."""
    runs = {run_label(r): (r["algorithm"], r.get("sweep") or {}) for r in records}
    return dict(sorted(runs.items(), key=lambda item: (item[1][0], tuple(item[1][1].items()))))


def final_by_task(records: list[dict]) -> dict[str, dict[str, np.ndarray]]:
    """``{label: {task: final scores of its runs}}``."""
    out: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for (label, task), scores in seed_scores(records).items():
        if scores["final"]:
            out[label][task] = np.array(list(scores["final"].values()))
    return out
