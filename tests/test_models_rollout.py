"""Model rollouts: termination ends a rollout exactly, penalties measure member disagreement on
the same (s, a), and rollouts feed the ring buffer. Models are hand-built (no training)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offrl_jax.models import (
    EnsembleConfig,
    add,
    init_buffer,
    init_ensemble,
    predict,
    rollout,
    uncertainty_penalties,
)
from offrl_jax.tasks import ENV_SPECS

CONFIG = EnsembleConfig(num_members=5, num_elites=3, hidden_sizes=(8, 8),
                        weight_decays=(0.0, 0.0, 0.0), max_epochs=1)
HORIZON = 5


def constant_model(obs_dim: int, act_dim: int, delta, reward: float = 0.5):
    """Every member predicts next_obs = obs + delta, reward, with logvar at its lower bound."""
    state = init_ensemble(jax.random.key(0), obs_dim, act_dim, CONFIG)
    members = CONFIG.num_members
    out = state.params["params"]["output"]
    bias = jnp.concatenate([jnp.asarray(delta, jnp.float32), jnp.array([reward]),
                            jnp.full((obs_dim + 1,), -50.0)])
    params = {"params": {**state.params["params"], "output": {
        "kernel": jnp.zeros_like(out["kernel"]),
        "bias": jnp.broadcast_to(bias, (members, bias.size)),
    }}}
    return state.replace(params=params)


def zero_policy(key, obs):
    return jnp.zeros(obs.shape[:-1] + (1,))


def random_policy(act_dim):
    return lambda key, obs: jax.random.uniform(key, obs.shape[:-1] + (act_dim,), minval=-1.0,
                                               maxval=1.0)


def past_half(next_obs):
    return next_obs[..., 0] > 0.5


def never(next_obs):
    return jnp.zeros(next_obs.shape[:-1], bool)


# Module-level functions so that tests making the same call share one compiled rollout.
jit_rollout = jax.jit(rollout, static_argnums=(3, 4, 5, 6))


def rising_rollout(ks, penalty=None):
    """obs[0] rises by 1 per step from -(k - 1); past_half ends the rollout at step k."""
    state = constant_model(2, 1, delta=[1.0, 0.0])
    start = np.stack([-(ks - 1.0), np.arange(ks.size, dtype=float)], axis=1).astype(np.float32)
    return jit_rollout(state, jax.random.key(1), start, zero_policy, past_half, HORIZON, penalty)


def test_rollout_terminating_at_step_k_has_exactly_k_valid_transitions():
    # k = HORIZON + 1 never terminates within the horizon.
    ks = np.arange(1, HORIZON + 2)
    out = rising_rollout(ks, penalty="pairwise_max")
    chex.assert_shape(out.valid, (HORIZON, ks.size))
    chex.assert_shape(out.transitions.observations, (HORIZON, ks.size, 2))
    valid = np.asarray(out.valid)
    terminal = np.asarray(out.transitions.terminals)
    np.testing.assert_array_equal(valid.sum(axis=0), np.minimum(ks, HORIZON))
    for column, k in enumerate(ks):
        np.testing.assert_array_equal(valid[:, column], np.arange(HORIZON) < k)
        expected_terminal = np.zeros(HORIZON)
        if k <= HORIZON:
            expected_terminal[k - 1] = 1.0
        np.testing.assert_array_equal(terminal[:, column], expected_terminal)
    # Within a rollout each step starts where the previous one ended.
    obs = np.asarray(out.transitions.observations)
    next_obs = np.asarray(out.transitions.next_observations)
    both_valid = valid[1:] & valid[:-1]
    np.testing.assert_array_equal(obs[1:][both_valid], next_obs[:-1][both_valid])
    np.testing.assert_allclose(np.asarray(out.transitions.rewards)[valid], 0.5, atol=0.05)


def nan_past_two(key, obs):
    """A policy that diverges (NaN actions) once obs[0] passes 2.5."""
    return jnp.where(obs[..., :1] > 2.5, jnp.nan, 0.0)


def test_a_non_finite_step_ends_its_rollout_and_is_not_kept():
    """A diverged step (a NaN action, or a non-finite state) is no transition: it is invalid,
    ends its rollout, and no stored row carries NaN into a TD target."""
    state = constant_model(2, 1, delta=[1.0, 0.0])
    # obs[0] rises by 1 per step: from 0 the 4th step diverges; from 10 the first; from -10
    # never within the horizon; from inf every prediction is non-finite.
    start = np.array([[0.0, 0.0], [10.0, 0.0], [-10.0, 1.0], [np.inf, 0.0]], np.float32)
    out = jit_rollout(state, jax.random.key(1), start, nan_past_two, never, HORIZON,
                      "pairwise_max")
    valid = np.asarray(out.valid)
    np.testing.assert_array_equal(valid.sum(axis=0), [3, 0, HORIZON, 0])
    np.testing.assert_array_equal(valid[:, 0], [1, 1, 1, 0, 0])  # nothing after the divergence
    stored = jax.tree_util.tree_map(lambda x: np.asarray(x)[valid], out.transitions)
    for leaf in jax.tree_util.tree_leaves(stored):
        assert np.all(np.isfinite(leaf))
    assert not np.asarray(out.transitions.terminals)[valid].any()


def test_rollout_with_hopper_termination_stops_at_the_fall():
    # Height falls by 0.1 per step from 1.05: alive at 0.95, 0.85, 0.75; falls (<= 0.7) at 0.65.
    spec = ENV_SPECS["hopper"]
    delta = np.zeros(spec.obs_dim, np.float32)
    delta[0] = -0.1
    state = constant_model(spec.obs_dim, spec.act_dim, delta=delta)
    start = np.zeros((3, spec.obs_dim), np.float32)
    start[:, 0] = [1.05, 0.95, 2.0]
    start[2, 1] = 0.5  # |angle| >= 0.2: falls on its first step
    out = rollout(state, jax.random.key(2), start, random_policy(spec.act_dim),
                  spec.termination_fn, HORIZON, penalty="aleatoric")
    np.testing.assert_array_equal(np.asarray(out.valid).sum(axis=0), [4, 3, 1])
    np.testing.assert_array_equal(np.asarray(out.transitions.terminals).sum(axis=0), [1, 1, 1])
    assert not np.any(np.asarray(out.transitions.terminals)[~np.asarray(out.valid)])
    np.testing.assert_array_equal(out.transitions.penalties, out.uncertainties["aleatoric"])


def test_penalties_zero_when_members_agree_and_grow_with_disagreement():
    obs_dim, act_dim = 2, 1
    base = init_ensemble(jax.random.key(3), obs_dim, act_dim, CONFIG)
    member0 = jax.tree_util.tree_map(lambda p: jnp.broadcast_to(p[:1], p.shape), base.params)
    start = jax.random.normal(jax.random.key(4), (64, obs_dim))
    policy = random_policy(act_dim)

    @jax.jit
    def uncertainties(scale):
        # Members are member 0 plus noise of the given scale (scale 0: identical members).
        params = jax.tree_util.tree_map(
            lambda p, k: p + scale * jax.random.normal(k, p.shape),
            member0, _tree_keys(member0, jax.random.key(5)))
        out = rollout(base.replace(params=params), jax.random.key(6), start, policy, never,
                      HORIZON)
        return jax.tree_util.tree_map(jnp.mean, out.uncertainties)

    def mean_penalties(scale):
        return {name: float(value) for name, value in uncertainties(scale).items()}

    agree = mean_penalties(0.0)
    assert agree["pairwise_max"] == 0.0 and agree["ensemble_std"] == 0.0
    assert agree["aleatoric"] > 0.0  # noise of one member, not disagreement
    previous = agree
    for scale in (0.01, 0.05, 0.2):
        current = mean_penalties(scale)
        assert current["pairwise_max"] > previous["pairwise_max"]
        assert current["ensemble_std"] > previous["ensemble_std"]
        previous = current


def _tree_keys(tree, key):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return jax.tree_util.tree_unflatten(treedef, list(jax.random.split(key, len(leaves))))


def test_penalties_come_from_members_predictions_for_the_same_inputs():
    obs_dim, act_dim = 2, 1
    state = init_ensemble(jax.random.key(7), obs_dim, act_dim, CONFIG)
    start = jax.random.normal(jax.random.key(8), (16, obs_dim))
    out = rollout(state, jax.random.key(9), start, random_policy(act_dim), never, 3)
    step = 2
    mean, logvar = predict(state, out.transitions.observations[step],
                           out.transitions.actions[step])
    sigma_norm = np.linalg.norm(np.exp(0.5 * np.asarray(logvar)), axis=-1)
    np.testing.assert_allclose(out.uncertainties["aleatoric"][step], sigma_norm.max(axis=0),
                               rtol=1e-5)
    mean = np.asarray(mean)
    pairwise = np.max([np.linalg.norm(mean[i] - mean[j], axis=-1)
                       for i in range(len(mean)) for j in range(len(mean))], axis=0)
    np.testing.assert_allclose(out.uncertainties["pairwise_max"][step], pairwise, rtol=1e-5)
    np.testing.assert_allclose(out.uncertainties["ensemble_std"][step],
                               np.sqrt(mean.var(axis=0).mean(axis=-1)), rtol=1e-4)
    direct = uncertainty_penalties(jnp.asarray(mean), logvar)
    chex.assert_trees_all_close(direct, {k: v[step] for k, v in out.uncertainties.items()},
                                rtol=1e-5)


def test_rollout_feeds_the_buffer_only_valid_transitions():
    ks = np.array([1, 2, 3, 6, 6, 6])
    out = rising_rollout(ks, penalty="pairwise_max")
    buffer = add(init_buffer(100, 2, 1, with_penalty=True), out.transitions, out.valid)
    assert int(buffer.size) == int(out.num_valid) == 1 + 2 + 3 + 3 * HORIZON
    stored = np.asarray(buffer.data.observations[: int(buffer.size)])
    expected = np.asarray(out.transitions.observations)[np.asarray(out.valid)]
    np.testing.assert_array_equal(stored, expected)
    assert np.asarray(buffer.data.terminals).sum() == 3


def test_rollout_rejects_unknown_penalty():
    state = constant_model(2, 1, delta=[1.0, 0.0])
    with pytest.raises(ValueError, match="penalty must be None or one of"):
        rollout(state, jax.random.key(0), np.zeros((2, 2)), zero_policy, past_half, HORIZON,
                penalty="mopo")
