"""10%BC: the kept episodes on data with known returns, under the vmapped trainer, and learning
beyond BC."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from bandit import bandit_dataset, compiled_program, regret, train_rows

from offrl_jax.algorithms import bc10
from offrl_jax.algorithms.registry import get_algorithm
from offrl_jax.data import Dataset
from offrl_jax.tasks import get_env_spec

HOPPER = get_env_spec("hopper")


def ranked_dataset(returns, lengths, trailing_cut=False):
    """Episodes of the given returns (spread evenly over their rows) and lengths; every row's
    first observation is its row index. The last episode ends without a flag with
    ``trailing_cut``. Returns ``(dataset, episode of each row)``."""
    episode = np.repeat(np.arange(len(lengths)), lengths)
    n = episode.size
    rewards = np.asarray(returns, np.float32)[episode] / np.asarray(lengths)[episode]
    obs = np.zeros((n, HOPPER.obs_dim), np.float32)
    obs[:, 0] = np.arange(n)
    ends = np.r_[episode[1:] != episode[:-1], True]
    terminals = ends.astype(np.float32)
    if trailing_cut:
        terminals[-1] = 0.0
    data = Dataset.from_arrays(observations=obs, actions=np.zeros((n, HOPPER.act_dim)),
                               rewards=rewards, next_observations=obs, terminals=terminals,
                               timeouts=np.zeros(n), episode_ids=episode)
    return data, episode


def test_the_sampled_rows_are_exactly_the_top_tenth_of_episodes():
    rng = np.random.default_rng(0)
    returns = rng.permutation(np.arange(30, dtype=np.float32) * 10)  # 30 episodes: keep 3
    lengths = rng.integers(2, 9, size=30)
    data, episode = ranked_dataset(returns, lengths)
    best = set(np.argsort(-returns)[:3])
    expected = set(np.flatnonzero(np.isin(episode, list(best))))

    algorithm = bc10.BC10(bc10.BC10Config(hidden_dims=(8,), batch_size=64), HOPPER)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)  # three seeds, as the trainer runs them
    state = jax.jit(jax.vmap(algorithm.init, in_axes=(0, None)))(keys, data)
    assert state.rows.shape == (3, data.size)
    np.testing.assert_array_equal(np.asarray(state.num_rows), len(expected))

    sample = jax.jit(jax.vmap(lambda s, k: bc10.sample_rows(data, s.rows, s.num_rows, k, 64)))
    seen = set()
    for i in range(40):
        batch = sample(state, jax.random.split(jax.random.PRNGKey(i), 3))
        seen |= set(np.asarray(batch.observations[..., 0]).astype(int).ravel().tolist())
    assert seen == expected
    kept_obs = np.asarray(data.observations)[sorted(expected)]
    np.testing.assert_allclose(np.asarray(state.obs_mean[0]), kept_obs.mean(0), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(state.obs_std[0]), kept_obs.std(0) + 1e-3,
                               rtol=1e-5)


@pytest.mark.parametrize("trailing_cut", [False, True])
def test_a_trailing_unfinished_episode_is_never_kept(trailing_cut):
    # 10 episodes, the last one best; cut short, it is dropped and 9 remain: floor(0.9) -> 1.
    returns = [1, 2, 3, 4, 5, 6, 7, 8, 9, 100]
    data, episode = ranked_dataset(returns, [3] * 10, trailing_cut=trailing_cut)
    kept = np.asarray(jax.jit(bc10.top_episode_mask, static_argnums=(1, 2))(data, 0.1, 1.0))
    np.testing.assert_array_equal(np.flatnonzero(kept),
                                  np.flatnonzero(episode == (8 if trailing_cut else 9)))


def test_the_fraction_counts_episodes_and_the_discount_ranks_them():
    # Episode 0: return 10 over 10 rows; episode 1: 9 in its first row. Undiscounted, 0 wins;
    # at discount 0.5 episode 1 (9 > 1.998) does. Half of 4 episodes keeps 2, whatever their
    # lengths.
    data, episode = ranked_dataset([10, 9, 0, 0], [10, 1, 1, 1])
    top = jax.jit(bc10.top_episode_mask, static_argnums=(1, 2))
    assert set(episode[np.asarray(top(data, 0.25, 1.0))]) == {0}
    assert set(episode[np.asarray(top(data, 0.25, 0.5))]) == {1}
    assert set(episode[np.asarray(top(data, 0.5, 1.0))]) == {0, 1}
    assert set(episode[np.asarray(top(data, 0.01, 1.0))]) == {0}  # at least one episode


def test_bc10_beats_bc_on_data_mixing_good_and_bad_episodes():
    # One-step episodes, half near-optimal and half uniform: the best tenth are all good.
    data, w = bandit_dataset()
    regrets = {}
    for name, overrides in (("bc", {"hidden_dims": (64, 64), "learning_rate": 1e-3}),
                            ("bc10", {"hidden_dims": (64, 64), "learning_rate": 1e-3})):
        registration = get_algorithm(name)
        config = registration.make_config(overrides={**overrides, "batch_size": 128})
        init, interval = compiled_program(registration, config, HOPPER, data, 2, 500)
        keys = jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)])
        states, _, failed = train_rows(interval, init(keys, data), data, keys, 2)
        assert not failed.any()
        made = registration.make(config, HOPPER)
        final = jax.tree_util.tree_map(lambda x: x[0], states[-1])
        regrets[name] = regret(made.act, final, w)
    assert regrets["bc10"] < 0.5 * regrets["bc"], regrets
