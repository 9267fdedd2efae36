"""MOBILE: the model-Bellman inconsistency against known answers, the penalty only where members
disagree, learning beyond BC, falling losses, a penalty that grows off the data, a beta sweep as
one program, vmapped seeds independent of each other, MOPO's shared model, the task table and
the runner's profiles, and a tiny run through the runner.

Compilation dominates on a CPU, so the learning tests share one compiled program (2 seeds
vmapped) and its run.
"""

from __future__ import annotations

import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bandit import BANDIT_SPEC, bandit_dataset, compiled_program, regret, train_rows
from hand_made import hand_made_ensemble, predicted

from offrl_jax.algorithms import bc, mobile, mopo
from offrl_jax.data import load_task_dataset, write_d4rl_hdf5
from offrl_jax.models.buffer import Transitions
from offrl_jax.models.store import ModelStore
from offrl_jax.tasks import get_env_spec, parse_task_argument
from offrl_jax.training import Trainer, plan, profiles, runner

HOPPER = get_env_spec("hopper")
OBS, ACT = HOPPER.obs_dim, HOPPER.act_dim

# test_mopo_combo's SMALL with a one-layer model, one-step rollouts in one chunk (every bandit
# rollout ends after its first step), all cheaper to compile, and no floor on the TD targets (the
# bandit's rewards are negative).
SMALL = {"dynamics.members": 3, "dynamics.elites": 2, "dynamics.hidden_dims": (64,),
         "dynamics.batch_size": 128, "dynamics.lr": 3e-3, "dynamics.max_epochs": 200,
         "dynamics.patience": 1000, "rollouts.batch_size": 200, "rollouts.horizon": 1,
         "rollouts.retain": 5, "rollouts.refresh_every": 50, "rollouts.chunk_size": 0,
         "agent.hidden_dims": (64, 64), "batch_size": 128, "agent.actor_lr": 1e-3,
         "agent.alpha_lr": 3e-3, "min_target": None}
EVAL_EVERY, INTERVALS = 100, 10
SEEDS = (0, 1)


def row(tree, i):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def broadcast_row(state, i, rows):
    return jax.tree_util.tree_map(lambda x: jnp.stack([x[i]] * rows), state)


CLONER = bc.BC(bc.BCConfig(hidden_dims=(64, 64), batch_size=128), HOPPER)


@jax.jit
def _bc_state(data, key):
    keys = jax.random.split(key, EVAL_EVERY * INTERVALS)
    return jax.lax.scan(lambda s, k: CLONER.update(s, data, k), CLONER.init(key, data), keys)[0]


def bc_regret(data, w):
    """BC's regret after as many updates as the MOBILE run: the baseline to beat."""
    return regret(CLONER.act, _bc_state(data, jax.random.PRNGKey(0)), w)


@pytest.fixture(scope="module")
def broad():
    return bandit_dataset(narrow=False)


@pytest.fixture(scope="module")
def mobile_run(broad):
    """MOBILE (beta = 1) on the broad data, 2 seeds vmapped in one program."""
    data, _ = broad
    config = mobile.ALGORITHM.make_config(overrides=SMALL)
    init, interval = compiled_program(mobile.ALGORITHM, config, BANDIT_SPEC, data, len(SEEDS),
                                      EVAL_EVERY)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in SEEDS])
    initial = init(keys, data)
    states, metrics, failed = train_rows(interval, initial, data, keys, INTERVALS)
    assert not failed.any()
    return {"interval": interval, "keys": keys, "initial": initial, "states": states,
            "metrics": metrics, "algorithm": mobile.ALGORITHM.make(config, BANDIT_SPEC)}


# --- the penalty: known answers ---------------------------------------------------------------

def test_inconsistency_is_the_std_across_members_of_their_mean_targets():
    targets = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)  # (K, M, B)
    u = mobile.model_bellman_inconsistency(jnp.asarray(targets))
    chex.assert_shape(u, (5,))
    np.testing.assert_allclose(u, np.std(targets.mean(0), axis=0, ddof=1), rtol=1e-5)
    # Members that agree on average have no inconsistency, whatever each sample says.
    agreeing = targets - targets.mean(0, keepdims=True) + targets.mean((0, 1))
    np.testing.assert_allclose(mobile.model_bellman_inconsistency(jnp.asarray(agreeing)), 0.0,
                               atol=1e-6)
    # One member: no disagreement to measure (not NaN).
    np.testing.assert_array_equal(mobile.model_bellman_inconsistency(jnp.ones((3, 1, 5))), 0.0)


def _hand_made_ensemble(bias, gain, elites):
    return hand_made_ensemble(OBS, ACT, bias, gain, elites)


def test_bellman_targets_and_inconsistency_on_known_members_and_value():
    """Members predict known next states and rewards, V(s') = |s'|^2 is known: the targets are
    r_i + gamma V(s'_i) for every elite (in elite order, never the non-elite member 1, which
    predicts nonsense), and u is their std across elites."""
    rng = np.random.default_rng(1)
    bias = rng.normal(size=(4, OBS + 1)).astype(np.float32)
    bias[1] = 1e3
    gain = np.zeros_like(bias)
    elites = [3, 0, 2]
    obs = rng.normal(size=(6, OBS)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(6, ACT)).astype(np.float32)
    value = lambda key, s: jnp.sum(s ** 2, axis=-1)  # noqa: E731
    gamma, samples = 0.9, 3

    ensemble = _hand_made_ensemble(bias, gain, elites)
    targets = mobile.bellman_targets(ensemble, jax.random.PRNGKey(2), obs, act, value, gamma,
                                     samples)
    chex.assert_shape(targets, (samples, len(elites), 6))
    next_obs, rewards = predicted(bias[elites], gain[elites], obs)
    expected = rewards + gamma * np.sum(next_obs ** 2, axis=-1)  # (elites, B)
    np.testing.assert_allclose(targets, np.broadcast_to(expected, targets.shape), rtol=1e-5)
    np.testing.assert_allclose(mobile.model_bellman_inconsistency(targets),
                               np.std(expected, axis=0, ddof=1), rtol=1e-4)
    # The official code's quantity: the std of V(s') alone.
    values = mobile.bellman_targets(ensemble, jax.random.PRNGKey(2), obs, act, value, gamma,
                                    samples, with_reward=False)
    np.testing.assert_allclose(mobile.model_bellman_inconsistency(values),
                               np.std(np.sum(next_obs ** 2, axis=-1), axis=0, ddof=1),
                               rtol=1e-4)
    # Elites that agree: no penalty, whatever the non-elite member says.
    agreeing = _hand_made_ensemble(np.stack([bias[0]] + [bias[1]] + [bias[0]] * 2), gain,
                                   elites)
    u = mobile.model_bellman_inconsistency(mobile.bellman_targets(
        agreeing, jax.random.PRNGKey(2), obs, act, value, gamma, samples))
    np.testing.assert_allclose(u, 0.0, atol=1e-4)


def _action_blind(agent):
    """``agent`` with target critics that ignore the action, so V(s') does not depend on the
    policy's sampled actions."""
    blind = jax.tree_util.tree_map(lambda p: p, agent.target_critic_params)
    dense = blind["params"]["VmapMLP_0"]["Dense_0"]
    dense["kernel"] = dense["kernel"].at[:, OBS:, :].set(0.0)
    return agent.replace(target_critic_params=blind)


def test_penalty_lowers_model_rewards_only_where_members_disagree():
    """Through the algorithm: members agree where s[0] = 0 and disagree elsewhere; V(s') is the
    agent's target critics at a policy action, made blind to the action so that it is known:
    the reward gap is beta times the std across elites of min_j Q'_j(s'_i) (the default, the
    official code's), or of r_i + gamma min_j Q'_j(s'_i) with ``penalty_target="bellman"``."""
    rng = np.random.default_rng(2)
    bias = np.tile(rng.normal(size=(1, OBS + 1)).astype(np.float32), (3, 1))
    gain = rng.normal(size=(3, OBS + 1)).astype(np.float32)
    ensemble = _hand_made_ensemble(bias, gain, elites=[0, 1, 2])

    config = mobile.ALGORITHM.make_config(overrides={"agent.hidden_dims": (16,),
                                                     "num_samples": 2})
    algorithm = mobile.ALGORITHM.make(config, HOPPER)
    agent = _action_blind(jax.jit(algorithm.agent.init)(jax.random.PRNGKey(0)))
    blind = agent.target_critic_params
    state = mobile.MOBILEState(agent, ensemble, algorithm.rollouts.init(), jnp.float32(2.5))

    obs = rng.normal(size=(8, OBS)).astype(np.float32)
    obs[:4, 0] = 0.0
    act = rng.uniform(-1, 1, size=(8, ACT)).astype(np.float32)
    rows = Transitions(obs, act, jnp.asarray(rng.normal(size=8), jnp.float32), obs,
                       jnp.zeros(8))
    u = jax.jit(algorithm.inconsistency)(state, obs, act, jax.random.PRNGKey(1))
    penalised = mobile.MOBILE.penalized(rows, u, state.penalty_coef)
    gap = np.asarray(rows.rewards - penalised.rewards)
    np.testing.assert_allclose(gap[:4], 0.0, atol=1e-4)
    assert (gap[4:] > 1e-2).all(), gap

    # The default (the official code's): the std across elites of min_j Q'_j(s'_i) alone.
    next_obs, rewards = predicted(bias, gain, obs)
    q = jax.jit(algorithm.agent.q)(blind, next_obs, np.zeros(next_obs.shape[:-1] + (ACT,)))
    values = np.asarray(q.min(0))
    np.testing.assert_allclose(gap, 2.5 * np.std(values, axis=0, ddof=1), rtol=1e-3,
                               atol=1e-4)
    # "bellman": the std of r_i + gamma min_j Q'_j(s'_i).
    bellman = mobile.ALGORITHM.make(dataclasses.replace(config, penalty_target="bellman"),
                                    HOPPER)
    u = jax.jit(bellman.inconsistency)(state, obs, act, jax.random.PRNGKey(1))
    np.testing.assert_allclose(u, np.std(rewards + config.agent.gamma * values, axis=0, ddof=1),
                               rtol=1e-3, atol=1e-4)


def test_default_penalty_ignores_reward_disagreement():
    """The official penalty (the default): members that predict the same next states but
    different rewards give u = 0; the "bellman" variant's u is the std of their rewards (V(s')
    made blind to the action, so that the same s' gives the same value)."""
    rng = np.random.default_rng(3)
    bias = np.tile(rng.normal(size=(1, OBS + 1)).astype(np.float32), (3, 1))
    bias[:, OBS] = [-1.0, 0.0, 2.0]  # the reward output only
    ensemble = _hand_made_ensemble(bias, np.zeros_like(bias), elites=[0, 1, 2])
    assert mobile.MOBILEConfig().penalty_target == "next_value"
    obs = rng.normal(size=(5, OBS)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(5, ACT)).astype(np.float32)
    u = {}
    for target in mobile.PENALTY_TARGETS:
        config = mobile.ALGORITHM.make_config(overrides={"agent.hidden_dims": (16,),
                                                         "num_samples": 2,
                                                         "penalty_target": target})
        algorithm = mobile.ALGORITHM.make(config, HOPPER)
        agent = _action_blind(jax.jit(algorithm.agent.init)(jax.random.PRNGKey(0)))
        state = mobile.MOBILEState(agent, ensemble, algorithm.rollouts.init(), jnp.float32(1.0))
        u[target] = np.asarray(jax.jit(algorithm.inconsistency)(state, obs, act,
                                                                jax.random.PRNGKey(1)))
    np.testing.assert_allclose(u["next_value"], 0.0, atol=1e-5)
    np.testing.assert_allclose(u["bellman"], np.std([-1.0, 0.0, 2.0], ddof=1), rtol=1e-4)


# --- learning ---------------------------------------------------------------------------------

def test_mobile_beats_bc_on_a_suboptimal_dataset(mobile_run, broad):
    data, w = broad
    final = mobile_run["states"][-1]
    regrets = [regret(mobile_run["algorithm"].act, row(final, i), w) for i in range(len(SEEDS))]
    baseline = bc_regret(data, w)
    assert max(regrets) < 0.5 * baseline, (regrets, baseline)


def test_losses_fall_and_the_learned_penalty_grows_off_the_data(mobile_run, broad):
    data, _ = broad
    metrics = mobile_run["metrics"]
    first, last = metrics[0]["critic_loss"], metrics[-1]["critic_loss"]
    assert (last < 0.5 * first).all(), (first, last)
    assert (metrics[-1]["alpha"] < metrics[0]["alpha"]).all()
    assert all(np.isfinite(m["model_inconsistency"]).all() for m in metrics)
    # With the trained model and agent, u is several times larger in states the data never
    # visits than in its own (s, a). Every bandit step is terminal, so only the members'
    # reward disagreement says anything here: the "bellman" variant's u, which counts it (the
    # default's V(s') alone reads the critics off the data).
    algorithm, state = mobile_run["algorithm"], row(mobile_run["states"][-1], 0)
    algorithm = mobile.ALGORITHM.make(
        dataclasses.replace(algorithm.config, penalty_target="bellman"), BANDIT_SPEC)
    u = jax.jit(algorithm.inconsistency)
    seen = u(state, data.observations, data.actions, jax.random.PRNGKey(0))
    unseen = u(state, 4.0 * data.observations, data.actions, jax.random.PRNGKey(0))
    assert float(unseen.mean()) > 3 * float(seen.mean()), (unseen.mean(), seen.mean())


def test_penalty_coefficient_sweep_lowers_values_in_one_program(mobile_run, broad):
    """beta is a state leaf: the seeds run's compiled program trains a sweep as is. From the
    same start and key, the rows differ only through beta; the larger one learns lower values
    (beta 16: on the bandit, whose steps all end, the default penalty's u, read off the critics
    at the members' next states, is small)."""
    data, _ = broad
    betas = [0.0, 16.0]
    start = broadcast_row(mobile_run["initial"], 0, len(betas))
    keys = jnp.stack([mobile_run["keys"][0]] * len(betas))
    states, metrics, _ = train_rows(mobile_run["interval"], start, data, keys, 2,
                                    penalty_coef=betas)
    np.testing.assert_array_equal(np.asarray(states[-1].penalty_coef), betas)
    q_mean = metrics[-1]["q_mean"]
    assert q_mean[1] < q_mean[0] - 0.1, q_mean


def test_each_vmapped_seed_depends_only_on_its_own_key(mobile_run, broad):
    """A seed's row of the 2-seed program is bit-identical when the other row is replaced by a
    copy of it: nothing flows between seeds over 200 updates, 4 model refreshes and the
    per-update penalty. The comparison is with the same compiled program, not a 1-seed one: two
    compilations round differently and the difference grows over training (see test_mopo_combo's
    test of the same name)."""
    data, _ = broad
    together = mobile_run["states"][1]
    for i in range(len(SEEDS)):
        copies = broadcast_row(mobile_run["initial"], i, len(SEEDS))
        keys = jnp.stack([mobile_run["keys"][i]] * len(SEEDS))
        alone = train_rows(mobile_run["interval"], copies, data, keys, 2)[0][-1]
        for j in range(len(SEEDS)):
            jax.tree_util.tree_map(
                lambda a, b, i=i, j=j: np.testing.assert_array_equal(a[i], b[j]),
                (together.agent, together.model, together.rollouts),
                (alone.agent, alone.model, alone.rollouts))
    params = jax.tree_util.tree_leaves(together.agent.actor_params)[0]
    assert np.max(np.abs(params[0] - params[1])) > 1e-2


# --- configuration, the shared model and the runner -------------------------------------------

def test_task_settings_and_profiles_share_mopos_model():
    config = mobile.ALGORITHM.make_config("hopper-medium")
    assert (config.rollouts.horizon, config.penalty_coef) == (5, 1.5)
    assert mobile.ALGORITHM.make_config("walker2d-medium-replay").rollouts.horizon == 1
    assert mobile.ALGORITHM.make_config("halfcheetah-medium-expert").real_ratio == 0.5
    assert mobile.ALGORITHM.make_config("hopper-medium").real_ratio == 0.05
    # The official hopper-medium and -replay configs fix alpha at 0.2; the others learn it.
    for task in ("hopper-medium", "hopper-medium-replay"):
        agent = mobile.ALGORITHM.make_config(task).agent
        assert (agent.init_alpha, agent.alpha_lr) == (0.2, 0.0), task
    agent = mobile.ALGORITHM.make_config("hopper-medium-expert").agent
    assert (agent.init_alpha, agent.alpha_lr) == (1.0, 1e-4)
    defaults = mobile.MOBILEConfig()
    assert defaults.agent.num_qs == 2 and defaults.num_samples == 10
    with pytest.raises(ValueError, match="penalty_target"):
        mobile.MOBILEConfig(penalty_target="nonsense")
    # The runner's "*" model settings reach MOBILE, and its model is MOPO's in every profile.
    for profile in profiles.RUN_PROFILES.values():
        made = {}
        for registration in (mobile.ALGORITHM, mopo.ALGORITHM):
            overrides = plan.config_overrides(registration, profile,
                                               profile.train_for(registration.name), {})
            made[registration.name] = registration.make(
                registration.make_config("hopper-medium", overrides), HOPPER)
        assert made["mobile"].config.dynamics == made["mopo"].config.dynamics, profile.name
        assert made["mobile"].pretrain_id == made["mopo"].pretrain_id, profile.name
    quick = plan.config_overrides(mobile.ALGORITHM, profiles.RUN_PROFILES["quick"],
                                   profiles.RUN_PROFILES["quick"].train, {})
    assert quick["dynamics.members"] == 5 and quick["rollouts.batch_size"] == 5_000
    other = mobile.ALGORITHM.make_config(overrides={"dynamics.members": 6})
    assert (mobile.ALGORITHM.make(other, HOPPER).pretrain_id
            != mopo.ALGORITHM.make(mopo.MOPOConfig(), HOPPER).pretrain_id)


def test_tiny_run_through_the_runner_stores_a_model_mopo_reuses(toy_hopper_dataset, tmp_path):
    write_d4rl_hdf5(tmp_path / "toy.hdf5", toy_hopper_dataset)
    task = parse_task_argument(f"mobile-toy=hopper:{tmp_path / 'toy.hdf5'}")
    seeds = [0, 1]
    two_elites = {"*": {"dynamics.elites": 2}}  # the tiny profile's 1 elite has no spread
    rows = runner.run_benchmark(
        ["mobile"], [task.name], seeds, "tiny", tmp_path / "run", overrides=two_elites,
        progress=False, schedule={"num_updates": 50, "eval_every": 50, "eval_episodes": 1})
    row = next(r for r in rows if r["task"] == task.name)
    assert (row["algorithm"], row["seeds"], row["failed_seeds"]) == ("mobile", 2, 0)
    records = [json.loads(line) for line in
               (tmp_path / "run" / "records" / "mobile__mobile-toy.jsonl").read_text()
               .splitlines()]
    assert sorted(r["seed"] for r in records) == seeds
    for record in records:
        assert record["step"] == 50 and np.isfinite(record["normalized_score"])
        assert record["metrics"]["model_inconsistency"] > 0
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["models"]["mobile/mobile-toy"]["fitted"] == seeds
    # MOPO with the same settings finds MOBILE's models in the store and fits nothing.
    profile = profiles.RUN_PROFILES["tiny"]
    config = mopo.ALGORITHM.make_config(task.name, plan.config_overrides(
        mopo.ALGORITHM, profile, profile.train, two_elites))
    report = Trainer(mopo.ALGORITHM, config, load_task_dataset(task), task.spec, seeds,
                     profile.train, model_store=ModelStore(tmp_path / "run" / "models"),
                     log=None).prepare_models()
    assert report["reused"] == seeds and report["fitted"] == []
