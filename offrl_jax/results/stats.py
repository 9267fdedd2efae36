"""Aggregate statistics of normalized scores, following rliable (Agarwal et al., 2021).

IQM is the interquartile mean: the mean of the scores left after cutting ``floor(n/4)`` from
each end (scipy's ``trim_mean(x, 0.25)``). Confidence intervals come from a stratified
bootstrap: seeds are resampled with replacement within each task, and the 2.5 / 97.5
percentiles of the statistic over the resamples bound the 95% interval.
"""

from __future__ import annotations

import numpy as np


def iqm(scores) -> float:
    values = np.sort(np.asarray(scores, np.float64).ravel())
    cut = int(0.25 * values.size)
    return float(values[cut:values.size - cut].mean())


def stratified_bootstrap_ci(scores_by_task: list[np.ndarray], statistic=iqm,
                            reps: int = 2000, seed: int = 0, level: float = 0.95
                            ) -> tuple[float, float]:
    """CI of ``statistic`` over all tasks' scores, resampling seeds within each task."""
    rng = np.random.default_rng(seed)
    values = np.empty(reps)
    tasks = [np.asarray(s, np.float64).ravel() for s in scores_by_task]
    for r in range(reps):
        sample = [t[rng.integers(0, t.size, t.size)] for t in tasks]
        values[r] = statistic(np.concatenate(sample))
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)
