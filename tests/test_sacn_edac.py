"""SAC-N and EDAC: known answers (the ensemble similarity, the action-gradients it is computed
from, the minimum over all N critics in the target and in the actor's objective), losses that
fall, learning beyond BC, EDAC's lower gradient similarity, seeds, the per-dataset tables and a
tiny run through the runner.

Compilation dominates on a CPU, so the learning tests share one SAC-N run (2 seeds vmapped, one
compiled program) and one EDAC run of 2 rows from the same key (eta = 0 and eta = 1).
"""

from __future__ import annotations

import functools
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bandit import HOPPER, bandit_dataset, regret, train_rows

from offrl_jax.algorithms import bc, edac, sacn
from offrl_jax.algorithms.edac import action_gradients, ensemble_similarity
from offrl_jax.training.loop import make_interval_fn

# Small networks, 5 critics, and rates that let 1000 updates finish the job on the bandit
# (the temperature must fall from 1 within the run).
SMALL = {"agent.hidden_dims": (64, 64), "agent.num_qs": 5, "batch_size": 128,
         "agent.actor_lr": 1e-3, "agent.critic_lr": 1e-3, "agent.alpha_lr": 3e-3}
EVAL_EVERY, INTERVALS = 250, 4
SACN_SEEDS = (0, 1)
ETAS = (0.0, 1.0)


def row(tree, i):
    return jax.tree_util.tree_map(lambda x: x[i], tree)


def max_abs_difference(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b),
                               strict=True))


@pytest.fixture(scope="module")
def bandit():
    return bandit_dataset()


def run_rows(module, data, keys, **leaves):
    """``INTERVALS`` intervals of ``module``'s algorithm (config ``SMALL``) on ``data``, one row
    per key, vmapped as the Trainer does. Rows are initialised one at a time outside ``jit``: a
    compiled vmapped ``init`` costs more compilation than these whole runs."""
    algorithm = module.ALGORITHM.make(module.ALGORITHM.make_config(overrides=SMALL), HOPPER)
    initial = jax.tree_util.tree_map(lambda *rows: jnp.stack(rows),
                                     *[algorithm.init(key, data) for key in keys])
    interval = jax.jit(jax.vmap(make_interval_fn(algorithm, EVAL_EVERY),
                                in_axes=(0, 0, None, 0)))
    states, metrics, failed = train_rows(interval, initial, data, keys, INTERVALS, **leaves)
    assert not failed.any()
    return {"algorithm": algorithm, "interval": interval, "keys": keys, "initial": initial,
            "states": states, "metrics": metrics}


@pytest.fixture(scope="module")
def sacn_run(bandit):
    """SAC-N on the bandit, 2 seeds vmapped in one program."""
    return run_rows(sacn, bandit[0], jnp.stack([jax.random.PRNGKey(s) for s in SACN_SEEDS]))


@pytest.fixture(scope="module")
def edac_run(bandit):
    """EDAC on the bandit: two rows from SAC-N's seed-0 key, eta = 0 and eta = 1."""
    return run_rows(edac, bandit[0], jnp.stack([jax.random.PRNGKey(SACN_SEEDS[0])] * len(ETAS)),
                    eta=ETAS)


@pytest.fixture(scope="module")
def single_updates(sacn_run, edac_run):
    """Each algorithm's update for one seed, compiled once for the tests that step by hand."""
    return {"sacn": jax.jit(sacn_run["algorithm"].update),
            "edac": jax.jit(edac_run["algorithm"].update)}


# --- known answers ------------------------------------------------------------------------------

similarity_jit = jax.jit(ensemble_similarity)


def similarity(*rows):
    """``ensemble_similarity`` of hand-written gradients, one list of member vectors per row."""
    return float(similarity_jit(jnp.asarray(rows, jnp.float32)))


def test_ensemble_similarity_known_answers():
    # Parallel gradients (any positive lengths): every pair has cosine 1, so N(N-1)/(N-1) = N.
    assert similarity([[1, 2, 0], [2, 4, 0], [0.5, 1, 0], [3, 6, 0]]) == pytest.approx(4.0,
                                                                                         rel=1e-6)
    # Orthogonal gradients: 0.
    assert similarity([[2, 0, 0], [0, 3, 0], [0, 0, 0.5]]) == pytest.approx(0.0, abs=1e-7)
    # (1, 0), (0, 2), (1, 1): cosines 0, 1/sqrt(2), 1/sqrt(2); twice their sum over 3 - 1.
    assert similarity([[1, 0], [0, 2], [1, 1]]) == pytest.approx(np.sqrt(2.0), rel=1e-6)
    # Opposite gradients: -2 for two members.
    assert similarity([[1, 0], [-3, 0]]) == pytest.approx(-2.0, rel=1e-6)
    # The mean over rows: a parallel row (3) and an orthogonal row (0).
    assert similarity([[1, 0, 0], [1, 0, 0], [2, 0, 0]],
                      [[1, 0, 0], [0, 1, 0], [0, 0, 1]]) == pytest.approx(1.5, rel=1e-6)
    # A zero gradient (every ReLU of a critic off) adds nothing, and the term's gradient stays
    # finite there (the norm's square root has an infinite derivative at 0).
    with_zero = [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]
    assert similarity(with_zero) == pytest.approx(2 * 2 ** -0.5 / 2, rel=1e-6)
    gradient = jax.jit(jax.grad(ensemble_similarity))(jnp.asarray([with_zero]))
    assert np.isfinite(np.asarray(gradient)).all()


def test_action_gradients_are_each_members_own_at_each_row(edac_run):
    rng = np.random.default_rng(0)
    obs = jnp.asarray(rng.normal(size=(7, HOPPER.obs_dim)), jnp.float32)
    act = jnp.asarray(rng.uniform(-1, 1, size=(7, HOPPER.act_dim)), jnp.float32)
    # Linear in the action (member i's gradient is w_i at every row, whatever the state term);
    # quadratic (member i's gradient is 2 c_i a_b, different at every row); a real critic
    # ensemble (each member's own gradient, from jax.grad of that member alone).
    w = jnp.asarray([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 0.0]])
    c = jnp.asarray([1.0, -0.5, 3.0, 2.0])
    agent = edac_run["algorithm"].agent  # 5 critics, untrained
    params = row(edac_run["initial"], 0).agent.critic_params

    @jax.jit
    def gradients(obs, act):
        linear_q = lambda o, a: (a @ w.T + jnp.sum(o ** 2, -1, keepdims=True)).T  # noqa: E731
        quadratic_q = lambda o, a: c[:, None] * jnp.sum(a ** 2, -1)[None]  # noqa: E731
        critic_q = lambda o, a: agent.q(params, o, a)  # noqa: E731
        each = [jax.grad(lambda a, i=i: critic_q(obs, a)[i].sum())(act) for i in range(5)]
        return (action_gradients(linear_q, obs, act), action_gradients(quadratic_q, obs, act),
                action_gradients(critic_q, obs, act), jnp.stack(each, axis=1))

    linear, quadratic, critic, each = gradients(obs, act)
    chex.assert_shape(linear, (7, 3, HOPPER.act_dim))
    np.testing.assert_allclose(linear, jnp.broadcast_to(w, linear.shape), atol=1e-6)
    # Hand computation: cosines 0 (w_1, w_2), 1/sqrt(2) (w_1, w_3), 1/sqrt(2) (w_2, w_3).
    assert float(similarity_jit(linear)) == pytest.approx(np.sqrt(2.0), rel=1e-5)
    np.testing.assert_allclose(quadratic, 2 * c[None, :, None] * act[:, None, :], rtol=1e-6)
    chex.assert_shape(critic, (7, 5, HOPPER.act_dim))
    np.testing.assert_allclose(critic, each, rtol=1e-5, atol=1e-6)


def constant_critics(params, values):
    """Critic parameters whose member i outputs ``values[i]`` everywhere (every weight 0, the
    last layer's bias the value)."""
    layers = params["params"]["VmapMLP_0"]
    last = max(layers, key=lambda name: int(name.split("_")[-1]))
    zeroed = jax.tree_util.tree_map(jnp.zeros_like, layers)
    zeroed[last]["bias"] = jnp.asarray(values, jnp.float32)[:, None]
    return {"params": {"VmapMLP_0": zeroed}}


@pytest.mark.parametrize("name", ["sacn", "edac"])
def test_target_and_actor_use_the_minimum_over_all_critics(name, request, bandit,
                                                           single_updates):
    """Critics that output constants, a reward of 0.5, no terminal and a temperature of 0: the
    TD target is ``0.5 + gamma * min(target constants)``, the critic loss ``sum_i (b_i - y)^2``
    and the actor's loss ``-min(b)``. The minima are at neither the first nor the second
    critic, so a minimum over two critics (SAC's default) gives other numbers."""
    algorithm = request.getfixturevalue(f"{name}_run")["algorithm"]
    data = bandit[0].replace(rewards=jnp.full_like(bandit[0].rewards, 0.5),
                             terminals=jnp.zeros_like(bandit[0].terminals))
    online, target = [0.5, 0.75, -0.25, 1.0, 3.0], [3.0, 2.0, 5.0, 1.0, -1.5]
    state = algorithm.init(jax.random.PRNGKey(0), data)
    agent = state.agent
    state = state.replace(agent=agent.replace(
        critic_params=constant_critics(agent.critic_params, online),
        target_critic_params=constant_critics(agent.target_critic_params, target),
        log_alpha=jnp.asarray(-1e4, jnp.float32)))  # alpha = exp(-1e4) = 0 in float32
    _, metrics = single_updates[name](state, data, jax.random.PRNGKey(1))
    y = 0.5 + 0.99 * min(target)
    assert float(metrics["critic_loss"]) == pytest.approx(sum((b - y) ** 2 for b in online),
                                                          rel=1e-5)
    assert float(metrics["q_mean"]) == pytest.approx(np.mean(online), rel=1e-5)
    assert float(metrics["q_std"]) == pytest.approx(np.std(online), rel=1e-5)
    assert float(metrics["alpha"]) == 0.0
    assert float(metrics["actor_loss"]) == pytest.approx(-min(online), rel=1e-5)
    if name == "edac":  # constant critics have zero action-gradients: nothing to diversify
        assert float(metrics["ensemble_similarity"]) == 0.0


# --- learning -----------------------------------------------------------------------------------

def test_critic_losses_fall(sacn_run, edac_run):
    for name, run, rows in (("sacn", sacn_run, range(len(SACN_SEEDS))),
                            ("edac", edac_run, range(len(ETAS)))):
        first, last = run["metrics"][0]["critic_loss"], run["metrics"][-1]["critic_loss"]
        for i in rows:
            assert last[i] < 0.4 * first[i], (name, i, first, last)


@pytest.fixture(scope="module")
def bc_regret(bandit):
    data, w = bandit
    algorithm = bc.BC(bc.BCConfig(hidden_dims=(64, 64), batch_size=128), HOPPER)

    @jax.jit
    def train(state, key):
        def step(i, state):
            return algorithm.update(state, data, jax.random.fold_in(key, i))[0]

        return jax.lax.fori_loop(0, EVAL_EVERY * INTERVALS, step, state)

    key = jax.random.PRNGKey(0)
    return regret(algorithm.act, train(algorithm.init(key, data), key), w)


def test_sacn_and_edac_beat_bc_on_a_suboptimal_dataset(sacn_run, edac_run, bandit, bc_regret):
    """BC copies the uniform half of the actions too; both prefer the high-reward actions."""
    _, w = bandit
    regrets = {f"sacn seed {s}": regret(sacn_run["algorithm"].act, row(sacn_run["states"][-1], i),
                                        w) for i, s in enumerate(SACN_SEEDS)}
    regrets["edac"] = regret(edac_run["algorithm"].act,
                             row(edac_run["states"][-1], ETAS.index(1.0)), w)
    for name, value in regrets.items():
        assert value < 0.5 * bc_regret, (name, regrets, bc_regret)


def trained_similarity(algorithm, state, data):
    """The ensemble similarity of a trained state's critics at 1000 dataset (s, a)."""
    return float(_similarity_at(algorithm.agent, state.agent.critic_params,
                                data.observations[:1000], data.actions[:1000]))


@functools.partial(jax.jit, static_argnums=0)
def _similarity_at(agent, critic_params, observations, actions):
    q_fn = lambda o, a: agent.q(critic_params, o, a)  # noqa: E731
    return ensemble_similarity(action_gradients(q_fn, observations, actions))


def test_diversity_term_lowers_the_critics_gradient_similarity(sacn_run, edac_run, bandit):
    """At the data, the critics' action-gradients point apart with the term (eta = 1) and
    together without it: SAC-N from the same key, and EDAC's eta = 0 row of the same
    program."""
    data, _ = bandit
    final = edac_run["states"][-1]
    with_term = trained_similarity(edac_run["algorithm"], row(final, ETAS.index(1.0)), data)
    without = trained_similarity(edac_run["algorithm"], row(final, ETAS.index(0.0)), data)
    sacn_similarity = trained_similarity(sacn_run["algorithm"], row(sacn_run["states"][-1], 0),
                                         data)
    assert with_term < 0.5 * sacn_similarity, (with_term, sacn_similarity)
    assert with_term < 0.5 * without, (with_term, without)
    # The term's own metric, averaged over the last interval's minibatches, agrees.
    metric = edac_run["metrics"][-1]["ensemble_similarity"]
    assert metric[ETAS.index(1.0)] < 0.5 * metric[ETAS.index(0.0)], metric
    np.testing.assert_array_equal(np.asarray(final.eta), ETAS)


# --- seeds --------------------------------------------------------------------------------------

def test_each_vmapped_seed_depends_only_on_its_own_key(sacn_run, bandit):
    """A seed's row of the 2-seed program is bit-identical when the other row is replaced by a
    copy of it (the same compiled program: see docs/reproducibility.md)."""
    data, _ = bandit
    after_one = sacn_run["states"][0]
    for i in range(len(SACN_SEEDS)):
        copies = jax.tree_util.tree_map(lambda x, i=i: jnp.stack([x[i]] * len(SACN_SEEDS)),
                                        sacn_run["initial"])
        keys = jnp.stack([sacn_run["keys"][i]] * len(SACN_SEEDS))
        alone = train_rows(sacn_run["interval"], copies, data, keys, 1)[0][-1]
        for j in range(len(SACN_SEEDS)):
            jax.tree_util.tree_map(
                lambda a, b, i=i, j=j: np.testing.assert_array_equal(a[i], b[j]),
                after_one, alone)
    # The property can fail: the two seeds' rows are far apart.
    assert max_abs_difference(row(after_one, 0), row(after_one, 1)) > 1e-2


def test_vmapped_seeds_equal_one_by_one_runs_over_a_few_updates(sacn_run, bandit,
                                                                   single_updates):
    """Five updates of each seed alone (its own compiled 1-seed program) against the same seeds
    vmapped: two compilations of one computation, so equal up to float32 rounding
    (docs/reproducibility.md). They start about 6e-8 relative apart and five Adam steps of
    lr = 1e-3 keep that near 1e-7 (measured: 6e-8 and 1.2e-7, AMD EPYC); 2e-5 is 100x that and
    50x below one step, and a seed trained on another key or batch would be whole steps away."""
    data, _ = bandit
    single = single_updates["sacn"]
    vmapped = jax.jit(jax.vmap(sacn_run["algorithm"].update, in_axes=(0, None, 0)))
    keys = [jax.random.split(jax.random.PRNGKey(10 + s), 5) for s in SACN_SEEDS]
    together = sacn_run["initial"]
    for step in range(5):
        together, _ = vmapped(together, data, jnp.stack([k[step] for k in keys]))
    for i in range(len(SACN_SEEDS)):
        alone = row(sacn_run["initial"], i)
        for step in range(5):
            alone, _ = single(alone, data, keys[i][step])
        chex.assert_trees_all_close(alone.agent, row(together, i).agent, atol=2e-5)
    # The comparison can fail: the two seeds' rows are far apart.
    assert max_abs_difference(row(together, 0).agent, row(together, 1).agent) > 1e-2


# --- settings and the runner --------------------------------------------------------------------

def test_task_settings_follow_the_reference_tables():
    n = {task: sacn.ALGORITHM.make_config(task).agent.num_qs
         for task in ("hopper-medium", "hopper-medium-replay", "walker2d-medium-expert",
                      "halfcheetah-medium", "hopper-random")}
    assert n == {"hopper-medium": 500, "hopper-medium-replay": 200, "walker2d-medium-expert": 20,
                 "halfcheetah-medium": 10, "hopper-random": 10}  # the last: no row, default
    n_eta = {task: (edac.ALGORITHM.make_config(task).agent.num_qs,
                    edac.ALGORITHM.make_config(task).eta)
             for task in ("hopper-medium-expert", "halfcheetah-medium-expert",
                          "walker2d-medium", "hopper-random")}
    assert n_eta == {"hopper-medium-expert": (50, 1.0), "halfcheetah-medium-expert": (10, 5.0),
                     "walker2d-medium": (10, 1.0), "hopper-random": (10, 1.0)}
    # An explicit override beats the table.
    assert sacn.ALGORITHM.make_config("hopper-medium", {"agent.num_qs": 7}).agent.num_qs == 7
    with pytest.raises(ValueError, match="num_qs must be >= 2"):
        edac.ALGORITHM.make_config(overrides={"agent.num_qs": 1})


def test_tiny_run_through_the_runner(toy_hopper_dataset, tmp_path):
    from offrl_jax.data import write_d4rl_hdf5
    from offrl_jax.training.runner import run_benchmark

    write_d4rl_hdf5(tmp_path / "toy.hdf5", toy_hopper_dataset)
    # EDAC runs SAC-N's update plus its term, so this one run covers both update paths.
    rows = run_benchmark(["edac"], [f"edac-toy=hopper:{tmp_path / 'toy.hdf5'}"], [0], "tiny",
                         tmp_path / "run", overrides={"edac": {"agent.num_qs": 3}},
                         progress=False,
                         schedule={"num_updates": 20, "eval_every": 10, "eval_episodes": 1})
    resolved = json.loads((tmp_path / "run" / "config.json").read_text())["settings"][
        "edac/edac-toy"]
    assert resolved["agent.num_qs"] == 3 and resolved["eta"] == 1.0
    assert resolved["agent.hidden_dims"] == [32, 32] and resolved["batch_size"] == 64  # tiny's
    records = [json.loads(line) for line in
               (tmp_path / "run" / "records" / "edac__edac-toy.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20]
    assert all(np.isfinite(r["normalized_score"]) and not r["failed"] for r in records)
    log = (tmp_path / "run" / "logs" / "edac__edac-toy" / "seed0.csv").read_text()
    assert {"critic_loss", "ensemble_similarity", "q_std"} <= set(log.splitlines()[0].split(","))
    row_ = next(r for r in rows if r["algorithm"] == "edac" and r["task"] == "edac-toy")
    assert row_["seeds"] == 1 and row_["failed_seeds"] == 0
