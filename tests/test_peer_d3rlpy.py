"""The d3rlpy peer driver (benchmarks/peer_d3rlpy.py) without d3rlpy: its episodes from the
suite's rows, its settings from the suite's configs, its records and evaluation episodes the
suite's, and its resume per seed. Tests that need d3rlpy skip without it."""

import dataclasses
import json
import sys

import jax
import numpy as np
import pytest

from benchmarks import peer_d3rlpy as peer
from offrl_jax.algorithms.registry import get_algorithm
from offrl_jax.data import Dataset, episode_returns, episodes_to_arrays, find_task_dataset
from offrl_jax.data.toy import toy_episodes
from offrl_jax.evaluation import EvalResult, Evaluator
from offrl_jax.generation.versions import task_generated_file
from offrl_jax.tasks import get_env_spec, get_task
from offrl_jax.training.loop import TrainConfig, Trainer

TASK = "hopper-medium-replay"


def hand_made(lengths=(3, 2, 4, 1), endings=("terminal", "timeout", "none", "both")):
    """Four episodes ending in a terminal, a timeout, nothing (found by the discontinuity)
    and both flags: 10 rows."""
    arrays = episodes_to_arrays(toy_episodes("hopper", list(lengths), list(endings), seed=1))
    return Dataset.from_arrays(**arrays, env="hopper")


def d3rlpy_transitions(arrays):
    """The transitions d3rlpy reads from MDPDataset arrays (its documented episode rules):
    episodes end at terminals or timeouts; an episode of T rows gives T transitions when it
    ends in a terminal, else T - 1; the next observation is the following row's (zeros after
    a terminal)."""
    out, start = [], 0
    ends = np.flatnonzero((arrays["terminals"] > 0) | (arrays["timeouts"] > 0))
    for end in ends:
        terminated = arrays["terminals"][end] > 0
        for i in range(start, end + 1 if terminated else end):
            last = terminated and i == end
            out.append({"observation": arrays["observations"][i],
                        "action": arrays["actions"][i], "reward": arrays["rewards"][i],
                        "next_observation": (np.zeros_like(arrays["observations"][i]) if last
                                             else arrays["observations"][i + 1]),
                        "terminal": float(last)})
        start = end + 1
    return out


def test_every_row_is_one_d3rlpy_transition():
    dataset = hand_made()
    data = dataset.to_numpy()
    arrays = peer.mdp_arrays(dataset)
    # Two episodes end without a terminal (timeout, unflagged): one added row each.
    assert arrays["observations"].shape == (12, data["observations"].shape[1])
    assert list(arrays["terminals"].nonzero()[0]) == [2, 11]
    assert list(arrays["timeouts"].nonzero()[0]) == [5, 10]
    assert not np.any((arrays["terminals"] > 0) & (arrays["timeouts"] > 0))
    transitions = d3rlpy_transitions(arrays)
    assert len(transitions) == dataset.size
    for row, transition in enumerate(transitions):
        np.testing.assert_array_equal(transition["observation"], data["observations"][row])
        np.testing.assert_array_equal(transition["action"], data["actions"][row])
        assert transition["reward"] == data["rewards"][row]
        assert transition["terminal"] == data["terminals"][row]
        if not data["terminals"][row]:
            np.testing.assert_array_equal(transition["next_observation"],
                                          data["next_observations"][row])
    kept = arrays["rows"] >= 0
    np.testing.assert_array_equal(arrays["rows"][kept], np.arange(dataset.size))
    # The added rows carry no reward: d3rlpy's episode returns are the suite's.
    assert np.all(arrays["rewards"][~kept] == 0)


def test_a_next_observation_unlike_the_following_row_is_an_error():
    arrays = episodes_to_arrays(toy_episodes("hopper", [3, 3], ["none", "timeout"], seed=2))
    arrays["episode_ids"] = np.zeros(6, np.int32)  # one episode across the discontinuity
    with pytest.raises(ValueError, match="next_observations.*1 rows"):
        peer.mdp_arrays(Dataset.from_arrays(**arrays, env="hopper"))


SCHEDULE = TrainConfig(num_updates=200, eval_every=100, eval_episodes=2)


def settings_for(algorithm, dataset, train=SCHEDULE, profile="validate"):
    config = peer.suite_config(algorithm, TASK, profile, train)
    return config, peer.peer_settings(algorithm, config, peer.DataFacts.of(dataset))


def test_settings_are_the_suites_reference_settings():
    dataset = hand_made()
    _, bc = settings_for("bc", dataset)
    assert bc.config == "BCConfig"
    assert bc.values == {"batch_size": 256, "learning_rate": 1e-3,
                         "policy_type": "deterministic"}
    assert bc.encoders == {"encoder_factory": peer.Encoder((256, 256))}

    _, td3bc = settings_for("td3bc", dataset)
    assert td3bc.values["alpha"] == 2.5 and td3bc.values["batch_size"] == 256
    assert td3bc.standardize_observations
    assert (td3bc.values["actor_learning_rate"], td3bc.values["critic_learning_rate"]) == (
        3e-4, 3e-4)
    assert td3bc.values["update_actor_interval"] == 2

    _, iql = settings_for("iql", dataset, TrainConfig(300, 100, 2))
    assert (iql.values["expectile"], iql.values["weight_temp"]) == (0.7, 3.0)
    assert iql.reward_multiplier == pytest.approx(
        1000.0 / np.ptp(episode_returns(dataset)))
    assert iql.actor_cosine_steps == 300  # the suite's total_updates follows the run
    assert not iql.standardize_observations

    _, cql = settings_for("cql", dataset)
    assert cql.values["alpha_learning_rate"] == 0.0  # the suite's fixed weight, no Lagrange
    assert cql.values["conservative_weight"] == 5.0
    assert cql.encoders["critic_encoder_factory"] == peer.Encoder((256, 256, 256))

    _, rebrac = settings_for("rebrac", dataset)
    assert (rebrac.values["actor_beta"], rebrac.values["critic_beta"]) == (0.05, 0.5)
    assert rebrac.values["batch_size"] == 256  # the validate profile's, not the paper's 1024
    assert rebrac.encoders["critic_encoder_factory"].layer_norm
    assert not rebrac.encoders["actor_encoder_factory"].layer_norm


def test_settings_follow_a_changed_suite_config():
    dataset = hand_made()
    config, _ = settings_for("td3bc", dataset)
    changed = dataclasses.replace(config, alpha=1.0, batch_size=128, normalize_states=False,
                                  td3=dataclasses.replace(config.td3, hidden_dims=(64, 64)))
    settings = peer.peer_settings("td3bc", changed, peer.DataFacts.of(dataset))
    assert (settings.values["alpha"], settings.values["batch_size"]) == (1.0, 128)
    assert not settings.standardize_observations
    assert settings.encoders["actor_encoder_factory"] == peer.Encoder((64, 64))
    config, _ = settings_for("iql", dataset)
    settings = peer.peer_settings("iql", dataclasses.replace(config, value_lr=1e-4),
                                  peer.DataFacts.of(dataset))
    assert any(note.startswith("value_lr") for note in settings.not_matched)


def test_settings_describe_themselves_as_json():
    dataset = hand_made()
    for algorithm in peer.MAPPINGS:
        _, settings = settings_for(algorithm, dataset)
        described = settings.describe()
        assert json.loads(json.dumps(described)) == described
        assert described["config"] == settings.config
        assert set(peer.COMMON_NOT_MATCHED) <= set(described["not_matched"])
        assert settings.record_name == f"d3rlpy-{algorithm}"
    with pytest.raises(peer.PeerError, match="mopo.*bc, td3bc, iql, cql, rebrac"):
        peer.peer_settings("mopo", None, peer.DataFacts.of(dataset))


@pytest.fixture(scope="module")
def suite_run():
    """Two seeds (3 and 5) of the suite's BC, one evaluation of two 5-step episodes: its
    records and the episodes' reset seeds."""
    dataset = hand_made(lengths=(40, 30, 50, 20))
    registration = get_algorithm("bc")
    config = registration.make_config(None, {"hidden_dims": (8,), "batch_size": 16})
    trainer = Trainer(registration, config, dataset, get_env_spec("hopper"), [3, 5],
                      TrainConfig(num_updates=2, eval_every=2, eval_episodes=2), log=None)
    trainer.evaluator.max_steps = 5
    carry = trainer.run()
    return carry["records"], trainer._evaluate(carry["state"], 0).reset_seeds


def test_episode_seeds_are_the_suites(suite_run):
    _, reset_seeds = suite_run
    np.testing.assert_array_equal(peer.episode_seeds([3, 5], 0, 2), reset_seeds)


def test_episodes_run_as_the_suites_evaluator():
    """The same policy meets the same episodes, step for step, in both runners."""
    def constant(obs):
        return np.full((obs.shape[0], 3), 0.3, np.float32)

    key_seeds, interval = [3, 5], 1
    evaluator = Evaluator("hopper", lambda params, obs, key, det: constant(obs) + 0 * params,
                          num_episodes=2, max_steps=20)
    eval_key = jax.random.fold_in(jax.random.PRNGKey(key_seeds[0]), 10_000 + interval)
    suite = evaluator(np.zeros((2, 1), np.float32), eval_key)
    episodes = peer.HostEpisodes("hopper", max_steps=20)
    evaluate = peer.suite_evaluation(episodes, key_seeds, 2)
    for index in range(2):
        result = evaluate(constant, index, interval)
        np.testing.assert_allclose(result.returns[0], suite.returns[index], rtol=1e-6)
        np.testing.assert_array_equal(result.lengths[0], suite.lengths[index])
        np.testing.assert_allclose(result.normalized[0], suite.normalized[index], rtol=1e-6)


class FakeAgent:
    """Counts its updates; stops the process (as a kill would) at update ``stop_at``."""

    def __init__(self, seed, stop_at=None):
        self.seed, self.updates, self.stop_at = seed, 0, stop_at

    def update(self):
        self.updates += 1
        if self.updates == self.stop_at:
            raise KeyboardInterrupt
        return {"loss": float(self.seed)}

    def act(self, observations):
        return np.zeros((observations.shape[0], 3), np.float32)


def fake_evaluate(act, index, interval):
    returns = np.array([[100.0 * index + interval, 50.0]])
    return EvalResult(returns, np.array([[7, 9]]), returns / 10.0)


def run_fake(out_dir, train, made, stop=None, seeds=(0, 1)):
    def make_agent(settings, seed):
        made.append(seed)
        return FakeAgent(seed, stop_at=(stop or {}).get(seed))

    timings = {}
    _, settings = settings_for("td3bc", hand_made())
    peer.train_algorithm(settings, train, list(seeds), out_dir, TASK, make_agent,
                         fake_evaluate, on_seed=timings.__setitem__, log=lambda line: None)
    return timings


def read(out_dir):
    path = out_dir / "records" / f"d3rlpy-td3bc__{TASK}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_have_the_suites_fields(tmp_path, suite_run):
    suite_records, _ = suite_run
    run_fake(tmp_path, TrainConfig(4, 2, 2), [])
    records = read(tmp_path)
    suite_fields = ["algorithm", "task", *suite_records[0]]
    assert [list(r) for r in records] == [suite_fields] * 4
    assert {r["algorithm"] for r in records} == {"d3rlpy-td3bc"}
    # As the suite's: ordered by step, then seed; one CSV stream per seed in logs/.
    assert [(r["step"], r["seed"]) for r in records] == [(2, 0), (2, 1), (4, 0), (4, 1)]
    assert records[1]["episode_returns"] == [100.0, 50.0] and records[1]["return"] == 75.0
    assert records[1]["metrics"] == {"loss": 1.0}
    assert sorted(p.name for p in (tmp_path / "logs" / f"d3rlpy-td3bc__{TASK}").iterdir()) == [
        "seed0.csv", "seed1.csv"]


def test_a_finished_seed_is_not_trained_again(tmp_path):
    train = TrainConfig(num_updates=4, eval_every=2, eval_episodes=2)
    made = []
    with pytest.raises(KeyboardInterrupt):  # killed in seed 1's second interval
        run_fake(tmp_path, train, made, stop={1: 3})
    assert made == [0, 1]
    before = read(tmp_path)
    assert [(r["seed"], r["step"]) for r in before] == [(0, 2), (1, 2), (0, 4)]

    made = []
    timings = run_fake(tmp_path, train, made)
    assert made == [1]  # seed 0 finished: not made, not trained
    after = read(tmp_path)
    assert [r for r in after if r["seed"] == 0] == [r for r in before if r["seed"] == 0]
    assert [(r["seed"], r["step"]) for r in after] == [(0, 2), (1, 2), (0, 4), (1, 4)]
    assert list(timings) == [1] and timings[1]["updates"] == 4
    assert timings[1]["updates_per_second"] > 0

    made = []
    run_fake(tmp_path, train, made)
    assert made == []


def test_another_run_in_the_same_directory_is_refused(tmp_path):
    document = {"task": TASK, "data_profile": "validate", "seeds": [0, 1],
                "algorithms": {"td3bc": {"train": {"num_updates": 4}, "d3rlpy": {"a": 1}}}}
    peer.check_same_run(tmp_path, document, document)
    peer.check_same_run(tmp_path, {**document, "algorithms": {}}, document)
    with pytest.raises(peer.PeerError, match="'seeds'"):
        peer.check_same_run(tmp_path, {**document, "seeds": [0]}, document)
    other = {"td3bc": {"train": {"num_updates": 8}, "d3rlpy": {"a": 1}}}
    with pytest.raises(peer.PeerError, match="algorithms.td3bc.train"):
        peer.check_same_run(tmp_path, {**document, "algorithms": other}, document)


def test_without_d3rlpy_one_line_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "d3rlpy", None)  # an import of it raises ImportError
    with pytest.raises(peer.PeerUnavailable) as caught:
        peer.require_d3rlpy()
    message = str(caught.value)
    assert peer.INSTALL_HINT in message and "\n" not in message


def test_a_missing_dataset_is_the_suites_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OFFRL_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("OFFRL_D4RL_DIR", raising=False)
    task = get_task(TASK)
    with pytest.raises(FileNotFoundError) as expected:
        find_task_dataset(task, task_generated_file(task, "validate"))
    assert peer.main(["--task", TASK, "--data-profile", "validate",
                      "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == f"peer_d3rlpy: {expected.value.args[0]}"
    assert not (tmp_path / "out").exists()


def test_d3rlpy_reads_the_rows_as_the_suites_transitions():
    pytest.importorskip("d3rlpy")
    dataset = hand_made()
    data = dataset.to_numpy()
    buffer = peer.make_mdp_dataset(dataset)
    assert buffer.transition_count == dataset.size
    picker = buffer.transition_picker
    row = 0
    for episode in buffer.episodes:
        for index in range(episode.transition_count):
            transition = picker(episode, index)
            np.testing.assert_array_equal(transition.observation, data["observations"][row])
            assert transition.terminal == data["terminals"][row]
            if not data["terminals"][row]:
                np.testing.assert_array_equal(transition.next_observation,
                                              data["next_observations"][row])
            row += 1
    assert row == dataset.size


def test_d3rlpy_takes_every_mapped_setting():
    pytest.importorskip("d3rlpy")
    dataset = hand_made()
    mean, std = peer.observation_moments(dataset)
    for algorithm in peer.MAPPINGS:
        _, settings = settings_for(algorithm, dataset)
        config = peer.d3rlpy_config(settings, mean, std)
        for name, value in settings.values.items():
            assert getattr(config, name) == value, (algorithm, name)
