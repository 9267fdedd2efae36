"""IQL and CQL: known answers, losses that fall, conservatism, and learning beyond BC."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bandit import bandit_dataset, regret

from offrl_jax.algorithms import cql, iql
from offrl_jax.algorithms.registry import get_algorithm
from offrl_jax.data import Dataset
from offrl_jax.parts import sac
from offrl_jax.parts.conservative import conservative_penalty, sampled_actions
from offrl_jax.tasks import get_env_spec

HOPPER = get_env_spec("hopper")


def known_expectile(x, tau):
    """Root of tau * sum((x - c)+) = (1 - tau) * sum((c - x)+), by bisection."""
    low, high = x.min(), x.max()
    for _ in range(200):
        c = 0.5 * (low + high)
        excess = tau * np.clip(x - c, 0, None).sum() - (1 - tau) * np.clip(c - x, 0, None).sum()
        low, high = (c, high) if excess > 0 else (low, c)
    return c


@pytest.mark.parametrize("tau", [0.5, 0.7, 0.9])
def test_expectile_loss_minimiser_is_the_expectile(tau):
    x = np.random.default_rng(0).exponential(size=500)
    loss = lambda c: jnp.mean(iql.expectile_loss(jnp.asarray(x) - c, tau))  # noqa: E731
    c = jax.jit(lambda c: jax.lax.fori_loop(0, 3000, lambda _, c: c - 0.5 * jax.grad(loss)(c),
                                            c))(jnp.asarray(0.0))
    assert float(c) == pytest.approx(known_expectile(x, tau), abs=1e-3)
    if tau == 0.5:
        assert float(c) == pytest.approx(x.mean(), abs=1e-3)


def run_updates(algorithm, state, dataset, num, seed=0):
    step = jax.jit(algorithm.update)
    history = []
    for i in range(num):
        state, metrics = step(state, dataset, jax.random.PRNGKey(seed * 100_000 + i))
        history.append(jax.tree_util.tree_map(float, metrics))
    return state, history


def test_iql_value_and_critic_losses_fall():
    data, _ = bandit_dataset()  # deterministic rewards: the losses have no noise floor
    config = iql.IQLConfig(hidden_dims=(32, 32), batch_size=64, total_updates=600,
                           normalize_rewards=False)
    algorithm = iql.IQL(config, HOPPER)
    state = algorithm.init(jax.random.PRNGKey(0), data)
    state, history = run_updates(algorithm, state, data, 600)
    for name in ("value_loss", "critic_loss"):
        first = np.mean([h[name] for h in history[:50]])
        last = np.mean([h[name] for h in history[-50:]])
        assert last < 0.75 * first, (name, first, last)


@pytest.mark.parametrize("policy", ["gaussian", "deterministic"])
def test_iql_policy_fits_saturated_actions_in_action_space(policy):
    """Half the dataset's actions are saturated (+1), half 0, whatever the state; with equal
    weights (temperature 0) the extracted policy is behaviour cloning, whose action must be the
    data's mean, 0.5. A tanh-squashed policy fitted on arctanh(a) lands near tanh(3.6) = 0.998:
    the saturated actions (about 7.25 before the tanh) dominate its fit."""
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(2000, HOPPER.obs_dim)).astype(np.float32)
    actions = np.where(rng.random((2000, 1)) < 0.5, 1.0, 0.0) * np.ones((1, HOPPER.act_dim))
    zeros, ones = np.zeros(2000, np.float32), np.ones(2000, np.float32)
    data = Dataset.from_arrays(observations=obs, actions=actions.astype(np.float32),
                               rewards=zeros, next_observations=obs, terminals=ones,
                               timeouts=zeros, episode_ids=np.arange(2000))
    config = iql.IQLConfig(hidden_dims=(32, 32), batch_size=128, temperature=0.0,
                           actor_lr=1e-3, total_updates=1500, normalize_rewards=False,
                           policy=policy)
    algorithm = iql.IQL(config, HOPPER)
    state, _ = run_updates(algorithm, algorithm.init(jax.random.PRNGKey(0), data), data, 1500)
    action = np.asarray(algorithm.act(state, jnp.asarray(obs[:200]), None, True))
    assert abs(float(action.mean()) - 0.5) < 0.1, action.mean()
    sampled = np.asarray(algorithm.act(state, jnp.asarray(obs[:200]), jax.random.PRNGKey(1),
                                       False))
    assert np.all(np.abs(sampled) <= 1.0)


def test_iql_reward_scale_follows_episode_returns(toy_hopper_dataset):
    state = iql.IQL(iql.IQLConfig(hidden_dims=(8,)), HOPPER).init(jax.random.PRNGKey(0),
                                                                   toy_hopper_dataset)
    returns = np.bincount(np.asarray(toy_hopper_dataset.episode_ids),
                          weights=np.asarray(toy_hopper_dataset.rewards))
    expected = 1000.0 / (returns.max() - returns.min())
    assert float(state.reward_scale) == pytest.approx(expected, rel=1e-4)


def test_iql_and_cql_beat_bc_on_a_suboptimal_dataset():
    data, w = bandit_dataset()
    regrets = {}
    for name in ("bc", "iql", "cql"):
        extra = {"total_updates": 1500} if name == "iql" else {}
        hidden = "agent.hidden_dims" if name == "cql" else "hidden_dims"
        if name == "cql":
            extra = {"agent.actor_lr": 1e-3}
        registration = get_algorithm(name)
        config = registration.make_config(
            overrides={hidden: (64, 64), "batch_size": 128, **extra})
        algorithm = registration.make(config, HOPPER)
        state = algorithm.init(jax.random.PRNGKey(0), data)
        state, _ = run_updates(algorithm, state, data, 1500)
        regrets[name] = regret(algorithm.act, state, w)
    # BC copies the noisy half too; both offline RL methods prefer the high-reward actions.
    assert regrets["iql"] < 0.7 * regrets["bc"], regrets
    assert regrets["cql"] < 0.7 * regrets["bc"], regrets


def test_cql_penalty_ranks_dataset_actions_above_unseen_ones():
    # Narrow behaviour (a fixed function of the state) and a reward of 1 for every action:
    # a plain critic has no reason to rank dataset actions above others; CQL's critic must.
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(1000, HOPPER.obs_dim)).astype(np.float32)
    actions = np.tanh(obs[:, :3]).astype(np.float32)
    ones = np.ones(1000, np.float32)
    data = Dataset.from_arrays(observations=obs, actions=actions, rewards=ones,
                               next_observations=obs, terminals=ones, timeouts=0 * ones,
                               episode_ids=np.arange(1000))
    ood = jax.random.uniform(jax.random.PRNGKey(5), actions.shape, minval=-1, maxval=1)

    def gap(weight):
        config = cql.ALGORITHM.make_config(overrides={
            "agent.hidden_dims": (32, 32), "agent.critic_lr": 1e-3, "batch_size": 64,
            "cql_weight": weight})
        algorithm = cql.CQL(config, HOPPER)
        state = algorithm.init(jax.random.PRNGKey(0), data)
        state = run_updates(algorithm, state, data, 300)[0]
        q = lambda a: algorithm.agent.q(state.agent.critic_params, obs, a).min(0)  # noqa
        return float(jnp.mean(q(jnp.asarray(actions)) - q(ood)))

    conservative, plain = gap(5.0), gap(0.0)
    assert conservative > 0.5, conservative
    assert conservative > abs(plain) + 0.4, (conservative, plain)


def test_conservative_penalty_has_gradient_and_uses_all_sampled_actions(toy_hopper_dataset):
    agent = sac.Agent(sac.Config(hidden_dims=(16, 16)), HOPPER.obs_dim, HOPPER.act_dim)
    state = agent.init(jax.random.PRNGKey(0))
    obs = toy_hopper_dataset.observations[:32]
    policy = lambda o, k: agent.sample(state.actor_params, o, k)  # noqa: E731
    actions, log_probs = sampled_actions(jax.random.PRNGKey(1), policy, obs, obs, 3, 10)
    assert actions.shape == (3, 32, 10, 3) and log_probs.shape == (3, 32, 10)

    def penalty(params, temperature=1.0):
        q_fn = lambda o, a: agent.q(params, o, a)  # noqa: E731
        data_q = q_fn(obs, toy_hopper_dataset.actions[:32])
        return conservative_penalty(q_fn, obs, actions, log_probs, data_q, temperature).sum()

    grads = jax.grad(penalty)(state.critic_params)
    norm = sum(float(jnp.sum(g ** 2)) for g in jax.tree_util.tree_leaves(grads))
    assert norm > 1e-8
    # Known answer: with temperature -> 0 the log-sum-exp tends to the max over all 30 actions.
    q_fn = lambda o, a: agent.q(state.critic_params, o, a)  # noqa: E731
    data_q = q_fn(obs, toy_hopper_dataset.actions[:32])
    cold = conservative_penalty(q_fn, obs, actions, log_probs, data_q, temperature=1e-4)
    repeated = jnp.broadcast_to(obs[:, None], (32, 10, obs.shape[-1]))
    all_q = jnp.stack([q_fn(repeated, actions[k]) - log_probs[k] for k in range(3)], -1)
    expected = all_q.reshape(2, 32, 30).max(-1).mean(-1) - data_q.mean(-1)
    # t * logsumexp(x / t) lies in [max x, max x + t log(30)] for 30 entries; 1e-5 covers the
    # float32 rounding of Q values of order 10 (6e-8 relative), on any processor.
    gap = np.asarray(cold) - np.asarray(expected)
    assert np.all(gap >= -1e-5) and np.all(gap <= 1e-4 * np.log(30) + 1e-5), gap


@pytest.mark.parametrize("num_samples", [1, 3, 10])
def test_conservative_weight_means_the_same_push_whatever_the_estimator(num_samples):
    """beta's scale does not depend on the log-sum-exp's sample count: the push-down's gradient
    weights form a distribution over the sampled actions (total 1 per state), for our 3 x n
    estimator and for the 3-value one of the reimplementation COMBO's table was tuned with
    (docs/algorithms.md#combo); only the value, and where the push lands, differ."""
    rng = np.random.default_rng(num_samples)
    q = jnp.asarray(rng.normal(size=(2, 8, num_samples, 3)), jnp.float32)  # (qs, B, n, kinds)
    log_probs = jnp.asarray(rng.normal(size=(3, 8, num_samples)), jnp.float32)
    obs = jnp.zeros((8, 4))
    actions = jnp.arange(3 * 8 * num_samples, dtype=jnp.float32).reshape(3, 8, num_samples, 1)

    def ours(shift):
        # q_fn looks up the table entry of each sampled action (its index is the action).
        def q_fn(_, act):
            kind, index = divmod(act[..., 0].astype(int), 8 * num_samples)
            return q[..., kind[0, 0]][:, index // num_samples, index % num_samples] + shift
        return conservative_penalty(q_fn, obs, actions, log_probs, jnp.zeros((2, 8))).sum()

    def three_values(shift):
        corrected = q + shift - jnp.moveaxis(log_probs, 0, -1)
        return jax.scipy.special.logsumexp(corrected, axis=-1).mean(axis=(-1, -2)).sum()

    # d/d shift of the summed per-member penalty: 1 per member, whatever the estimator.
    assert float(jax.grad(ours)(0.0)) == pytest.approx(2.0, abs=1e-5)
    assert float(jax.grad(three_values)(0.0)) == pytest.approx(2.0, abs=1e-5)
    if num_samples > 1:  # more actions in the log-sum-exp: a larger value, the same push
        assert float(ours(0.0)) > float(three_values(0.0))


def test_a_zero_temperature_rate_keeps_alpha_where_it_starts(toy_hopper_dataset):
    """A fixed temperature (MOBILE's official hopper-medium configs: alpha 0.2, no tuning) is
    init_alpha with alpha_lr 0: alpha stays exactly there while the actor moves; with a rate it
    moves."""
    from offrl_jax.data import sample_batch

    data = toy_hopper_dataset
    for rate, moves in ((0.0, False), (1e-2, True)):
        agent = sac.Agent(sac.Config(hidden_dims=(16, 16), init_alpha=0.2, alpha_lr=rate),
                          HOPPER.obs_dim, HOPPER.act_dim)
        state = agent.init(jax.random.PRNGKey(0))
        actor, start = state.actor_params, float(state.log_alpha)
        assert float(jnp.exp(state.log_alpha)) == pytest.approx(0.2)
        update = jax.jit(agent.update)
        for i in range(5):
            batch = sample_batch(data, jax.random.PRNGKey(10 + i), 32)
            state, metrics = update(state, batch, jax.random.PRNGKey(i))
        assert (float(state.log_alpha) != start) == moves, rate
        assert float(metrics["alpha"]) == pytest.approx(0.2, rel=0.2)
        moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), actor,
                                       state.actor_params)
        assert max(jax.tree_util.tree_leaves(moved)) > 0.0
