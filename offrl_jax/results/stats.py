"""Aggregate statistics of normalized scores, with rliable's definitions (Agarwal et al., 2021,
"Deep Reinforcement Learning at the Edge of the Statistical Precipice", NeurIPS; the
``google-research/rliable`` library), vectorised in numpy.

Scores come as one array per task (one entry per run: a seed, or a seed of a sweep point).

- **IQM**: the mean of the scores left after cutting ``floor(n / 4)`` from each end of all runs of
  all tasks together (scipy's ``trim_mean(x, 0.25)``). With fewer than 4 runs nothing is cut and
  the IQM is the mean (:func:`iqm_is_mean`).
- **median**, **mean**, and the **optimality gap**: the mean shortfall below ``gamma`` (100 on the
  D4RL scale, rliable's 1.0 on its normalized scale), ``mean(max(gamma - x, 0))``.
- **Stratified bootstrap CIs**: runs are resampled with replacement within each task (50,000
  resamples by default, as rliable), the statistic is computed on each resample, and the
  percentile interval of the resamples is the CI.
- **Probability of improvement** ``P(X > Y)``: per task, the Mann-Whitney U statistic over every
  pair of runs (a tie counts a half), averaged over tasks; its CI bootstraps both algorithms' runs
  within each task.
- **Performance profile**: the fraction of all runs whose score exceeds each threshold tau.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

BOOTSTRAP_REPS = 50_000
# A seed's "last" score in the tables: the mean of its last LAST_K evaluations (our choice: it
# smooths the noise of a single evaluation; of the validate profile's 20 evaluations it takes the
# second half, and a shorter run's whole curve).
LAST_K = 10
OPTIMALITY_GAMMA = 100.0


def _as_tasks(scores_by_task) -> list[np.ndarray]:
    tasks = [np.asarray(s, np.float64).ravel() for s in scores_by_task]
    if not tasks or any(t.size == 0 for t in tasks):
        raise ValueError("every task needs at least one score")
    return tasks


def _trimmed_mean(sorted_rows: np.ndarray) -> np.ndarray:
    """IQM of each row of an array sorted along its last axis."""
    n = sorted_rows.shape[-1]
    cut = int(0.25 * n)
    return sorted_rows[..., cut:n - cut].mean(axis=-1)


def iqm(scores) -> float:
    return float(_trimmed_mean(np.sort(np.asarray(scores, np.float64).ravel())))


def iqm_is_mean(num_runs: int) -> bool:
    """True when the IQM cuts nothing: fewer than 4 runs."""
    return int(0.25 * num_runs) == 0


def _gap(x: np.ndarray, gamma: float = OPTIMALITY_GAMMA) -> np.ndarray:
    return np.maximum(gamma - x, 0.0).mean(axis=-1)


def optimality_gap(scores, gamma: float = OPTIMALITY_GAMMA) -> float:
    return float(_gap(np.asarray(scores, np.float64).ravel(), gamma))


# Statistics over all runs of all tasks, vectorised over the leading (resample) axis.
AGGREGATES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "iqm": lambda x: _trimmed_mean(np.sort(x, axis=-1)),
    "mean": lambda x: x.mean(axis=-1),
    "median": lambda x: np.median(x, axis=-1),
    "optimality_gap": _gap,
}


def _resample(tasks: list[np.ndarray], reps: int, rng) -> np.ndarray:
    """``(reps, runs)``: each task's runs resampled with replacement, tasks side by side."""
    return np.concatenate([t[rng.integers(0, t.size, (reps, t.size))] for t in tasks], axis=1)


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def aggregate(scores_by_task: Sequence, reps: int = BOOTSTRAP_REPS, seed: int = 0,
              level: float = 0.95) -> dict[str, tuple[float, float, float]]:
    """``{statistic: (point, ci_low, ci_high)}`` for every statistic of :data:`AGGREGATES`,
    the CIs from one stratified bootstrap of ``reps`` resamples."""
    tasks = _as_tasks(scores_by_task)
    runs = np.concatenate(tasks)
    samples = _resample(tasks, reps, np.random.default_rng(seed))
    return {name: (float(fn(runs[None])[0]), *_interval(fn(samples), level))
            for name, fn in AGGREGATES.items()}


def stratified_bootstrap_ci(scores_by_task: Sequence, statistic=None, reps: int = BOOTSTRAP_REPS,
                            seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """CI of one statistic (an :data:`AGGREGATES` name or a function of a ``(reps, runs)``
    array along its last axis; default IQM), resampling runs within each task."""
    fn = AGGREGATES[statistic or "iqm"] if not callable(statistic) else statistic
    samples = _resample(_as_tasks(scores_by_task), reps, np.random.default_rng(seed))
    return _interval(np.asarray(fn(samples)), level)


def _improvement(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) of one task for arrays ``(..., n)`` and ``(..., m)``: the U statistic / (n m)."""
    greater = (x[..., :, None] > y[..., None, :]).mean(axis=(-2, -1))
    ties = (x[..., :, None] == y[..., None, :]).mean(axis=(-2, -1))
    return greater + 0.5 * ties


def probability_of_improvement(x_by_task: Sequence, y_by_task: Sequence,
                               reps: int = BOOTSTRAP_REPS, seed: int = 0, level: float = 0.95
                               ) -> tuple[float, float, float]:
    """``(P(X > Y), ci_low, ci_high)`` of algorithm X over Y on the same tasks (in the same
    order); each task's runs of X and of Y are resampled independently. Memory grows with
    ``reps x runs_x x runs_y`` per task: the resamples are processed in chunks."""
    xs, ys = _as_tasks(x_by_task), _as_tasks(y_by_task)
    if len(xs) != len(ys):
        raise ValueError(f"X has {len(xs)} tasks and Y {len(ys)}; give the same tasks")
    point = float(np.mean([_improvement(x, y) for x, y in zip(xs, ys, strict=True)]))
    rng = np.random.default_rng(seed)
    values = np.empty(reps)
    chunk = 5_000
    for start in range(0, reps, chunk):
        n = min(chunk, reps - start)
        per_task = [_improvement(x[rng.integers(0, x.size, (n, x.size))],
                                 y[rng.integers(0, y.size, (n, y.size))])
                    for x, y in zip(xs, ys, strict=True)]
        values[start:start + n] = np.mean(per_task, axis=0)
    return (point, *_interval(values, level))


def performance_profile(scores_by_task: Sequence, taus: np.ndarray, reps: int = 2_000,
                        seed: int = 0, level: float = 0.95
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fraction, ci_low, ci_high)``, each ``(len(taus),)``: the fraction of runs (all tasks)
    scoring above each tau, and its stratified-bootstrap band."""
    tasks = _as_tasks(scores_by_task)
    runs = np.concatenate(tasks)
    taus = np.asarray(taus, np.float64)
    fraction = (runs[:, None] > taus[None]).mean(axis=0)
    samples = _resample(tasks, reps, np.random.default_rng(seed))
    resampled = (samples[..., None] > taus).mean(axis=1)  # (reps, taus)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(resampled, [tail, 100 - tail], axis=0)
    return fraction, low, high
