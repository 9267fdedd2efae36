"""MOReL and RAMBO: halting in unknown states, the threshold from data, the adversarial model
step, and learning beyond BC on a task with a known optimum."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bandit import BANDIT_SPEC, bandit_dataset, compiled_program, regret, train_rows
from hand_made import hand_made_ensemble, swish

from offrl_jax.algorithms import bc, morel, rambo
from offrl_jax.data import Dataset
from offrl_jax.models import predict, uncertainty_penalties
from offrl_jax.models.buffer import Transitions
from offrl_jax.tasks import get_env_spec

# A short run: the temperature must fall within it.
SMALL = {"dynamics.members": 3, "dynamics.elites": 2, "dynamics.hidden_dims": (64, 64),
         "dynamics.batch_size": 128, "dynamics.max_epochs": 60, "dynamics.patience": 100,
         "rollouts.batch_size": 200, "rollouts.horizon": 1, "rollouts.retain": 5,
         "rollouts.refresh_every": 50, "rollouts.chunk_size": 100,
         "agent.hidden_dims": (64, 64), "batch_size": 128, "agent.actor_lr": 1e-3,
         "agent.alpha_lr": 3e-3}
EVAL_EVERY, INTERVALS = 100, 15
HOPPER = get_env_spec("hopper")


@pytest.fixture(scope="module")
def bandit():
    return bandit_dataset(narrow=True)


def test_halt_unknown_known_answer():
    horizon, starts = 4, 3
    penalties = jnp.array([[0.1, 0.1, 0.9],
                           [0.1, 0.8, 0.1],
                           [0.7, 0.9, 0.1],
                           [0.1, 0.1, 0.1]])
    transitions = Transitions(
        observations=jnp.zeros((horizon, starts, 2)), actions=jnp.zeros((horizon, starts, 1)),
        rewards=jnp.ones((horizon, starts)), next_observations=jnp.zeros((horizon, starts, 2)),
        terminals=jnp.zeros((horizon, starts)).at[1, 1].set(1.0), penalties=penalties)
    valid = jnp.ones((horizon, starts), bool).at[3, 0].set(False)
    out, kept = morel.halt_unknown(transitions, valid, threshold=0.5, truncate_reward=-100.0)
    np.testing.assert_array_equal(kept, [[1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0]])
    # A halt truncates (official mjrl bootstraps through it): the halting transitions stay
    # non-terminal; a termination (rollout 1 falls where it halts) is kept as it was.
    np.testing.assert_array_equal(out.terminals, [[0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(out.rewards, [[1, 1, -99], [1, -99, 1], [-99, 1, 1],
                                                [1, 1, 1]])
    # One halt per rollout among 6 kept transitions.
    halt_rate, halted_rollouts = morel.halt_statistics(out, kept, 0.5, starts)
    assert (float(halt_rate), float(halted_rollouts)) == pytest.approx((0.5, 1.0))


def test_halt_rate_on_a_hand_made_ensemble():
    """Members agree on s[0], which grows by 1 a step from 0, and disagree on the other dims in
    proportion to swish(s[0]): with the threshold between the disagreements at s[0] = 1 and
    s[0] = 2, every rollout halts at its third transition (1 of 3 kept transitions halted),
    which stays non-terminal with the truncate reward, whatever the policy does."""
    obs_dim, act_dim, members, horizon = HOPPER.obs_dim, HOPPER.act_dim, 3, 5
    bias = np.zeros((members, obs_dim + 1), np.float32)
    bias[:, 0] = 1.0            # s[0] grows by one a step in every member
    bias[:, obs_dim] = 0.5      # reward 0.5 a step
    gain = np.zeros_like(bias)
    gain[:, 1] = [0.0, 1.0, 3.0]  # disagreement 3 swish(s[0]) (members 0 and 2)
    ensemble = hand_made_ensemble(obs_dim, act_dim, bias, gain, elites=[0, 1, 2])
    starts = 40
    zeros = np.zeros(starts, np.float32)
    data = Dataset.from_arrays(
        observations=np.zeros((starts, obs_dim), np.float32),
        actions=np.zeros((starts, act_dim), np.float32), rewards=zeros,
        next_observations=np.zeros((starts, obs_dim), np.float32), terminals=zeros,
        timeouts=zeros)
    config = morel.ALGORITHM.make_config(overrides={
        "agent.hidden_dims": (16,), "rollouts.batch_size": starts, "rollouts.horizon": horizon,
        "rollouts.chunk_size": 0, "batch_size": 8, "truncate_reward": -10.0})
    spec = dataclasses.replace(HOPPER, termination_fn=lambda o: jnp.zeros(o.shape[:-1], bool))
    algorithm = morel.ALGORITHM.make(config, spec)
    state = morel.MOReLState(
        jax.jit(algorithm.agent.init)(jax.random.PRNGKey(0)), ensemble, algorithm.rollouts.init(),
        jnp.float32(3 * (swish(1.0) + swish(2.0)) / 2), jnp.float32(-10.0), jnp.float32(0.0),
        jnp.float32(0.0))
    refreshed = jax.jit(algorithm.refresh)(state, data, jax.random.PRNGKey(1))
    _, metrics = jax.jit(algorithm.update)(refreshed, data, jax.random.PRNGKey(2))
    assert float(metrics["halt_rate"]) == pytest.approx(1 / 3)
    assert float(metrics["halted_rollouts"]) == pytest.approx(1.0)
    assert float(metrics["rollout_length"]) == pytest.approx(3.0)
    mean_disagreement = 3 * (swish(0.0) + swish(1.0) + swish(2.0)) / 3
    assert float(metrics["disagreement_over_threshold"]) == pytest.approx(
        mean_disagreement / float(state.threshold), rel=1e-4)
    buffer = refreshed.rollouts.buffer
    stored = jax.tree_util.tree_map(lambda x: np.asarray(x[:int(buffer.size)]), buffer.data)
    halted = stored.observations[:, 0] > 1.5
    assert halted.sum() == starts
    np.testing.assert_array_equal(stored.terminals, 0.0)
    np.testing.assert_allclose(stored.rewards[halted], 0.5 - 10.0, rtol=1e-5)
    np.testing.assert_allclose(stored.rewards[~halted], 0.5, rtol=1e-5)


def test_morel_disagreement_compares_next_states_only():
    # Three members, two output dims of next state and one reward (the last output).
    mean = jnp.array([[0.0, 0.0, 5.0], [3.0, 4.0, -5.0], [0.0, 0.0, 0.0]])
    disagreement = uncertainty_penalties(mean, jnp.zeros_like(mean))
    assert float(disagreement["pairwise_max_state"]) == pytest.approx(5.0)  # |(3, 4)|
    assert float(disagreement["pairwise_max"]) == pytest.approx(float(np.hypot(5.0, 10.0)))
    assert morel.DISAGREEMENT == "pairwise_max_state"


def test_morel_threshold_is_the_max_over_all_data_over_the_pessimism_coef(bandit):
    data, _ = bandit
    states = {}
    for coef, chunk in ((1.0, 300), (3.0, 10_000)):  # 300 does not divide the 2000 rows
        config = morel.ALGORITHM.make_config(overrides={
            **SMALL, "dynamics.max_epochs": 5, "pessimism_coef": coef,
            "threshold_chunk": chunk, "truncate_reward": -7.0})
        algorithm = morel.ALGORITHM.make(config, BANDIT_SPEC)
        states[coef] = jax.jit(algorithm.init)(jax.random.PRNGKey(0), data)
    mean, logvar = predict(states[1.0].model, data.observations, data.actions)
    disagreement = uncertainty_penalties(mean, logvar)["pairwise_max_state"]
    assert float(states[1.0].threshold) == pytest.approx(float(disagreement.max()), rel=1e-5)
    assert float(states[3.0].threshold) == pytest.approx(float(states[1.0].threshold) / 3,
                                                         rel=1e-5)
    assert float(states[1.0].truncate_reward) == -7.0
    assert morel.MOReLConfig().pessimism_coef == 3.0 and morel.MOReLConfig().truncate_reward == 0


def test_morel_rollouts_beyond_the_threshold_halt_with_the_penalty(bandit):
    data, _ = bandit
    config = morel.ALGORITHM.make_config(overrides={**SMALL, "dynamics.max_epochs": 5,
                                                    "rollouts.horizon": 3,
                                                    "truncate_reward": -100.0})
    # No termination: rollouts end only by halting (or at the horizon).
    spec = dataclasses.replace(BANDIT_SPEC,
                               termination_fn=lambda o: jnp.zeros(o.shape[:-1], bool))
    algorithm = morel.ALGORITHM.make(config, spec)
    state = jax.jit(algorithm.init)(jax.random.PRNGKey(0), data)
    # With the threshold at the data's median disagreement, the policy's rollouts halt often.
    state = state.replace(threshold=jnp.quantile(
        uncertainty_penalties(*predict(state.model, data.observations,
                                       data.actions))["pairwise_max_state"], 0.5))
    refreshed = jax.jit(algorithm.refresh)(state, data, jax.random.PRNGKey(1))
    buffer = refreshed.rollouts.buffer
    size = int(buffer.size)
    stored = jax.tree_util.tree_map(lambda x: np.asarray(x[:size]), buffer.data)
    halted = stored.penalties > float(state.threshold)
    assert halted.any() and (~halted).any()
    np.testing.assert_array_equal(stored.terminals[halted], 0.0)
    # Halting steps keep the model's reward (about -4 to 0 here) plus the truncate reward.
    assert (stored.rewards[halted] < -90).all() and (stored.rewards[halted] > -110).all()
    assert (stored.rewards[~halted] > -20).all()
    # Rollouts are cut at their halt: fewer than starts x horizon rows were stored.
    assert size < config.rollouts.batch_size * config.rollouts.horizon
    assert float(refreshed.halt_rate) == pytest.approx(halted.sum() / size)
    assert float(refreshed.halted_rollouts) == pytest.approx(
        halted.sum() / config.rollouts.batch_size)


def test_rambo_adversarial_step_lowers_model_values_within_likelihood_bound(bandit):
    data, _ = bandit
    config = rambo.ALGORITHM.make_config(overrides={
        **SMALL, "bc_pretrain_steps": 200, "adversary_steps": 100, "model_lr": 1e-3,
        "adversary_batch_size": 256})
    algorithm = rambo.ALGORITHM.make(config, BANDIT_SPEC)
    state = jax.jit(algorithm.init)(jax.random.PRNGKey(0), data)
    obs = data.observations[:1000]
    actions = algorithm.act(state, obs, None, True)

    def model_value(s):
        mean, _ = predict(s.model, obs, actions)
        reward = mean[s.model.elite_indices][..., -1].mean(0)
        return float(reward.mean())  # one-step task: the value of a prediction is its reward

    def real_nll(s):
        mean, logvar = predict(s.model, data.observations, data.actions)
        target = jnp.concatenate([data.next_observations - data.observations,
                                  data.rewards[:, None]], -1)
        return float(jnp.mean((mean - target) ** 2 * jnp.exp(-logvar) + logvar))

    trained = state.replace(agent=state.agent.replace(step=jnp.asarray(1, jnp.int32)))
    steps = jax.jit(algorithm.adversarial_model_steps)
    after, metrics = steps(trained.replace(adversary_weight=jnp.asarray(1.0)), data,
                           jax.random.PRNGKey(1))
    # The same steps with a negligible adversary: only the supervised fit moves the model.
    neutral, _ = steps(trained.replace(adversary_weight=jnp.asarray(1e-9)), data,
                       jax.random.PRNGKey(1))
    assert bool(metrics["adversary_active"])
    assert model_value(after) < model_value(neutral) - 0.05, (model_value(after),
                                                              model_value(neutral))
    assert real_nll(after) < real_nll(state) + 1.0  # still fits the real data
    # Off: with adversary weight 0 (the official walker2d settings) and before the agent's
    # first update (untrained critics), the model stays exactly as fitted.
    for off in (trained.replace(adversary_weight=jnp.asarray(0.0)),
                state.replace(adversary_weight=jnp.asarray(0.3))):
        kept, metrics = steps(off, data, jax.random.PRNGKey(1))
        assert not bool(metrics["adversary_active"])
        for a, b in zip(jax.tree_util.tree_leaves(kept.model.params),
                        jax.tree_util.tree_leaves(state.model.params), strict=True):
            np.testing.assert_array_equal(a, b)


def test_rambo_adversary_states_advance_through_the_model_for_the_horizon(bandit):
    data, _ = bandit
    config = rambo.ALGORITHM.make_config(overrides={
        **SMALL, "dynamics.max_epochs": 2, "bc_pretrain_steps": 10, "adversary_steps": 7,
        "rollouts.horizon": 3})
    never = dataclasses.replace(BANDIT_SPEC,
                                termination_fn=lambda o: jnp.zeros(o.shape[:-1], bool))
    for spec, expected in ((never, [1, 0, 0, 1, 0, 0, 1]), (BANDIT_SPEC, [1] * 7)):
        algorithm = rambo.ALGORITHM.make(config, spec)
        state = jax.jit(algorithm.init)(jax.random.PRNGKey(0), data)
        _, metrics = jax.jit(algorithm.adversarial_model_steps)(state, data,
                                                                jax.random.PRNGKey(1))
        # Fresh dataset states every `horizon` steps, and wherever a rollout ended (the
        # one-step bandit ends every step).
        np.testing.assert_array_equal(metrics["restarted_fraction"], expected)


def test_rambo_adversary_terms_known_answers():
    from offrl_jax.models import init_ensemble
    from offrl_jax.models.ensemble import EnsembleConfig, training_loss

    # The elite mixture's log-density: log(0.5 N(x; m1, v1) + 0.5 N(x; m2, v2)).
    ensemble = init_ensemble(jax.random.PRNGKey(0), 1, 1, EnsembleConfig(
        num_members=3, num_elites=2, hidden_sizes=(8,), weight_decays=(1e-3, 2e-3)))
    ensemble = ensemble.replace(elite_indices=jnp.array([2, 0]))
    mean = jnp.array([[[0.0, 1.0]], [[9.0, 9.0]], [[1.0, -1.0]]])        # (M, B=1, D=2)
    logvar = jnp.log(jnp.array([[[1.0, 4.0]], [[1.0, 1.0]], [[0.25, 1.0]]]))
    x = jnp.array([[0.5, 0.0]])
    normal = lambda v, m, var: np.exp(-(v - m) ** 2 / (2 * var)) / np.sqrt(2 * np.pi * var)  # noqa
    density = 0.5 * (normal(0.5, 0.0, 1.0) * normal(0.0, 1.0, 4.0)
                     + normal(0.5, 1.0, 0.25) * normal(0.0, -1.0, 1.0))
    np.testing.assert_allclose(rambo.elite_mixture_log_prob(ensemble, mean, logvar, x),
                               [np.log(density)], rtol=1e-5)
    # The supervised term is the ensemble's training loss summed over members: NLL, bounds
    # and weight decay of each member, as training minimises it.
    rng = np.random.default_rng(0)
    obs, act, rew, nxt = (jnp.asarray(rng.normal(size=shape), jnp.float32)
                          for shape in ((5, 1), (5, 1), (5,), (5, 1)))
    out_mean, out_logvar = predict(ensemble, obs, act)
    y = jnp.concatenate([nxt - obs, rew[:, None]], -1)
    expected = 0.0
    for m in range(3):
        p = jax.tree_util.tree_map(lambda leaf, m=m: leaf[m], ensemble.params)["params"]
        expected += (jnp.mean((out_mean[m] - y) ** 2 * jnp.exp(-out_logvar[m]))
                     + jnp.mean(out_logvar[m])
                     + 0.01 * (p["max_logvar"].sum() - p["min_logvar"].sum())
                     + 0.5 * 1e-3 * jnp.sum(p["hidden_0"]["kernel"] ** 2)
                     + 0.5 * 2e-3 * jnp.sum(p["output"]["kernel"] ** 2))
    np.testing.assert_allclose(training_loss(ensemble, obs, act, rew, nxt), expected,
                               rtol=1e-5)


def test_rambo_agent_sees_normalised_states_and_pretrains_for_50_epochs(bandit):
    data, _ = bandit
    config = rambo.ALGORITHM.make_config(overrides={**SMALL, "dynamics.max_epochs": 2,
                                                    "bc_pretrain_steps": 10})
    assert rambo.RAMBOConfig().bc_steps(1_000_000) == -(-50 * 1_000_000 // 256)  # 195 313
    algorithm = rambo.ALGORITHM.make(config, BANDIT_SPEC)
    state = jax.jit(algorithm.init)(jax.random.PRNGKey(0), data)
    np.testing.assert_allclose(state.obs_mean, data.observations.mean(0), atol=1e-5)
    np.testing.assert_allclose(state.obs_std, data.observations.std(0), rtol=1e-4)
    obs = data.observations[:4] * 3.0 + 1.0
    np.testing.assert_allclose(
        algorithm.act(state, obs, None, True),
        algorithm.agent.act(state.agent, (obs - state.obs_mean) / state.obs_std, None, True),
        rtol=1e-6)


@pytest.mark.parametrize("module", [morel, rambo])
def test_learning_beats_bc_on_a_suboptimal_dataset(module):
    data, w = bandit_dataset()  # broad: the model learns the reward over all actions
    # A model that fits the reward well enough to be exploited profitably (real_ratio stays at
    # the papers' values: 0 for MOReL, 0.5 for RAMBO).
    overrides = {**SMALL, "dynamics.max_epochs": 300, "dynamics.hidden_dims": (128, 128)}
    if module is rambo:
        overrides.update(bc_pretrain_steps=500, adversary_steps=20)
    config = module.ALGORITHM.make_config(overrides=overrides)
    init, interval = compiled_program(module.ALGORITHM, config, BANDIT_SPEC, data, 1,
                                      EVAL_EVERY)
    keys = jnp.stack([jax.random.PRNGKey(0)])
    states, _, failed = train_rows(interval, init(keys, data), data, keys, INTERVALS)
    assert not failed.any()
    final = jax.tree_util.tree_map(lambda x: x[0], states[-1])
    cloner = bc.BC(bc.BCConfig(hidden_dims=(64, 64), batch_size=128), BANDIT_SPEC)
    bc_state = cloner.init(jax.random.PRNGKey(0))
    step = jax.jit(cloner.update)
    for i in range(EVAL_EVERY * INTERVALS):
        bc_state, _ = step(bc_state, data, jax.random.PRNGKey(i))
    algorithm = module.ALGORITHM.make(config, BANDIT_SPEC)
    assert regret(algorithm.act, final, w) < 0.7 * regret(cloner.act, bc_state, w)
