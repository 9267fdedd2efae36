"""TD3+BC and ReBRAC: known answers (TD3+BC's normalised lambda, ReBRAC's critic target and
actor loss, clipped target policy smoothing), delayed actor updates under jit and vmap, the
dataset's next actions, the defaults and per-dataset table, losses that fall, learning beyond BC
on the bandit, vmapped seeds against copies and one-by-one runs, and a tiny run through the
runner.

Compilation dominates on a CPU, so each algorithm trains once on the bandit (2 seeds vmapped,
one compiled interval program of 10 updates, run 150 times) and its tests share that run.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bandit import BANDIT_SPEC, HOPPER, bandit_dataset, compiled_program, regret, train_rows

from offrl_jax.algorithms import rebrac, td3bc
from offrl_jax.algorithms.registry import get_algorithm
from offrl_jax.data import sample_batch
from offrl_jax.parts import td3
from offrl_jax.training.loop import make_interval_fn, read_checkpoint

EVAL_EVERY, INTERVALS = 10, 150
SEEDS = (0, 1)
SMALL = {"td3.hidden_dims": (64, 64), "batch_size": 128}


def row(tree, i):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def broadcast_row(tree, i, rows):
    return jax.tree_util.tree_map(lambda x: jnp.stack([x[i]] * rows), tree)


def max_abs_difference(a, b) -> float:
    """Over all leaves, in numpy (eager jnp would compile one small program per shape)."""
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b),
                               strict=True))


def assert_trees_equal(a, b):
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope="module")
def bandit():
    return bandit_dataset(narrow=False)


@pytest.fixture(scope="module", params=["td3bc", "rebrac"])
def run(request, bandit):
    """One algorithm on the broad bandit data with its default BC weights, 2 seeds vmapped."""
    data, _ = bandit
    registration = get_algorithm(request.param)
    config = registration.make_config(overrides=SMALL)
    init, interval = compiled_program(registration, config, BANDIT_SPEC, data, len(SEEDS),
                                      EVAL_EVERY)
    keys = jnp.stack([jax.random.PRNGKey(s) for s in SEEDS])
    initial = init(keys, data)
    states, metrics, failed = train_rows(interval, initial, data, keys, INTERVALS)
    assert not failed.any()
    return {"name": request.param, "config": config, "interval": interval, "keys": keys,
            "initial": initial, "states": states, "metrics": metrics,
            "algorithm": registration.make(config, BANDIT_SPEC)}


# --- known answers -------------------------------------------------------------------------------

def test_td3bc_lambda_and_actor_loss_known_answer():
    q = jnp.asarray([1.0, -3.0, 2.0, -2.0])  # mean |q| = 2, mean q = -0.5
    assert float(td3.normalized_lambda(q, 2.5)) == pytest.approx(1.25)
    # lambda is a constant for the gradient: d(lambda * mean q)/dq = lambda / 4 everywhere.
    grad = jax.grad(lambda q: td3.normalized_lambda(q, 2.5) * jnp.mean(q))(q)
    np.testing.assert_allclose(grad, np.full(4, 1.25 / 4), rtol=1e-6)
    policy = jnp.asarray([[0.5, 0.0], [0.0, 0.0], [0.0, -1.0], [0.2, 0.2]])
    data = jnp.asarray([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.2, 0.2]])
    # -1.25 * (-0.5) + mean of the 8 squared differences (0.25 + 1) / 8.
    loss, lam = td3bc.actor_loss(q, policy, data, 2.5)
    assert float(lam) == pytest.approx(1.25)
    assert float(loss) == pytest.approx(0.625 + 1.25 / 8, rel=1e-6)


def test_rebrac_critic_target_and_actor_loss_known_answer():
    rewards = jnp.asarray([1.0, 0.5, -1.0])
    terminals = jnp.asarray([0.0, 0.0, 1.0])
    next_q = jnp.asarray([10.0, -4.0, 7.0])
    next_actions = jnp.asarray([[0.5, -0.5], [1.0, 1.0], [0.0, 0.0]])
    data_next = jnp.asarray([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    has_next = jnp.asarray([1.0, 0.0, 1.0])
    target, penalty = rebrac.critic_target(rewards, terminals, next_q, next_actions, data_next,
                                           has_next, 0.9, 2.0)
    # Row 0: penalty 0.25 + 0.25, target 1 + 0.9 (10 - 2 x 0.5) = 9.1. Row 1: no next action in
    # the data, no penalty: 0.5 + 0.9 x (-4) = -3.1. Row 2: terminal, the reward alone.
    np.testing.assert_allclose(penalty, [0.5, 0.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(target, [9.1, -3.1, -1.0], rtol=1e-6)

    q = jnp.asarray([2.0, -6.0])  # mean |q| = 4: lambda = 1/4
    policy = jnp.asarray([[0.5, 0.5], [0.0, 0.0]])
    data = jnp.asarray([[0.0, 0.0], [0.0, -1.0]])  # squared distances, summed: 0.5 and 1
    loss, lam = rebrac.actor_loss(q, policy, data, 0.1, normalize_q=True)
    assert float(lam) == pytest.approx(0.25)
    assert float(loss) == pytest.approx(np.mean([0.1 * 0.5 - 0.5, 0.1 * 1.0 + 1.5]), rel=1e-6)
    loss, lam = rebrac.actor_loss(q, policy, data, 0.1, normalize_q=False)
    assert float(loss) == pytest.approx(np.mean([0.1 * 0.5 - 2.0, 0.1 * 1.0 + 6.0]), rel=1e-6)


def test_target_policy_smoothing_noise_is_clipped():
    noise = np.asarray(jax.jit(td3.smoothing_noise, static_argnums=(1, 2, 3))(
        jax.random.PRNGKey(0), (200_000,), 0.2, 0.5))
    assert np.abs(noise).max() == pytest.approx(0.5)
    # Exactly at the bound: P(|N(0, 0.2^2)| > 0.5) = P(|z| > 2.5) = 0.0124.
    assert np.mean(np.abs(noise) == 0.5) == pytest.approx(0.0124, abs=0.0015)
    assert np.std(noise[np.abs(noise) < 0.5]) == pytest.approx(0.2, rel=0.05)

    # Through the agent: sigma 5 >> clip 0.3, so most noise sits at +-0.3, and the noisy
    # action is clipped to the action box (clip 10: most actions end at +-1).
    @jax.jit
    def smoothed(key):
        obs = jax.random.normal(key, (2000, HOPPER.obs_dim))
        out = []
        for noise_clip in (0.3, 10.0):
            agent = td3.Agent(td3.Config(hidden_dims=(8,), policy_noise=5.0,
                                         noise_clip=noise_clip), HOPPER.obs_dim, HOPPER.act_dim)
            state = agent.init(jax.random.PRNGKey(1))
            out += [agent.act(state.target_actor_params, obs),
                    agent.target_action(state, obs, jax.random.PRNGKey(3))]
        return out

    base, actions, _, wide = map(np.asarray, smoothed(jax.random.PRNGKey(2)))
    inside = np.abs(base) < 0.7  # where base + noise cannot reach the box's edge
    assert inside.mean() > 0.5
    shift = (actions - base)[inside]
    assert np.abs(shift).max() <= 0.3 + 1e-6
    assert np.mean(np.abs(shift) > 0.3 - 1e-6) > 0.9
    assert np.abs(actions).max() <= 1.0
    assert np.abs(wide).max() == 1.0 and np.mean(np.abs(wide) == 1.0) > 0.5


def test_actor_and_targets_change_only_on_every_second_update(toy_hopper_dataset):
    """Two rows of one vmapped, jitted update, at steps 0 and 1: only the second steps the actor
    and soft-updates the targets; both step the critics. The delay is a select on the traced
    step, so rows at different steps share one program."""
    agent = td3.Agent(td3.Config(hidden_dims=(16,), tau=0.1), HOPPER.obs_dim, HOPPER.act_dim)
    batch = sample_batch(toy_hopper_dataset, jax.random.PRNGKey(0), 32)

    def update(state, key):
        target = batch.rewards + 0.99 * agent.target_q(
            state, batch.next_observations,
            agent.target_action(state, batch.next_observations, key))
        state, _ = agent.critic_step(state, batch.observations, batch.actions, target)

        def loss(params):
            actions = agent.act(params, batch.observations)
            return -jnp.mean(agent.q(state.critic_params, batch.observations, actions)[0]), {}

        return agent.delayed_actor_step(state, loss)

    start = jax.jit(lambda key: jax.tree_util.tree_map(
        lambda x: jnp.stack([x, x]), agent.init(key)).replace(
        step=jnp.asarray([0, 1], jnp.int32)))(jax.random.PRNGKey(1))
    after, metrics = jax.jit(jax.vmap(update, in_axes=(0, None)))(start, jax.random.PRNGKey(2))
    before, skipped, stepped = row(start, 0), row(after, 0), row(after, 1)
    np.testing.assert_array_equal(np.asarray(after.step), [1, 2])
    assert np.all(np.isfinite(np.asarray(metrics["actor_loss"])))
    for name in ("actor_params", "actor_opt", "target_actor_params", "target_critic_params"):
        assert_trees_equal(getattr(skipped, name), getattr(before, name))
    assert max_abs_difference(stepped.actor_params, before.actor_params) > 1e-4
    for state in (skipped, stepped):
        assert max_abs_difference(state.critic_params, before.critic_params) > 1e-4
    # Soft updates with tau = 0.1 from the new actor and the new critics.
    for target, online in (("target_actor_params", "actor_params"),
                           ("target_critic_params", "critic_params")):
        expected = jax.tree_util.tree_map(lambda new, old: 0.1 * np.asarray(new) + 0.9 *
                                          np.asarray(old), getattr(stepped, online),
                                          getattr(before, target))
        assert max_abs_difference(getattr(stepped, target), expected) < 1e-6


def test_next_actions_follow_the_episode(toy_hopper_dataset):
    """Rows are :func:`sample_batch`'s; a row's next action is the following row's action
    within its episode; the last row of each episode (200, 150 and 250 rows) has none."""
    data, key = toy_hopper_dataset, jax.random.PRNGKey(4)
    batch, next_actions, has_next = rebrac.sample_with_next_actions(data, key, 4096)
    assert_trees_equal(batch, sample_batch(data, key, 4096))
    indices = np.asarray(jax.random.randint(key, (4096,), 0, data.size))
    np.testing.assert_array_equal(np.asarray(batch.observations),
                                  np.asarray(data.observations)[indices])
    last_rows = {199, 349, 599}
    assert last_rows <= set(indices.tolist())
    np.testing.assert_array_equal(np.asarray(has_next),
                                  [0.0 if i in last_rows else 1.0 for i in indices])
    valid = np.asarray(has_next) == 1.0
    np.testing.assert_array_equal(np.asarray(next_actions)[valid],
                                  np.asarray(data.actions)[indices[valid] + 1])


def test_defaults_and_rebrac_task_table():
    config = td3bc.ALGORITHM.make_config("hopper-medium")
    assert (config.alpha, config.batch_size, config.normalize_states) == (2.5, 256, True)
    assert config.td3 == td3.Config()  # TD3's own defaults, 2 x 256, no LayerNorm
    assert (config.td3.policy_noise, config.td3.noise_clip, config.td3.policy_freq) == \
        (0.2, 0.5, 2)
    config = rebrac.ALGORITHM.make_config("hopper-medium-replay")
    assert (config.actor_beta, config.critic_beta) == (0.05, 0.5)
    assert (config.batch_size, config.normalize_states, config.normalize_q) == (1024, False, True)
    assert config.td3.hidden_dims == (256, 256, 256) and config.td3.critic_layer_norm
    assert (config.td3.actor_lr, config.td3.critic_lr, config.td3.tau) == (1e-3, 1e-3, 5e-3)
    assert rebrac.ALGORITHM.make_config("walker2d-random").critic_beta == 0.0
    assert rebrac.ALGORITHM.make_config("halfcheetah-medium").actor_beta == 0.001
    assert len(rebrac.TASK_SETTINGS) == 15
    # LayerNorm in ReBRAC's critics only (parameter shapes: nothing is computed).
    for registration, critic_norm in ((rebrac.ALGORITHM, True), (td3bc.ALGORITHM, False)):
        small = registration.make_config(overrides={"td3.hidden_dims": (8,)})
        state = jax.eval_shape(registration.make(small, HOPPER).init, jax.random.PRNGKey(0))
        critic = str(jax.tree_util.tree_structure(state.agent.critic_params))
        assert ("LayerNorm_0" in critic) == critic_norm
        assert "LayerNorm" not in str(jax.tree_util.tree_structure(state.agent.actor_params))


def test_states_are_normalised_with_the_dataset_statistics_when_configured(run, bandit):
    """TD3+BC standardises states by the dataset's mean and std (+ 1e-3), in ``update`` and in
    ``act``; ReBRAC does not by default. The state's BC weights start at the config's."""
    data, _ = bandit
    obs = np.asarray(data.observations)
    state = row(run["initial"], 0)
    if run["name"] == "td3bc":
        mean, std = obs.mean(0), obs.std(0) + 1e-3
        np.testing.assert_allclose(state.obs_mean, mean, atol=1e-6)
        np.testing.assert_allclose(state.obs_std, std, rtol=1e-5)
        assert float(state.alpha) == 2.5
    else:
        mean, std = np.zeros(obs.shape[1]), np.ones(obs.shape[1])
        np.testing.assert_array_equal(state.obs_mean, mean)
        np.testing.assert_array_equal(state.obs_std, std)
        assert (float(state.actor_beta), float(state.critic_beta)) == (1.0, 1.0)
    algorithm, trained = run["algorithm"], row(run["states"][-1], 0)
    raw = jnp.asarray(obs[:5])
    np.testing.assert_allclose(algorithm.act(trained, raw, None), algorithm.agent.act(
        trained.agent.actor_params, jnp.asarray((obs[:5] - mean) / std, jnp.float32)),
        rtol=1e-5, atol=1e-6)


# --- learning ----------------------------------------------------------------------------------

def test_losses_fall(run):
    """The critics fit the bandit's deterministic rewards (their loss falls tenfold) and the
    actor moves to higher-valued actions: the critics' value of the policy's actions rises.
    (Both actor losses hold the Q term near a constant, -alpha or -1 times mean(q) / mean|q|,
    so the Q-value itself is the measure.)"""
    critic = np.array([m["critic_loss"] for m in run["metrics"]])
    assert np.all(critic[-10:].mean(0) < 0.1 * critic[:10].mean(0)), (run["name"], critic)
    q_policy = np.array([m["q_policy"] for m in run["metrics"]])
    first, last = q_policy[:3].mean(0), q_policy[-10:].mean(0)
    assert np.all(last > first + 0.3), (run["name"], first, last)


def test_learning_beats_bc_on_a_suboptimal_dataset(run, bandit):
    """Half the data is uniform noise: the best behaviour cloning can do (in squared error) is
    the data's conditional mean, 0.5 a*(s), with regret 0.25 E|a*|^2 (0.24 here; the tanh-
    Gaussian BC of the suite reaches 0.21). The Q term moves both algorithms' actors towards
    a*(s)."""
    data, w = bandit
    conditional_mean = regret(lambda _, obs, *__: 0.5 * jnp.tanh(obs @ jnp.asarray(
        w, jnp.float32)), None, w)
    assert conditional_mean == pytest.approx(0.238, abs=0.01)
    regrets = [regret(run["algorithm"].act, row(run["states"][-1], i), w)
               for i in range(len(SEEDS))]
    assert max(regrets) < 0.5 * conditional_mean, (run["name"], regrets, conditional_mean)


# --- seeds ------------------------------------------------------------------------------------

def test_each_vmapped_seed_depends_only_on_its_own_key(run, bandit):
    """A seed's row is bit-identical when the other row is a copy of it (the same compiled
    program: the same instructions for every row, on any processor)."""
    data, _ = bandit
    together = run["states"][1]
    for i in range(len(SEEDS)):
        copies = broadcast_row(run["initial"], i, len(SEEDS))
        keys = jnp.stack([run["keys"][i]] * len(SEEDS))
        alone = train_rows(run["interval"], copies, data, keys, 2)[0][-1]
        for j in range(len(SEEDS)):
            assert_trees_equal(row(together, i), row(alone, j))
    assert max_abs_difference(row(together, 0).agent.actor_params,
                              row(together, 1).agent.actor_params) > 1e-2


def test_vmapped_seeds_match_one_by_one_runs(run, bandit):
    """Each row of the 2-seed program against the same seed run alone (its own, unvmapped
    compilation) over the first 10 updates. Two compilations start one float32 rounding apart
    (6e-8 relative); Adam's early steps are about lr * sign(gradient), so rounding can only
    move a parameter by more than a rounding when its gradient is within rounding of zero.
    1e-4 is far above what that does in 10 updates (about 2e-7 measured), and far below what
    a wrong key does (another minibatch and noise each update: above 1e-3)."""
    data, _ = bandit
    single = jax.jit(make_interval_fn(run["algorithm"], EVAL_EVERY))
    for i in range(len(SEEDS)):
        key = jax.random.fold_in(run["keys"][i], 0)  # the key train_rows gives interval 0
        alone, failed, _ = single(row(run["initial"], i), jnp.zeros((), bool), data, key)
        assert not bool(failed)
        np.testing.assert_array_equal(np.asarray(alone.agent.step), EVAL_EVERY)
        assert max_abs_difference(alone.agent, row(run["states"][0], i).agent) < 1e-4
    wrong_key, _, _ = single(row(run["initial"], 0), jnp.zeros((), bool), data,
                             jax.random.fold_in(run["keys"][1], 0))
    assert max_abs_difference(wrong_key.agent, row(run["states"][0], 0).agent) > 1e-3


# --- the runner -------------------------------------------------------------------------------

def test_tiny_run_through_the_runner(toy_hopper_dataset, tmp_path):
    """ReBRAC through ``run_benchmark`` (the tiny profile, 2 seeds, one evaluation) on
    episodic data: the profile's batch size and our network size are applied, the dataset's
    next actions are found for all but the 3 episode ends, and the records are complete."""
    from offrl_jax.data import write_d4rl_hdf5
    from offrl_jax.training.runner import run_benchmark

    data_file = write_d4rl_hdf5(tmp_path / "toy.hdf5", toy_hopper_dataset)
    task, out = "td3-rebrac-toy", tmp_path / "run"
    rows = run_benchmark(["rebrac"], [f"{task}=hopper:{data_file}"], [0, 1], "tiny", out,
                         progress=False, overrides={"*": {"td3.hidden_dims": (16, 16)}},
                         schedule={"num_updates": 10, "eval_every": 10, "eval_episodes": 1})
    settings = json.loads((out / "config.json").read_text())["settings"][f"rebrac/{task}"]
    assert settings["td3.hidden_dims"] == [16, 16] and settings["batch_size"] == 64
    assert settings["actor_beta"] == 1.0  # no table row for this task: the config's default
    records = [json.loads(line) for line in
               (out / "records" / f"rebrac__{task}.jsonl").read_text().splitlines()]
    assert sorted((r["seed"], r["step"]) for r in records) == [(0, 10), (1, 10)]
    assert all(np.isfinite(r["normalized_score"]) and not r["failed"] for r in records)
    restored, _ = read_checkpoint(out / "checkpoints" / f"rebrac__{task}")
    np.testing.assert_array_equal(np.asarray(restored["state"]["agent"]["step"]), [10, 10])
    log = (out / "logs" / f"rebrac__{task}" / "seed0.csv").read_text().splitlines()
    columns = dict(zip(log[0].split(","), log[1].split(","), strict=True))
    assert float(columns["has_next_action"]) == pytest.approx(597 / 600, abs=0.02)
    assert next(r for r in rows if r["algorithm"] == "rebrac")["seeds"] == 2
