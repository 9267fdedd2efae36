import jax.numpy as jnp
import numpy as np
import pytest

from offrl_jax.tasks import (
    DATASET_KINDS,
    ENV_SPECS,
    get_env_spec,
    get_task,
    list_tasks,
    normalized_score,
    parse_task_argument,
    register_task,
)


def test_builtin_tasks_cover_envs_and_kinds():
    names = set(list_tasks())
    for env in ("halfcheetah", "hopper", "walker2d", "ant"):
        for kind in ("random", "medium", "medium-replay", "medium-expert", "expert"):
            task = get_task(f"{env}-{kind}")
            assert (task.env, task.kind) == (env, kind)
            assert task.name in names
    assert len(DATASET_KINDS) == 5


def test_unknown_task_lists_valid_names():
    with pytest.raises(KeyError) as info:
        get_task("hopper-mediumm")
    assert "hopper-medium-replay" in str(info.value) and "walker2d-expert" in str(info.value)
    with pytest.raises(KeyError, match="halfcheetah"):
        get_env_spec("cheetah")


def test_normalized_score_matches_d4rl_constants():
    assert normalized_score("hopper", 3234.3) == pytest.approx(100.0)
    assert normalized_score("hopper", -20.272305) == pytest.approx(0.0)
    mid = (12135.0 + -280.178953) / 2
    assert normalized_score("halfcheetah", mid) == pytest.approx(50.0)
    scores = normalized_score("walker2d", [1.629008, 4592.3])
    np.testing.assert_allclose(scores, [0.0, 100.0])


def test_register_task_from_file_and_directory(tmp_path):
    data_file = tmp_path / "mine.hdf5"
    data_file.write_bytes(b"")
    task = register_task("my-hopper", "hopper", data_file)
    assert (task.fmt, task.env, task.path) == ("d4rl", "hopper", str(data_file.resolve()))
    assert get_task("my-hopper") == task
    minari_dir = tmp_path / "minari-set"
    minari_dir.mkdir()
    parsed = parse_task_argument(f"my-walker=walker2d:{minari_dir}")
    assert parsed.fmt == "minari" and get_task("my-walker") == parsed
    with pytest.raises(ValueError, match="built in"):
        register_task("hopper-medium", "hopper", data_file)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        register_task("missing", "hopper", tmp_path / "nope.hdf5")
    with pytest.raises(ValueError, match="NAME=ENV:PATH"):
        parse_task_argument("x=hopper")


def _random_transitions(env_name, num_transitions, seed=0):
    """Real rollouts with uniform and small random actions: next obs and Gymnasium's verdict."""
    spec = ENV_SPECS[env_name]
    env = spec.make_gym_env()
    rng = np.random.default_rng(seed)
    next_obs, terminated = [], []
    env.reset(seed=seed)
    scale = 1.0
    while len(next_obs) < num_transitions:
        action = scale * rng.uniform(-1.0, 1.0, spec.act_dim)
        obs, _, term, trunc, _ = env.step(action)
        next_obs.append(obs)
        terminated.append(term)
        if term or trunc:
            env.reset(seed=int(rng.integers(1 << 30)))
            scale = rng.choice([1.0, 0.3, 0.05])
    env.close()
    return np.stack(next_obs).astype(np.float32), np.asarray(terminated)


@pytest.mark.parametrize("env_name", ["hopper", "walker2d", "halfcheetah", "ant"])
def test_termination_function_matches_gymnasium(env_name):
    next_obs, terminated = _random_transitions(env_name, 10_000)
    predicted = np.asarray(ENV_SPECS[env_name].termination_fn(jnp.asarray(next_obs)))
    assert predicted.shape == terminated.shape == (10_000,)
    mismatches = np.flatnonzero(predicted != terminated)
    assert mismatches.size == 0, f"{mismatches.size} mismatches, first rows {mismatches[:5]}"
    if env_name in ("hopper", "walker2d"):
        # Random actions make these fall often: the check covers both verdicts.
        assert terminated.sum() > 100 and (~terminated).sum() > 1000


def test_termination_guards():
    hopper = ENV_SPECS["hopper"].termination_fn
    healthy = jnp.array([1.25, 0.0] + [0.0] * 9)
    assert not bool(hopper(healthy))
    # The |x| < 100 guard (docs/algorithms.md#pitfall-5).
    assert bool(hopper(healthy.at[5].set(150.0)))
    assert bool(hopper(healthy.at[5].set(-150.0)))
    assert bool(hopper(healthy.at[3].set(jnp.nan)))
    assert bool(hopper(healthy.at[1].set(0.25)))
    walker = ENV_SPECS["walker2d"].termination_fn
    upright = jnp.zeros(17).at[0].set(1.25)
    assert not bool(walker(upright))
    assert bool(walker(upright.at[0].set(2.1))) and bool(walker(upright.at[1].set(-1.1)))
    batch = jnp.stack([upright, upright.at[0].set(0.5)])
    np.testing.assert_array_equal(np.asarray(walker(batch)), [False, True])
    # HalfCheetah never falls: only a diverged model state (non-finite or |x| >= 100) ends it.
    cheetah = ENV_SPECS["halfcheetah"].termination_fn
    running = jnp.full(17, 30.0)  # fast joint velocities are still alive
    assert not bool(cheetah(running)) and not bool(cheetah(-running))
    assert bool(cheetah(running.at[9].set(100.0))) and bool(cheetah(running.at[9].set(-1e6)))
    assert bool(cheetah(running.at[0].set(jnp.inf)))
