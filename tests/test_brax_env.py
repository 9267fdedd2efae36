"""brax's ``Env`` interface over the MJX tasks (offrl_jax/envs/brax_env.py) and the behaviour SAC
trained by brax's SAC (offrl_jax/generation/brax_behaviour.py).

The adapter's own tests run without brax (CI does not install it): ``BraxEnv`` then returns a
``State`` of brax's fields. The tests marked ``needs_brax`` run where the ``brax`` extra is
installed: brax's training wrappers on the adapter, our actor inside brax's SAC networks, and a
tiny brax SAC run on the MJX hopper whose snapshots ``export-behaviour`` writes and our loader
reads.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offrl_jax.envs.brax_env import HAVE_BRAX, BraxEnv, State
from offrl_jax.generation.brax_behaviour import DeviceSchedule
from offrl_jax.generation.data_profiles import get_data_profile

needs_brax = pytest.mark.skipif(not HAVE_BRAX, reason="brax not installed (the brax extra)")

HORIZON = 60  # random-action hoppers fall well within this
N_ROWS = 3  # two rows from resets, one marked terminated at the start


@functools.cache
def _hopper_env() -> BraxEnv:
    return BraxEnv("hopper")


@functools.cache
def _adapter_and_mjx_rollouts() -> dict:
    """One compiled program: the adapter and MjxEnv from the same keys with the same actions."""
    env = _hopper_env()
    mjx_env = env.mjx_env
    actions = np.random.default_rng(0).uniform(
        -1.0, 1.0, (N_ROWS, HORIZON, env.action_size)).astype(np.float32)
    keys = jax.random.split(jax.random.PRNGKey(5), N_ROWS)
    start_done = np.arange(N_ROWS) == N_ROWS - 1

    def rollout(key, start_done, actions):
        adapter, reference = env.reset(key), mjx_env.reset(key)
        adapter = adapter.replace(done=jnp.where(start_done, 1.0, adapter.done))
        reference = reference.replace(done=start_done)

        def body(carry, action):
            adapter, reference = env.step(carry[0], action), mjx_env.step(carry[1], action)
            return (adapter, reference), (adapter.obs, adapter.reward, adapter.done,
                                          reference.obs, reference.reward, reference.done)

        _, per_step = jax.lax.scan(body, (adapter, reference), actions)
        return (adapter.obs, reference.obs, adapter.reward, adapter.done, *per_step)

    names = ("obs0", "mjx_obs0", "reward0", "done0", "obs", "reward", "done", "mjx_obs",
             "mjx_reward", "mjx_done")
    out = jax.device_get(jax.jit(jax.vmap(rollout))(keys, start_done, actions))
    return dict(zip(names, out, strict=True))


def test_adapter_reset_and_step_equal_mjx_env():
    r = _adapter_and_mjx_rollouts()
    np.testing.assert_array_equal(r["obs0"], r["mjx_obs0"])
    np.testing.assert_array_equal(r["reward0"], 0.0)
    np.testing.assert_array_equal(r["obs"], r["mjx_obs"])
    np.testing.assert_array_equal(r["reward"], r["mjx_reward"])
    np.testing.assert_array_equal(r["done"], r["mjx_done"].astype(np.float32))
    chex.assert_type([r["obs"], r["reward"], r["done"]], [np.float32] * 3)
    chex.assert_shape(r["obs"], (N_ROWS, HORIZON, 11))


def test_adapter_is_the_raw_task_without_time_limit_or_reset():
    """Termination as gym v4, sticky and frozen: brax's wrappers, not the adapter, reset."""
    r = _adapter_and_mjx_rollouts()
    done, reward, obs = r["done"], r["reward"], r["obs"]
    for row in range(N_ROWS - 1):
        assert done[row, -1] == 1.0, "random-action hoppers should fall within HORIZON steps"
        first = int(np.argmax(done[row]))
        assert first > 0 and done[row, first:].all()
        np.testing.assert_array_equal(reward[row, first + 1:], 0.0)
        np.testing.assert_array_equal(obs[row, first + 1:],
                                      np.broadcast_to(obs[row, first], obs[row, first + 1:].shape))
    # A state passed in as done stays as it was.
    np.testing.assert_array_equal(done[-1], 1.0)
    np.testing.assert_array_equal(reward[-1], 0.0)
    np.testing.assert_array_equal(obs[-1], np.broadcast_to(r["obs0"][-1], obs[-1].shape))


def test_adapter_interface():
    env = _hopper_env()
    assert (env.observation_size, env.action_size, env.backend) == (11, 3, "mjx")
    assert env.episode_length == 1000 and env.unwrapped is env
    state = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
    assert isinstance(state, State) and state.metrics == {} and state.info == {}
    after = jax.eval_shape(env.step, state, jax.ShapeDtypeStruct((3,), jnp.float32))
    for s in (state, after):
        chex.assert_shape([s.obs, s.reward, s.done], [(11,), (), ()])
        chex.assert_type([s.obs, s.reward, s.done], [jnp.float32] * 3)
        assert s.pipeline_state.qpos.shape == (env.mjx_env.mj_model.nq,)
    if HAVE_BRAX:
        from brax.envs.base import Env

        assert isinstance(env, Env)


def test_device_schedule_follows_the_profile():
    full = DeviceSchedule.of("hopper", get_data_profile("full"), num_envs=100)
    assert (full.num_timesteps, full.start_steps, full.eval_every, full.num_evals) == \
        (1_000_000, 10_000, 10_000, 100)
    tiny = DeviceSchedule.of("hopper", get_data_profile("tiny"), num_envs=50)
    assert (tiny.start_steps, tiny.eval_every, tiny.num_evals) == (500, 500, 3)
    with pytest.raises(ValueError, match="not a multiple of num_envs = 128"):
        DeviceSchedule.of("hopper", get_data_profile("full"), num_envs=128)


@pytest.mark.skipif(HAVE_BRAX, reason="checks the message shown where brax is missing")
def test_device_backend_without_brax_names_the_extra(tmp_path):
    from offrl_jax.cli import main

    with pytest.raises(ImportError, match=r"\.\[brax\]"):
        main(["data", "train-behaviour", "--env", "hopper", "--profile", "tiny", "--backend",
              "device", "--num-envs", "50", "--work-dir", str(tmp_path)])


@needs_brax
def test_brax_training_wrappers_add_the_time_limit_and_resets():
    from brax.envs import training

    episode_length = 5
    wrapped = training.wrap(_hopper_env(), episode_length=episode_length)

    def run(keys):
        first = wrapped.reset(keys)

        def body(state, _):
            state = wrapped.step(state, jnp.zeros((keys.shape[0], 3)))
            return state, (state.obs, state.done, state.info["truncation"], state.info["steps"])

        return first.obs, jax.lax.scan(body, first, None, length=episode_length + 2)[1]

    first_obs, (obs, done, truncation, steps) = jax.device_get(
        jax.jit(run)(jax.random.split(jax.random.PRNGKey(0), 2)))
    # A standing hopper with zero torques does not fall in 5 steps: the limit ends the episode.
    np.testing.assert_array_equal(done[:, 0], [0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(truncation[:, 0], [0, 0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(steps[:, 0], [1, 2, 3, 4, 5, 1, 2])
    np.testing.assert_array_equal(obs[episode_length - 1], first_obs)  # restarted


@needs_brax
def test_brax_actor_is_ours():
    """brax's policy network with our distribution: same mean, std, samples and log-probs."""
    from offrl_jax.generation.brax_behaviour import actor_params_from_brax, make_sac_networks
    from offrl_jax.networks import TanhGaussianPolicy, sample_tanh_gaussian

    networks = make_sac_networks(11, 3, hidden_layer_sizes=(32, 32))
    params = networks.policy_network.init(jax.random.PRNGKey(0))
    # Push some log-stds past both clip bounds (-5, 2).
    last = params["params"]["hidden_2"]
    last["bias"] = last["bias"].at[3:].set(jnp.array([-9.0, 0.3, 6.0]))
    obs = jax.random.normal(jax.random.PRNGKey(1), (16, 11))
    logits = networks.policy_network.apply(None, params, obs)
    mean, log_std = TanhGaussianPolicy((32, 32), 3).apply(actor_params_from_brax(params), obs)
    chex.assert_trees_all_close(mean, logits[:, :3], atol=1e-6)
    dist = networks.parametric_action_distribution
    chex.assert_trees_all_close(jnp.exp(log_std), dist.create_dist(logits).scale, rtol=1e-6)
    assert float(log_std.min()) == -5.0 and float(log_std.max()) == 2.0

    key = jax.random.PRNGKey(2)
    pre_tanh = dist.sample_no_postprocessing(logits, key)
    ours, our_log_prob = sample_tanh_gaussian(mean, log_std, key)
    chex.assert_trees_all_close(ours, dist.postprocess(pre_tanh), atol=1e-6)
    chex.assert_trees_all_close(our_log_prob, dist.log_prob(logits, pre_tanh), rtol=1e-5,
                                atol=1e-5)


@needs_brax
def test_brax_sac_trains_on_mjx_hopper_and_exports(tmp_path, monkeypatch):
    """brax's SAC at tiny size (1,500 env steps, 2x32 networks, episodes cut at 100 steps):
    checkpoints on the host path's schedule, brax's initial actor reproduced, the run read by
    ``export-behaviour``, and the exported actor loaded by our loader and acting."""
    from brax.training.agents.sac import train as brax_sac

    from offrl_jax import policies
    from offrl_jax.generation import brax_behaviour, export
    from offrl_jax.generation.behaviour import train_behaviour
    from offrl_jax.tasks import normalized_score

    initial = []
    original_init = brax_sac._init_training_state

    def spy(**kwargs):
        state = original_init(**kwargs)
        initial.append(jax.tree_util.tree_map(lambda x: np.asarray(x)[0], state.policy_params))
        return state

    monkeypatch.setattr(brax_sac, "_init_training_state", spy)
    tiny = get_data_profile("tiny")
    work = tmp_path / "work"
    run = brax_behaviour.train_behaviour_device("hopper", tiny, seed=3, work_dir=work,
                                                num_envs=50, episode_length=100,
                                                progress=False)
    assert [c.env_steps for c in run.checkpoints] == [500, 1000, 1500]
    assert all(np.isfinite(c.mean_return) for c in run.checkpoints)
    networks = brax_behaviour.make_sac_networks(11, 3, hidden_layer_sizes=(32, 32))
    chex.assert_trees_all_equal(
        brax_behaviour.initial_policy_params(networks, seed=3), initial[0])
    chex.assert_trees_all_close(run.checkpoints[0].actor_params,
                                brax_behaviour.actor_params_from_brax(initial[0]))
    assert run.checkpoints[1].digest() != run.checkpoints[2].digest()  # it trained
    # The last brax checkpoint, read through brax's own files, is the last snapshot.
    last = sorted((work / "brax_checkpoints").iterdir())[-1]
    chex.assert_trees_all_close(brax_behaviour.actor_from_brax_checkpoint(last),
                                run.checkpoints[-1].actor_params)

    # A finished run is read back, not retrained; the host path refuses its directory.
    again = brax_behaviour.train_behaviour_device("hopper", tiny, seed=3, work_dir=work,
                                                  num_envs=50, episode_length=100,
                                                  progress=False)
    assert [c.digest() for c in again.checkpoints] == [c.digest() for c in run.checkpoints]
    with pytest.raises(ValueError, match="recipe"):
        train_behaviour("hopper", tiny, seed=3, work_dir=work, progress=False)

    recipe, checkpoints = export.read_behaviour_run(work)
    assert recipe["backend"].startswith("device") and recipe["num_envs"] == 50
    target = float(normalized_score("hopper", checkpoints[0]["mean_return"]))
    export.export_behaviour("hopper", work, root=tmp_path, replay_every=500, eval_episodes=2,
                            candidates=2, medium_target=target, log=lambda line: None)
    expert = policies.load_role("hopper", "expert", root=tmp_path)
    state = export.actor_state("hopper", expert, hidden_dims=(32, 32))
    agent = export.actor_agent("hopper", (32, 32))
    actions = agent.act(state, jnp.zeros((4, 11)), jax.random.PRNGKey(0), deterministic=False)
    chex.assert_shape(actions, (4, 3))
    assert np.all(np.abs(np.asarray(actions)) < 1.0)

