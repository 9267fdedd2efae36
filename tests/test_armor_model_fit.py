"""ARMOR on hopper-shaped data: the adversarial model stays in the version space (its reward
error on real data stays within 1.5x of the pretrained model's), loss (4)'s beta scales the
Bellman error and the model fit together, and pi_ref is scored beside the policy at every
evaluation, into the records, the logs and the summary."""

import csv
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offrl_jax.algorithms import armor
from offrl_jax.data import read_d4rl_hdf5
from offrl_jax.evaluation import Evaluator
from offrl_jax.generation.generate import generate_env_datasets
from offrl_jax.parts import dynamics, sac
from offrl_jax.results.records import write_scalar_logs
from offrl_jax.results.relative import reference_markdown
from offrl_jax.tasks import get_env_spec
from offrl_jax.training import Trainer
from offrl_jax.training.loop import TrainConfig, make_interval_fn

HOPPER = get_env_spec("hopper")

# Hopper-sized (11 observations, 3 actions), gamma 0.99, small networks; the slow actor rate is
# raised so the policy moves within a test's few hundred updates. The model is fitted briefly:
# the drift under test is the adversary's, from wherever pretraining left the model.
HOPPER_ARMOR = armor.ArmorConfig(
    agent=sac.Config(hidden_dims=(64, 64), actor_lr=1e-5, critic_lr=5e-4, alpha_lr=5e-4,
                     tau=5e-3),
    dynamics=dynamics.Config(members=1, elites=1, bootstrap=False, hidden_dims=(64, 64),
                             weight_decays=(1e-5, 1e-5, 1e-5), max_epochs=20),
    batch_size=64, model_batch_size=64, warmstart_steps=300, model_buffer_capacity=4096)


@pytest.fixture(scope="module")
def hopper_replay(tmp_path_factory):
    """1,000 transitions of real hopper dynamics: the tiny generation profile's medium-replay
    data (a short SAC run's replay)."""
    out = tmp_path_factory.mktemp("hopper-data")
    paths = generate_env_datasets("hopper", "tiny", kinds=["medium-replay"], out_dir=out,
                                  progress=False)
    return read_d4rl_hdf5(paths["medium-replay"])


def reward_errors(config, dataset, updates=400, intervals=2):
    """The adversarial model's and the pretrained model's reward MSE on real minibatches, per
    interval of ``updates // intervals`` updates."""
    algorithm = armor.ARMOR(config, HOPPER)
    state = jax.jit(algorithm.init)(jax.random.PRNGKey(0), dataset)
    interval = jax.jit(make_interval_fn(algorithm, updates // intervals))
    failed, out = jnp.zeros((), bool), []
    for i in range(intervals):
        state, failed, metrics = interval(state, failed, dataset, jax.random.PRNGKey(i))
        out.append((float(metrics["model_reward_error"]),
                    float(metrics["fitted_model_reward_error"])))
    assert not bool(failed)
    return out


def test_adversarial_reward_stays_near_the_data_on_hopper_shaped_data(hopper_replay):
    """The default anchor (the reward's likelihood at the pretrained model's own error, lambda
    inside beta's bracket) keeps the adversarial model's reward MSE on real data within 1.5x of
    the pretrained model's through training. The poster's (R_M - r)^2 / V_max^2 with the same
    weights lets the reward head follow the critic instead (V_max = max|r| / (1 - gamma) makes
    the anchor 10^4 times weaker than at gamma = 0): measured here, 2.6x the pretrained error
    after 200 updates and 6.6x after 800."""
    for adversarial, fitted in reward_errors(HOPPER_ARMOR, hopper_replay):
        assert adversarial <= 1.5 * fitted, (adversarial, fitted)
    poster = dataclasses.replace(HOPPER_ARMOR, model_fit="vmax")
    drift = reward_errors(poster, hopper_replay)
    assert drift[-1][0] > 2.0 * drift[-1][1], drift


def test_beta_weighs_bellman_error_and_model_fit_together():
    """Loss (4): l = L + beta (E^w + lambda E_D). Scaling beta scales the fit term with the
    Bellman term: d l / d lambda = beta * E_D."""
    spec = get_env_spec("hopper")
    config = dataclasses.replace(HOPPER_ARMOR, warmstart_steps=0)
    algorithm = armor.ARMOR(config, spec)
    rng = np.random.default_rng(0)
    n = 256
    obs = rng.normal(size=(n, 11)).astype(np.float32)
    dataset = _arrays_dataset(obs, rng)
    state = jax.jit(algorithm.init)(jax.random.PRNGKey(0), dataset)
    real = jax.tree_util.tree_map(lambda x: x[:64], dataset)
    state = algorithm.expand_model_data(state, real.observations, jax.random.PRNGKey(1),
                                        jnp.asarray(True))
    batch = algorithm.adversary_batch(state, real, jax.random.PRNGKey(2))

    def loss(beta, fit_weight):
        return algorithm.adversary_loss(state, state.agent.critic_params, state.model.params,
                                        batch, jax.random.PRNGKey(3), beta, fit_weight)[0]

    fit = armor.model_fit(state.model, state.model.params, batch.real,
                          state.reward_fit_scale)[0]
    for beta in (0.5, 1.0):  # below 1 the loss is not divided by beta
        slope = float(jax.grad(loss, argnums=1)(beta, 1.0))
        np.testing.assert_allclose(slope, 2 * beta * float(fit), rtol=1e-4)  # twin critics
    np.testing.assert_allclose(float(jax.grad(loss, argnums=1)(3.0, 1.0)),
                               2 * float(fit), rtol=1e-4)  # divided by beta above 1


def _arrays_dataset(obs, rng):
    from offrl_jax.data import Dataset

    n = obs.shape[0]
    ends = np.zeros(n, np.float32)
    ends[99::100] = 1.0
    return Dataset.from_arrays(
        observations=obs, actions=rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        rewards=rng.normal(1.0, 0.3, n).astype(np.float32),
        next_observations=(obs + 0.1 * rng.normal(size=obs.shape)).astype(np.float32),
        terminals=np.zeros(n, np.float32), timeouts=ends, episode_ids=np.arange(n) // 100)


def test_fitted_reward_scale_is_half_the_inverse_of_the_pretrained_error(toy_hopper_dataset):
    """reward_fit_scale = 1 / (2 mse) of the pretrained model on the data sample, so the reward
    term at the pretrained model is 1/2 per row (the Gaussian NLL at its own noise level)."""
    config = dataclasses.replace(HOPPER_ARMOR, warmstart_steps=0,
                                 fitted_error_samples=100_000)
    algorithm = armor.ARMOR(config, HOPPER)
    state = jax.jit(algorithm.init)(jax.random.PRNGKey(0), toy_hopper_dataset)
    mse = armor.fitted_reward_error(state.model, toy_hopper_dataset, jax.random.PRNGKey(5),
                                    100_000)
    np.testing.assert_allclose(float(state.reward_fit_scale), 0.5 / float(mse), rtol=0.05)
    with pytest.raises(ValueError, match="model_fit must be one of fitted, vmax, nll"):
        armor.ArmorConfig(model_fit="mse")


def test_reference_policy_is_scored_beside_the_policy(toy_hopper_dataset, tmp_path):
    """Every ARMOR record carries pi_ref's evaluation on the same episodes as the policy's: it
    equals an evaluation of reference_act with the same evaluator settings and key; the CSV
    logs carry pi_ref's score and the paired difference. Algorithms without a reference
    policy carry none."""
    from offrl_jax.algorithms.registry import get_algorithm

    registration = get_algorithm("armor")
    config = dataclasses.replace(HOPPER_ARMOR, warmstart_steps=20,
                                 dynamics=dataclasses.replace(HOPPER_ARMOR.dynamics,
                                                              max_epochs=2))
    train = TrainConfig(num_updates=20, eval_every=10, eval_episodes=2)
    trainer = Trainer(registration, config, toy_hopper_dataset, HOPPER, [0, 1], train,
                      log=None)
    carry = trainer.run()
    records = carry["records"]
    assert len(records) == 4 and all("reference" in r for r in records)
    evaluator = Evaluator("hopper", trainer.algorithm.reference_act, 2)
    expected = evaluator(carry["state"], jax.random.fold_in(jax.random.PRNGKey(0), 10_001))
    last = sorted((r for r in records if r["step"] == 20), key=lambda r: r["seed"])
    for i, r in enumerate(last):
        np.testing.assert_allclose(r["reference"]["episode_returns"], expected.returns[i])
        assert r["reference"]["normalized_score"] == pytest.approx(
            float(expected.normalized[i].mean()))

    paths = write_scalar_logs(tmp_path, "armor", "toy", records)
    with open(paths[0]) as f:
        rows = list(csv.DictReader(f))
    assert [float(r["relative_normalized_score"]) for r in rows] == pytest.approx(
        [float(r["normalized_score"]) - float(r["reference_normalized_score"]) for r in rows])

    bc = Trainer(get_algorithm("bc"), get_algorithm("bc").make_config(),
                 toy_hopper_dataset, HOPPER, [0], train, log=None).run()
    assert all("reference" not in r for r in bc["records"])


def test_reference_table_known_answer():
    """Two seeds, two evaluations: final differences +10 and -2 (mean +4), last-10 mean
    differences +7 and -1 (mean +3); 1 of 4 evaluations below pi_ref."""
    def record(seed, step, score, ref):
        return {"algorithm": "armor", "task": "t", "seed": seed, "step": step,
                "failed": False, "normalized_score": score,
                "reference": {"normalized_score": ref}}

    records = [record(0, 1, 54.0, 50.0), record(0, 2, 60.0, 50.0),
               record(1, 1, 40.0, 40.0), record(1, 2, 38.0, 40.0)]
    text = reference_markdown(records)
    assert "| armor | t | 2 | 49.0 | 45.0 | +4.0 [" in text
    assert "| +3.0 [" in text and "| 1 of 4 |" in text
    assert reference_markdown([{**r, "reference": None} for r in records]) == ""
