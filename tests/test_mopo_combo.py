"""MOPO and COMBO: the reward penalty, the real/model mix, COMBO's conservative term, learning
beyond BC, vmapped seeds independent of each other, a lambda sweep as one program, and rollouts that
run once per refresh period outside the update.

Compilation dominates on a CPU, so the MOPO tests share one trained run (4 seeds vmapped, one
compiled interval program) and the COMBO tests one run of 2 rows (beta = 0 and beta > 0).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bandit import BANDIT_SPEC, bandit_dataset, compiled_program, regret, train_rows

from offrl_jax.algorithms import bc, combo, mopo
from offrl_jax.data import sample_batch
from offrl_jax.models import (
    EnsembleConfig,
    add,
    init_ensemble,
    predict,
    sample_step,
    uncertainty_penalties,
)
from offrl_jax.models.buffer import Transitions
from offrl_jax.parts import rollouts
from offrl_jax.parts.conservative import conservative_penalty, sampled_actions
from offrl_jax.tasks import get_env_spec

HOPPER = get_env_spec("hopper")


# Small networks, and learning rates that let 1500 updates finish the job (the temperature must
# fall from 1 within the run); the ensemble trains a fixed 200 epochs (patience > epochs).
SMALL = {"dynamics.members": 3, "dynamics.elites": 2, "dynamics.hidden_dims": (64, 64),
         "dynamics.batch_size": 128, "dynamics.lr": 3e-3, "dynamics.max_epochs": 200,
         "dynamics.patience": 1000, "rollouts.batch_size": 200, "rollouts.horizon": 2,
         "rollouts.retain": 5, "rollouts.refresh_every": 50, "rollouts.chunk_size": 100,
         "agent.hidden_dims": (64, 64), "batch_size": 128, "agent.actor_lr": 1e-3,
         "agent.alpha_lr": 3e-3}
EVAL_EVERY, INTERVALS = 100, 10
MOPO_SEEDS = (0, 1, 2, 3)


def row(tree, i):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def broadcast_row(state, i, rows):
    return jax.tree_util.tree_map(lambda x: jnp.stack([x[i]] * rows), state)


@pytest.fixture(scope="module")
def broad():
    return bandit_dataset(narrow=False)


@pytest.fixture(scope="module")
def narrow():
    return bandit_dataset(narrow=True)


@pytest.fixture(scope="module")
def mopo_run(broad):
    """MOPO on the broad data, 4 seeds vmapped in one program."""
    data, _ = broad
    config = mopo.ALGORITHM.make_config(overrides=SMALL)
    init, interval = compiled_program(mopo.ALGORITHM, config, BANDIT_SPEC, data,
                                      len(MOPO_SEEDS), EVAL_EVERY)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in MOPO_SEEDS])
    initial = init(keys, data)
    states, metrics, failed = train_rows(interval, initial, data, keys, INTERVALS)
    assert not failed.any()
    return {"config": config, "interval": interval, "keys": keys, "initial": initial,
            "states": states, "metrics": metrics,
            "algorithm": mopo.ALGORITHM.make(config, BANDIT_SPEC)}


@pytest.fixture(scope="module")
def combo_run(narrow):
    """COMBO on the narrow data, two rows from the same key: beta = 0 (no conservative term)
    and beta = 1. Batch 64: the 30 sampled actions per state make COMBO's update the costly one."""
    data, _ = narrow
    config = combo.ALGORITHM.make_config(overrides={**SMALL, "batch_size": 64})
    init, interval = compiled_program(combo.ALGORITHM, config, BANDIT_SPEC, data, 2, EVAL_EVERY)
    keys = jnp.stack([jax.random.PRNGKey(0)] * 2)
    states, metrics, failed = train_rows(interval, init(keys, data), data, keys, INTERVALS,
                                         cql_weight=[0.0, 1.0])
    assert not failed.any()
    return {"config": config, "states": states, "metrics": metrics,
            "algorithm": combo.ALGORITHM.make(config, BANDIT_SPEC)}


# --- the penalty and the real/model mix --------------------------------------------------------

PENALTY_ROLLOUTS = rollouts.Rollouts(
    rollouts.Config(batch_size=64, horizon=1, retain=1, chunk_size=32), BANDIT_SPEC,
    "pairwise_max")


def _hand_made_model(agree: bool):
    """An untrained ensemble whose members are identical copies (agree) or not."""
    ensemble = init_ensemble(jax.random.PRNGKey(3), HOPPER.obs_dim, HOPPER.act_dim,
                             EnsembleConfig(num_members=3, num_elites=2, hidden_sizes=(16,),
                                            weight_decays=(0.0, 0.0)))
    if agree:
        ensemble = ensemble.replace(params=jax.tree_util.tree_map(
            lambda p: jnp.broadcast_to(p[:1], p.shape), ensemble.params))
    return ensemble


@jax.jit
def _refresh_and_mix(ensemble, data, key, coef):
    """MOPO's steps 2 and 3 on a hand-made model: rollouts storing u(s, a), then the model rows
    penalised with ``coef`` and raw (the same rows: the same key)."""
    uniform = lambda k, obs: jax.random.uniform(k, obs.shape[:-1] + (3,), minval=-1)  # noqa
    state = PENALTY_ROLLOUTS.refresh(PENALTY_ROLLOUTS.init(), ensemble, data, key, uniform)
    _, raw, _ = rollouts.sample(state, data, key, 64, 0.0)
    return state, mopo.MOPO.penalized(raw, coef), raw


def _max_pairwise_distance(ensemble, obs, act):
    mean, _ = predict(ensemble, obs, act)
    return jnp.linalg.norm(mean[:, None] - mean[None, :], axis=-1).max((0, 1))


def test_penalty_lowers_rewards_only_where_members_disagree(toy_hopper_dataset):
    coef = 2.5
    for agree in (True, False):
        ensemble = _hand_made_model(agree)
        model, penalised, raw = _refresh_and_mix(ensemble, toy_hopper_dataset,
                                                 jax.random.PRNGKey(0), coef)
        stored = model.buffer.data
        chex.assert_shape(stored.penalties, (64,))
        # Known answer: u is the largest distance between members' predicted means.
        np.testing.assert_allclose(
            stored.penalties, _max_pairwise_distance(ensemble, stored.observations,
                                                     stored.actions), rtol=1e-4, atol=1e-5)
        gap = np.asarray(raw.rewards - penalised.rewards)
        if agree:
            np.testing.assert_allclose(gap, 0.0, atol=1e-5)
            assert float(model.rollout_uncertainty) < 1e-5
        else:
            assert (gap > 1e-3).all(), gap.min()
            # Both batches hold the same rows (same key): the gap is exactly coef * u(s, a).
            u = _max_pairwise_distance(ensemble, raw.observations, raw.actions)
            np.testing.assert_allclose(gap, coef * np.asarray(u), rtol=1e-3, atol=1e-4)


def test_elite_only_rollouts_sample_the_same_transitions():
    ensemble = init_ensemble(jax.random.PRNGKey(4), HOPPER.obs_dim, HOPPER.act_dim,
                             EnsembleConfig(num_members=4, num_elites=2, hidden_sizes=(8,),
                                            weight_decays=(0.0, 0.0)))
    ensemble = ensemble.replace(elite_indices=jnp.array([3, 1], jnp.int32))
    obs = jax.random.normal(jax.random.PRNGKey(0), (50, HOPPER.obs_dim))
    act = jax.random.uniform(jax.random.PRNGKey(1), (50, HOPPER.act_dim), minval=-1)
    full = sample_step(ensemble, jax.random.PRNGKey(2), obs, act)
    elites = sample_step(rollouts.elites_only(ensemble), jax.random.PRNGKey(2), obs, act)
    np.testing.assert_allclose(full[0], elites[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(full[1], elites[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ensemble.elite_indices[elites[2]["member"]],
                                  full[2]["member"])


def test_rollout_chunk_follows_the_config_and_the_backend():
    chunk = lambda **kw: rollouts.chunk(rollouts.Config(**kw))  # noqa: E731
    auto = rollouts.CPU_ROLLOUT_CHUNK if jax.default_backend() == "cpu" else 50_000
    assert chunk(batch_size=50_000) == auto
    assert chunk(batch_size=500) == 500  # never more than the start states
    assert chunk(batch_size=50_000, chunk_size=0) == 50_000
    assert chunk(batch_size=50_000, chunk_size=3_000) == 3_000
    with pytest.raises(ValueError, match="chunk_size must be None"):
        rollouts.Config(chunk_size=-1)


@pytest.mark.parametrize("real_ratio", [0.05, 0.5])
def test_mixed_batch_has_the_configured_real_ratio(real_ratio, toy_hopper_dataset):
    data = toy_hopper_dataset.replace(rewards=jnp.ones_like(toy_hopper_dataset.rewards))
    config = rollouts.Config(batch_size=10, horizon=10, retain=1)
    state = rollouts.Rollouts(config, HOPPER).init()
    fake = sample_batch(data, jax.random.PRNGKey(1), 100)
    fake = Transitions(fake.observations, fake.actions, -jnp.ones(100), fake.next_observations,
                       fake.terminals)
    state = state.replace(buffer=add(state.buffer, fake, jnp.ones(100, bool)))
    real, model_rows, _ = rollouts.sample(state, data, jax.random.PRNGKey(2), 256, real_ratio)
    batch = rollouts.concatenate(real, model_rows)
    chex.assert_shape(batch.observations, (256, HOPPER.obs_dim))
    expected = int(round(256 * real_ratio))
    assert rollouts.num_real(256, real_ratio) == expected
    np.testing.assert_array_equal(np.asarray(batch.rewards[:expected]), 1.0)
    np.testing.assert_array_equal(np.asarray(batch.rewards[expected:]), -1.0)
    chex.assert_shape(real.actions, (expected, HOPPER.act_dim))


def test_trained_members_disagree_more_off_the_data(mopo_run, broad):
    data, _ = broad
    ensemble = row(mopo_run["states"][-1].model, 0)
    seen = uncertainty_penalties(*predict(ensemble, data.observations, data.actions))
    unseen = uncertainty_penalties(*predict(ensemble, 4.0 * data.observations, data.actions))
    for name in ("pairwise_max", "ensemble_std"):
        assert float(unseen[name].mean()) > 3 * float(seen[name].mean()), name


# --- learning --------------------------------------------------------------------------------

def bc_regret(data, w):
    cloner = bc.BC(bc.BCConfig(hidden_dims=(64, 64), batch_size=128), HOPPER)

    @jax.jit
    def train(key):
        state = cloner.init(key, data)
        keys = jax.random.split(key, EVAL_EVERY * INTERVALS)
        return jax.lax.scan(lambda s, k: cloner.update(s, data, k), state, keys)[0]

    return regret(cloner.act, train(jax.random.PRNGKey(0)), w)


def test_mopo_beats_bc_on_a_suboptimal_dataset(mopo_run, broad):
    data, w = broad
    final = mopo_run["states"][-1]
    regrets = [regret(mopo_run["algorithm"].act, row(final, i), w)
               for i in range(len(MOPO_SEEDS))]
    baseline = bc_regret(data, w)
    assert max(regrets) < 0.5 * baseline, (regrets, baseline)


def test_combo_beats_bc_where_the_model_is_exploitable(combo_run, narrow):
    """On narrow data the model is wrong off the data: without the conservative term the policy
    exploits it; with it, COMBO beats BC."""
    data, w = narrow
    final = combo_run["states"][-1]
    plain, conservative = (regret(combo_run["algorithm"].act, row(final, i), w) for i in (0, 1))
    baseline = bc_regret(data, w)
    assert conservative < 0.6 * baseline, (conservative, baseline)
    assert plain > baseline, (plain, baseline)


# --- COMBO's conservative term -----------------------------------------------------------------

def test_combo_conservative_term_has_gradient(combo_run, narrow):
    data, _ = narrow
    state = row(combo_run["states"][0], 1)
    config, agent = combo_run["config"], combo_run["algorithm"].agent

    @jax.jit
    def penalty_gradient(state, key):
        real, model_rows, _ = rollouts.sample(state.rollouts, data, key, config.batch_size,
                                              config.real_ratio)
        batch = rollouts.concatenate(real, model_rows)
        policy = lambda o, k: agent.sample(state.agent.actor_params, o, k)  # noqa: E731
        actions, log_probs = sampled_actions(key, policy, batch.observations,
                                             batch.next_observations, HOPPER.act_dim,
                                             config.conservative.num_samples)

        def penalty(params):
            q_fn = lambda o, a: agent.q(params, o, a)  # noqa: E731
            return conservative_penalty(q_fn, batch.observations, actions, log_probs,
                                        q_fn(real.observations, real.actions)).sum()

        return jax.grad(penalty)(state.agent.critic_params)

    grads = penalty_gradient(state, jax.random.PRNGKey(0))
    assert sum(float(jnp.sum(g ** 2)) for g in jax.tree_util.tree_leaves(grads)) > 1e-8
    final = combo_run["metrics"][-1]
    assert final["conservative_penalty"][1] < final["conservative_penalty"][0]


def test_combo_lowers_unseen_actions_and_keeps_the_bellman_fit(combo_run, narrow):
    """The conservative term ranks dataset actions above unseen ones, and leaves the fit to
    the data's Bellman targets (one-step data: the reward) intact up to its known offset.

    Per critic the loss is (Q - y)^2 + beta * (push-down - push-up): on a dataset action the
    policy never takes, the push-up alone holds Q at y + beta / 2; on the actions the policy
    does take the fit stays unbiased."""
    data, w = narrow
    final = combo_run["states"][-1]
    obs, actions, rewards = data.observations, data.actions, data.rewards
    unseen = jax.random.uniform(jax.random.PRNGKey(5), actions.shape, minval=-1, maxval=1)
    near_best = np.linalg.norm(np.asarray(actions) - np.tanh(np.asarray(obs) @ w), axis=1) < 0.3

    agent = combo_run["algorithm"].agent

    def q(state, a):
        return np.asarray(agent.q(state.agent.critic_params, obs, a))

    gaps, mse, bias = [], [], []
    for i in (0, 1):
        state = row(final, i)
        q_data = q(state, actions)
        gaps.append(float(np.mean(q_data.min(0) - q(state, unseen).min(0))))
        residual = q_data - np.asarray(rewards)
        mse.append(float(np.mean(residual ** 2)))
        bias.append((float(residual[:, near_best].mean()), float(residual[:, ~near_best].mean())))
    plain, conservative = gaps
    assert conservative > plain + 0.5, gaps
    beta = 1.0
    (good_bias, other_bias) = bias[1]
    assert abs(good_bias) < 0.15, bias
    assert other_bias < beta / 2 + 0.15, bias
    assert mse[1] < mse[0] + (beta / 2) ** 2 + 0.05, mse


# --- seeds, sweeps and refresh periods -------------------------------------------------------

def test_each_vmapped_seed_depends_only_on_its_own_key(mopo_run, broad):
    """A seed's row of the 4-seed program is bit-identical when the other rows are replaced by
    copies of it: nothing flows between seeds (no reduction over the seed axis, no shared
    randomness), over 200 updates, 4 model refreshes and their rollouts.

    Exact equality holds on any processor because both runs execute the same compiled program
    on arrays of the same shapes: every row goes through the same instructions. Comparing with
    a 1-row program instead would compare two different compilations, whose float32 roundings
    differ by ~1e-7 in the first update and grow without bound over a training run (Adam turns
    a rounding-sized gradient into a full-sized step when that gradient is near zero), so no
    tolerance would hold on every processor; see docs/reproducibility.md."""
    data, _ = broad
    together = mopo_run["states"][1]
    for i in (1, 3):
        copies = broadcast_row(mopo_run["initial"], i, len(MOPO_SEEDS))
        keys = jnp.stack([mopo_run["keys"][i]] * len(MOPO_SEEDS))
        alone = train_rows(mopo_run["interval"], copies, data, keys, 2)[0][-1]
        for j in range(len(MOPO_SEEDS)):
            jax.tree_util.tree_map(
                lambda a, b, i=i, j=j: np.testing.assert_array_equal(a[i], b[j]),
                (together.agent, together.model, together.rollouts),
                (alone.agent, alone.model, alone.rollouts))
    # The property can fail: another seed's row is far from this one.
    params = jax.tree_util.tree_leaves(together.agent.actor_params)[0]
    assert np.max(np.abs(params[0] - params[1])) > 1e-2


def test_penalty_coefficient_sweep_runs_as_one_program(mopo_run, broad):
    data, _ = broad
    lambdas = [0.0, 1.0, 2.5, 5.0]
    start = broadcast_row(mopo_run["initial"], 0, len(lambdas))
    keys = jnp.stack([mopo_run["keys"][0]] * len(lambdas))
    # The compiled program of the seeds run takes the sweep as is: lambda is a state leaf.
    states, metrics, _ = train_rows(mopo_run["interval"], start, data, keys, 2,
                                    penalty_coef=lambdas)
    np.testing.assert_array_equal(np.asarray(states[-1].penalty_coef), lambdas)
    # Same key and start: the rows differ only through lambda. A larger penalty, a lower value.
    q_mean = metrics[-1]["q_mean"]
    assert (np.diff(q_mean) < 0).all(), q_mean
    np.testing.assert_array_equal(np.asarray(states[0].rollouts.refreshes), 2)


def test_rollouts_run_once_per_refresh_period(mopo_run):
    config = mopo_run["config"].rollouts
    per_period = config.batch_size  # every rollout ends after its first step
    capacity = config.batch_size * config.horizon * config.retain
    periods_per_interval = EVAL_EVERY // config.refresh_every
    for i, state in enumerate(mopo_run["states"]):
        periods = (i + 1) * periods_per_interval
        np.testing.assert_array_equal(np.asarray(state.rollouts.refreshes), periods)
        np.testing.assert_array_equal(np.asarray(state.rollouts.rows_added),
                                      periods * per_period)
        np.testing.assert_array_equal(np.asarray(state.rollouts.buffer.size),
                                      min(periods * per_period, capacity))
        np.testing.assert_array_equal(np.asarray(state.rollouts.buffer.insert_position),
                                      periods * per_period % capacity)
        np.testing.assert_array_equal(np.asarray(state.agent.step), (i + 1) * EVAL_EVERY)


@pytest.mark.parametrize("run", ["mopo_run", "combo_run"])
def test_update_never_touches_the_model_and_refresh_does(run, request, broad):
    """The inner update scan never runs the ensemble (no rollouts hidden in it,
    docs/algorithms.md#pitfall-1): no operation of the traced update reads the ensemble's
    parameters."""
    data, _ = broad
    fixture = request.getfixturevalue(run)
    algorithm = fixture["algorithm"]
    state = row(fixture["states"][0], 0)
    leaves, treedef = jax.tree_util.tree_flatten(state)
    model_params = jax.tree_util.tree_leaves(state.model.params)
    positions = [i for i, leaf in enumerate(leaves) if any(leaf is p for p in model_params)]
    assert len(positions) == len(model_params)

    def reads_model(fn):
        closed = jax.make_jaxpr(lambda *xs: fn(jax.tree_util.tree_unflatten(treedef, xs), data,
                                               jax.random.PRNGKey(0)))(*leaves)
        wanted = {id(closed.jaxpr.invars[i]) for i in positions}
        return any(id(v) in wanted for eqn in closed.jaxpr.eqns for v in eqn.invars)

    assert not reads_model(algorithm.update)
    assert reads_model(algorithm.refresh)


def test_task_settings_follow_the_reference_table():
    config = mopo.ALGORITHM.make_config("hopper-medium")
    assert (config.rollouts.horizon, config.penalty_coef) == (5, 5.0)
    assert mopo.ALGORITHM.make_config("walker2d-random").rollouts.horizon == 1
    assert mopo.ALGORITHM.make_config("hopper-random").penalty_coef == 1.0
    config = combo.ALGORITHM.make_config("walker2d-medium", {"cql_weight": 0.5})
    assert (config.rollouts.horizon, config.cql_weight) == (1, 0.5)
    assert config.rollouts.capacity == 50_000 * 1 * 5
    assert mopo.ALGORITHM.make_config(
        overrides={"rollouts.buffer_capacity": 1234}).rollouts.capacity == 1234
    with pytest.raises(ValueError, match="penalty"):
        mopo.MOPOConfig(penalty="nonsense")
