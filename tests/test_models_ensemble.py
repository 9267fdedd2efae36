"""Dynamics ensemble: calibration on a known linear system, early stopping, elites, checkpoints,
vmapped seeds. Tiny networks and small data so the file runs in seconds on a CPU."""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offrl_jax.models import (
    EnsembleConfig,
    evaluate,
    predict,
    restore_model,
    sample_step,
    save_model,
    select_seed,
    train_ensemble,
)
from offrl_jax.models.ensemble import holdout_size

OBS_DIM, ACT_DIM = 3, 2
NOISE_STD = np.array([0.05, 0.1, 0.2, 0.1])  # delta obs dims, then reward
NUM_ROWS = 4000
# One config and one data shape for the whole file: every test reuses the same compiled
# training program. Patience 20 (not 5) lets the variance head settle for the calibration test.
TINY = EnsembleConfig(num_members=4, num_elites=2, hidden_sizes=(16, 16),
                      weight_decays=(2.5e-5, 5e-5, 1e-4), max_epochs=300, patience=20)


def linear_system(n: int, seed: int):
    """next = A s + B a + noise, reward = sum(s) + noise; A, B fixed, noise std NOISE_STD."""
    system = np.random.default_rng(1234)
    a_mat = np.eye(OBS_DIM) + 0.1 * system.normal(size=(OBS_DIM, OBS_DIM))
    b_mat = 0.5 * system.normal(size=(OBS_DIM, ACT_DIM))
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, OBS_DIM)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, ACT_DIM)).astype(np.float32)
    next_obs = obs @ a_mat.T + act @ b_mat.T + NOISE_STD[:OBS_DIM] * rng.normal(size=(n, OBS_DIM))
    rew = obs.sum(axis=1) + NOISE_STD[-1] * rng.normal(size=n)
    true_mean = np.concatenate(
        [obs @ a_mat.T + act @ b_mat.T - obs, obs.sum(axis=1, keepdims=True)], axis=1)
    return (obs, act, rew.astype(np.float32), next_obs.astype(np.float32)), true_mean


@pytest.fixture(scope="module")
def linear_data():
    return linear_system(NUM_ROWS, seed=0)[0]


@pytest.fixture(scope="module")
def tiny_state(linear_data):
    return jax.block_until_ready(train_ensemble(jax.random.key(0), *linear_data, TINY))


def test_recovers_mean_and_calibrated_variance(tiny_state):
    state = tiny_state
    (obs, act, rew, next_obs), true_mean = linear_system(2000, seed=1)
    mean, logvar = predict(state, obs, act)
    elites = np.asarray(state.elite_indices)
    mean, var = np.asarray(mean)[elites], np.exp(np.asarray(logvar))[elites]

    # Mean map: error far below the noise in every dim.
    rmse = np.sqrt(np.mean((mean - true_mean) ** 2, axis=1))
    assert np.all(rmse < 0.4 * NOISE_STD), rmse
    # Variance: exp(logvar) close to sigma^2 (median over fresh inputs, each elite, each dim).
    ratio = np.median(var, axis=1) / NOISE_STD**2
    assert np.all((ratio > 0.7) & (ratio < 1.4)), ratio
    # NLL per dim on fresh data close to the true noise's NLL.
    true_nll = 0.5 * (math.log(2 * math.pi) + np.mean(np.log(NOISE_STD**2)) + 1.0)
    nll = np.asarray(evaluate(state, obs, act, rew, next_obs)["nll"])[elites]
    assert np.all(np.abs(nll - true_nll) < 0.12), (nll, true_nll)
    assert np.all(np.abs(np.asarray(state.holdout_nll)[elites] - true_nll) < 0.15)


def test_early_stopping_fires_on_plateau_and_follows_the_rule():
    rng = np.random.default_rng(3)
    n = NUM_ROWS
    obs = rng.normal(size=(n, OBS_DIM)).astype(np.float32)
    act = rng.normal(size=(n, ACT_DIM)).astype(np.float32)
    next_obs = obs + rng.normal(size=(n, OBS_DIM)).astype(np.float32)  # pure-noise targets
    rew = rng.normal(size=n).astype(np.float32)
    state = train_ensemble(jax.random.key(1), obs, act, rew, next_obs, TINY)
    epochs = int(state.epochs_trained)
    assert TINY.patience <= epochs < TINY.max_epochs // 5

    history = np.asarray(state.mse_history)
    assert np.all(np.isfinite(history[:epochs])) and np.all(np.isnan(history[epochs:]))
    # Replay the rule on the recorded history: it must stop exactly where training stopped.
    best, stale = np.full(TINY.num_members, np.inf), 0
    for epoch in range(TINY.max_epochs):
        improved = history[epoch] < best * (1 - TINY.improvement_threshold)
        best = np.where(improved, history[epoch], best)
        stale = 0 if improved.any() else stale + 1
        if stale >= TINY.patience:
            break
    assert epoch + 1 == epochs
    # Each member keeps the weights of its last >1% improvement.
    np.testing.assert_allclose(np.asarray(state.holdout_mse), best, rtol=1e-5)


def test_elites_are_the_lowest_holdout_members(tiny_state, linear_data):
    state = tiny_state
    mse = np.asarray(state.holdout_mse)
    chex.assert_shape(state.elite_indices, (TINY.num_elites,))
    np.testing.assert_array_equal(np.asarray(state.elite_indices),
                                  np.argsort(mse)[: TINY.num_elites])
    assert len(set(np.asarray(state.elite_indices).tolist())) == TINY.num_elites
    # The reported holdout metrics are those of the kept weights on the held-out rows.
    rows = np.asarray(state.holdout_indices)
    assert rows.size == holdout_size(NUM_ROWS, TINY) == 800
    held_out = [x[rows] for x in linear_data]
    metrics = evaluate(state, *held_out)
    np.testing.assert_allclose(metrics["mse"], mse, rtol=1e-4)
    np.testing.assert_allclose(metrics["nll"], state.holdout_nll, rtol=1e-4, atol=1e-5)
    # Input statistics come from the train split only.
    train_rows = np.setdiff1d(np.arange(NUM_ROWS), rows)
    inputs = np.concatenate([linear_data[0], linear_data[1]], axis=1)[train_rows]
    np.testing.assert_allclose(state.input_mean, inputs.mean(0), atol=1e-5)
    np.testing.assert_allclose(state.input_std, inputs.std(0), rtol=1e-4)


def test_constant_input_dim_gets_unit_std(linear_data):
    obs, act, rew, next_obs = linear_data
    act = act.copy()
    act[:, 0] = 3.0
    state = train_ensemble(jax.random.key(0), obs, act, rew, next_obs, TINY)
    assert float(state.input_std[OBS_DIM]) == 1.0
    assert np.all(np.isfinite(np.asarray(predict(state, obs[:4], act[:4])[0])))


def test_restored_checkpoint_predicts_identically(tiny_state, linear_data, tmp_path):
    path = save_model(tmp_path / "model", tiny_state)
    restored = restore_model(path)
    assert restored.config == TINY
    assert (restored.obs_dim, restored.act_dim) == (OBS_DIM, ACT_DIM)
    obs, act = linear_data[0][:64], linear_data[1][:64]
    for original, loaded in zip(predict(tiny_state, obs, act), predict(restored, obs, act),
                                strict=True):
        np.testing.assert_array_equal(original, loaded)
    key = jax.random.key(7)
    for original, loaded in zip(jax.tree_util.tree_leaves(sample_step(tiny_state, key, obs, act)),
                                jax.tree_util.tree_leaves(sample_step(restored, key, obs, act)),
                                strict=True):
        np.testing.assert_array_equal(original, loaded)
    chex.assert_trees_all_equal(jax.device_get(tiny_state), jax.device_get(restored))


def test_vmapped_seeds_differ_and_each_depends_only_on_its_own_key(linear_data):
    """Swapping the two keys swaps the two trained ensembles bit for bit: the same compiled
    program runs every row through the same instructions, so nothing but a leak between seeds
    could change a row. (A 1-seed program is another compilation whose float32 rounding drifts
    over 300 epochs; see docs/reproducibility.md.)"""
    keys = jax.random.split(jax.random.key(42), 2)
    # train_ensemble itself is vmappable with the data shared (train_ensembles is this call).
    train = jax.vmap(train_ensemble, in_axes=(0, None, None, None, None, None))
    states = train(keys, *linear_data, TINY)
    chex.assert_shape(states.holdout_mse, (2, TINY.num_members))
    chex.assert_shape(states.params["params"]["output"]["kernel"],
                      (2, TINY.num_members, 16, 2 * (OBS_DIM + 1)))
    swapped = train(keys[::-1], *linear_data, TINY)
    for seed in range(2):
        chex.assert_trees_all_equal(select_seed(states, seed), select_seed(swapped, 1 - seed))
    obs, act = linear_data[0][:128], linear_data[1][:128]
    means = [np.asarray(predict(select_seed(states, seed), obs, act)[0]) for seed in range(2)]
    assert np.max(np.abs(means[0] - means[1])) > 1e-3
    assert not np.array_equal(states.holdout_indices[0], states.holdout_indices[1])


def test_sample_step_uses_elites_and_adds_delta(tiny_state, linear_data):
    obs, act = jnp.asarray(linear_data[0][:500]), jnp.asarray(linear_data[1][:500])
    next_obs, reward, info = sample_step(tiny_state, jax.random.key(3), obs, act)
    chex.assert_shape(next_obs, (500, OBS_DIM))
    chex.assert_shape(reward, (500,))
    members = np.asarray(info["member"])
    assert set(members.tolist()) == set(np.asarray(tiny_state.elite_indices).tolist())
    mean, _ = predict(tiny_state, obs, act)
    det_next, det_reward, det_info = sample_step(tiny_state, jax.random.key(3), obs, act,
                                                 deterministic=True)
    chosen = np.asarray(mean)[members, np.arange(500)]
    np.testing.assert_allclose(det_next, np.asarray(obs) + chosen[:, :OBS_DIM], atol=1e-6)
    np.testing.assert_allclose(det_reward, chosen[:, OBS_DIM], atol=1e-6)


def test_config_and_data_errors_are_actionable(linear_data):
    with pytest.raises(ValueError, match="weight_decays has 5 entries"):
        EnsembleConfig(hidden_sizes=(32, 32))
    obs, act, rew, next_obs = linear_data
    with pytest.raises(ValueError, match="next_observations"):
        train_ensemble(jax.random.key(0), obs, act, rew, next_obs[:10], TINY)
