import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offrl_jax.evaluation import Evaluator
from offrl_jax.tasks import ENV_SPECS, normalized_score

HOPPER = ENV_SPECS["hopper"]


def linear_policy(params, obs, key, deterministic):
    """A tanh-linear policy; a stochastic draw adds noise so `deterministic` is honoured."""
    mean = jnp.tanh(obs @ params["w"] + params["b"])
    noise = 0.3 * jax.random.normal(key, mean.shape)
    return mean if deterministic else jnp.clip(mean + noise, -1.0, 1.0)


def seed_params(num_seeds, key=0):
    k1, k2 = jax.random.split(jax.random.PRNGKey(key))
    return {
        "w": 0.3 * jax.random.normal(k1, (num_seeds, HOPPER.obs_dim, HOPPER.act_dim)),
        "b": 0.1 * jax.random.normal(k2, (num_seeds, HOPPER.act_dim)),
    }


def manual_return(params_one_seed, seed, max_steps):
    """The same policy run by hand in one Gymnasium environment: the known answer."""
    env = HOPPER.make_gym_env()
    obs, _ = env.reset(seed=int(seed))
    total, steps = 0.0, 0
    for _ in range(max_steps):
        action = np.tanh(obs @ np.asarray(params_one_seed["w"], np.float64)
                         + np.asarray(params_one_seed["b"], np.float64))
        obs, reward, term, trunc, _ = env.step(action)
        total, steps = total + reward, steps + 1
        if term or trunc:
            break
    return total, steps


def test_host_evaluation_matches_manual_rollouts():
    params = seed_params(3)
    evaluator = Evaluator("hopper", linear_policy, num_episodes=2, max_steps=200)
    result = evaluator(params, jax.random.PRNGKey(1))
    assert result.returns.shape == result.lengths.shape == (3, 2)
    assert result.reset_seeds.shape == (3, 2)
    for s in range(3):
        one = jax.tree_util.tree_map(lambda x, s=s: x[s], params)
        for e in range(2):
            expected_return, expected_len = manual_return(one, result.reset_seeds[s, e], 200)
            # float32 policy on device vs float64 by hand: small differences in actions.
            assert result.lengths[s, e] == expected_len
            assert result.returns[s, e] == pytest.approx(expected_return, rel=1e-3, abs=1e-2)
    np.testing.assert_allclose(result.normalized, normalized_score("hopper", result.returns))
    np.testing.assert_allclose(result.seed_scores, result.normalized.mean(axis=1))
    # Distinct seeds' parameters give distinct behaviour.
    assert len(np.unique(np.round(result.returns[:, 0], 3))) == 3


def test_evaluator_compiles_once_and_is_reproducible():
    traces = []

    def counting_policy(params, obs, key, deterministic):
        traces.append(1)  # runs only while tracing
        return linear_policy(params, obs, key, deterministic)

    evaluator = Evaluator("hopper", counting_policy, num_episodes=2, max_steps=30)
    params = seed_params(2)
    first = evaluator(params, jax.random.PRNGKey(0))
    second = evaluator(seed_params(2, key=5), jax.random.PRNGKey(1))
    third = evaluator(params, jax.random.PRNGKey(0))
    assert len(traces) == 1
    np.testing.assert_array_equal(first.returns, third.returns)
    assert not np.array_equal(first.returns, second.returns)


def test_stochastic_evaluation_differs_from_deterministic():
    params = seed_params(1)
    key = jax.random.PRNGKey(3)
    mean_run = Evaluator("hopper", linear_policy, num_episodes=2, max_steps=50)(params, key)
    noisy_run = Evaluator("hopper", linear_policy, num_episodes=2, max_steps=50,
                          deterministic=False)(params, key)
    np.testing.assert_array_equal(mean_run.reset_seeds, noisy_run.reset_seeds)
    assert not np.allclose(mean_run.returns, noisy_run.returns)


def test_halfcheetah_episodes_run_to_the_step_limit():
    spec = ENV_SPECS["halfcheetah"]

    def zero_policy(params, obs, key, deterministic):
        return jnp.zeros((obs.shape[0], spec.act_dim)) * params

    result = Evaluator("halfcheetah", zero_policy, num_episodes=3, max_steps=40)(
        jnp.zeros((2,)), jax.random.PRNGKey(0))
    np.testing.assert_array_equal(result.lengths, np.full((2, 3), 40))


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        Evaluator("hopper", linear_policy, backend="gpu")


@pytest.mark.parametrize("deterministic", [True, False])
def test_groups_of_rows_meet_the_episodes_of_one_group_alone(deterministic):
    # A sweep's values x seeds rows: each group of seeds gets the reset seeds and policy keys
    # that the same seeds get when evaluated alone.
    evaluator = Evaluator("hopper", linear_policy, num_episodes=2, max_steps=40,
                          deterministic=deterministic)
    one, other = seed_params(2), seed_params(2, key=7)
    rows = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), one, other)
    key = jax.random.PRNGKey(4)
    grouped = evaluator(rows, key, groups=2)
    alone = [evaluator(one, key), evaluator(other, key)]
    np.testing.assert_array_equal(grouped.reset_seeds,
                                  np.concatenate([r.reset_seeds for r in alone]))
    # Same program, groups swapped: each group's episodes are the same, bit for bit.
    swapped = evaluator(jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), other, one),
                        key, groups=2)
    np.testing.assert_array_equal(swapped.returns[:2], grouped.returns[2:])
    np.testing.assert_array_equal(swapped.returns[2:], grouped.returns[:2])
    # Alone is another compilation (2 rows, not 4): actions one float32 rounding apart, which
    # 40 hopper steps grow to ~1e-5 at most (MJX vs Gymnasium parity); other episodes or keys
    # change returns by percents.
    np.testing.assert_allclose(grouped.returns, np.concatenate([r.returns for r in alone]),
                               rtol=1e-3)
    # Without groups the second pair of rows meets other episodes.
    ungrouped = evaluator(rows, key)
    assert not np.array_equal(ungrouped.reset_seeds[2:], alone[1].reset_seeds)
    with pytest.raises(ValueError, match="do not split into 3 equal groups"):
        evaluator(rows, key, groups=3)
