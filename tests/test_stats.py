"""rliable's statistics, vectorised: known answers computed by hand."""

import numpy as np
import pytest

from offrl_jax.results.stats import (
    aggregate,
    iqm,
    iqm_is_mean,
    optimality_gap,
    performance_profile,
    probability_of_improvement,
    stratified_bootstrap_ci,
)


def test_iqm_and_optimality_gap_known_answers():
    assert iqm(np.arange(1, 9)) == pytest.approx(4.5)  # cuts 2 from each end: mean(3..6)
    assert iqm([1.0, 2.0, 9.0]) == pytest.approx(4.0)  # 3 runs: nothing cut, the mean
    assert iqm_is_mean(3) and not iqm_is_mean(4)
    assert optimality_gap([50.0, 120.0, 100.0, 0.0]) == pytest.approx(37.5)


def test_aggregate_points_and_stratified_intervals():
    tasks = [np.array([0.0, 0.0]), np.array([100.0, 100.0])]
    stats = aggregate(tasks, reps=1_000)
    # Resampling within tasks keeps two 0s and two 100s in every resample: exact intervals.
    # (Pooling the runs would resample four 0s or four 100s too.)
    assert stats["iqm"] == pytest.approx((50.0, 50.0, 50.0))
    assert stats["mean"] == pytest.approx((50.0, 50.0, 50.0))
    assert stats["optimality_gap"] == pytest.approx((50.0, 50.0, 50.0))
    rng = np.random.default_rng(0)
    noisy = [rng.normal(40, 10, 5), rng.normal(70, 5, 5)]
    stats = aggregate(noisy, reps=5_000)
    runs = np.concatenate(noisy)
    assert stats["median"][0] == pytest.approx(np.median(runs))
    for point, low, high in stats.values():
        assert low <= point <= high and high > low
    assert stratified_bootstrap_ci(noisy, "iqm", reps=5_000) == pytest.approx(stats["iqm"][1:])


def test_probability_of_improvement_known_answer():
    # Task 1: pairs (1,2) (1,2) (2,2) (2,2) (3,2) (3,2) -> 0, 0, .5, .5, 1, 1 = 0.5;
    # task 2: 5 > 1 -> 1.0. Average over tasks: 0.75.
    x, y = [np.array([1.0, 2.0, 3.0]), np.array([5.0])], [np.array([2.0, 2.0]), np.array([1.0])]
    p, low, high = probability_of_improvement(x, y, reps=2_000)
    assert p == pytest.approx(0.75) and low <= p <= high
    q, _, _ = probability_of_improvement(y, x, reps=10)
    assert p + q == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same tasks"):
        probability_of_improvement(x, y[:1])


def test_performance_profile_known_answer():
    fraction, low, high = performance_profile([np.array([0.0, 50.0, 100.0])],
                                              np.array([-1.0, 25.0, 75.0, 100.0]), reps=500)
    np.testing.assert_allclose(fraction, [1.0, 2 / 3, 1 / 3, 0.0])
    assert np.all(low <= fraction) and np.all(fraction <= high)
