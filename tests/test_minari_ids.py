"""Minari dataset ids as tasks (``--tasks mujoco/hopper/medium-v0``).

The first tests need no ``minari`` package (id parsing, the error messages, specs made from
metadata, the device backend's refusal) and run wherever the suite does. The tests at the end
write tiny datasets with the ``minari`` package itself, in its own format, and are skipped
where it is not installed (``pip install 'offrl_jax[minari]'``).
"""

import json
import sys
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

from offrl_jax.data import load_task_dataset, read_minari
from offrl_jax.data.toy import toy_episodes
from offrl_jax.data.validate import DatasetError
from offrl_jax.evaluation import Evaluator, check_backend
from offrl_jax.tasks import ENV_SPECS, get_task, normalized_score, parse_task_argument
from offrl_jax.tasks.minari import (
    MinariError,
    env_spec_from_metadata,
    is_minari_id,
    local_dataset_dir,
    task_name,
)
from offrl_jax.tasks.specs import register_env_spec


def _gym_spec(gym_id, kwargs=None, max_episode_steps=1000):
    return json.dumps({"id": gym_id, "entry_point": None, "max_episode_steps": max_episode_steps,
                       "kwargs": kwargs or {}})


def _metadata(gym_id="Hopper-v5", **changes):
    metadata = {"dataset_id": "mujoco/hopper/tiny-v0", "env_spec": _gym_spec(gym_id),
                "ref_min_score": -20.0, "ref_max_score": 3000.0}
    metadata.update(changes)
    return {k: v for k, v in metadata.items() if v is not None}


def test_minari_ids_are_told_apart_from_task_names():
    for text in ("mujoco/hopper/medium-v0", "D4RL/door/human-v2", "mujoco/ant/expert-v12"):
        assert is_minari_id(text), text
    for text in ("hopper-medium", "hopper-medium-gen1", "mujoco/hopper/medium", "medium-v0",
                 "mine=hopper:/data/mujoco/hopper/medium-v0", "/data/x/y-v0 z"):
        assert not is_minari_id(text), text
    assert task_name("mujoco/hopper/medium-v0") == "mujoco-hopper-medium-v0"
    # Built-in names and NAME=ENV:PATH keep their meaning; an unknown name lists the forms.
    assert get_task("hopper-medium") == parse_task_argument("hopper-medium")
    with pytest.raises(KeyError, match="Minari dataset id such as mujoco/hopper/medium-v0"):
        parse_task_argument("hopper-medum")


def test_an_id_without_the_package_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "minari", None)  # import minari raises ImportError
    with pytest.raises(MinariError) as info:
        parse_task_argument("mujoco/hopper/medium-v0")
    message = str(info.value)
    for fragment in ("'mujoco/hopper/medium-v0' is a Minari dataset id", "`minari` package",
                     "pip install 'offrl_jax[minari]'", "NAME=ENV:PATH"):
        assert fragment in message, (fragment, message)
    # From the command line: one line, before any output directory is made.
    from offrl_jax.cli import main

    with pytest.raises(SystemExit, match=r"--tasks mujoco/hopper/medium-v0: .*`minari` package"):
        main(["bench", "--profile", "tiny", "--algos", "bc", "--tasks",
              "mujoco/hopper/medium-v0", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


def test_a_dataset_not_on_disk_names_the_id_the_directory_and_the_download(monkeypatch,
                                                                          tmp_path):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    with pytest.raises(FileNotFoundError) as info:
        local_dataset_dir("mujoco/hopper/medium-v0")
    message = str(info.value)
    for fragment in ("'mujoco/hopper/medium-v0'", str(tmp_path / "minari"),
                     "`minari download mujoco/hopper/medium-v0`", "MINARI_DATASETS_PATH="):
        assert fragment in message, (fragment, message)
    # Without the variable, Minari's default directory under the home directory.
    monkeypatch.delenv("MINARI_DATASETS_PATH")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(FileNotFoundError, match="is not set") as info:
        local_dataset_dir("D4RL/door/human-v2")
    assert str(tmp_path / "home" / ".minari" / "datasets") in str(info.value)
    # A dataset directory is found once its data/ folder is there.
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    (tmp_path / "minari" / "mujoco" / "hopper" / "medium-v0" / "data").mkdir(parents=True)
    assert local_dataset_dir("mujoco/hopper/medium-v0") == \
        tmp_path / "minari" / "mujoco" / "hopper" / "medium-v0"


def test_spec_from_metadata_uses_its_environment_and_reference_scores():
    spec = env_spec_from_metadata("mujoco/hopper/tiny-v0",
                                  _metadata(env_spec=_gym_spec("Hopper-v5", max_episode_steps=500)),
                                  (11,), (3,))
    assert (spec.name, spec.gym_id, spec.obs_dim, spec.act_dim) == \
        ("mujoco/hopper/tiny-v0", "Hopper-v5", 11, 3)
    assert (spec.ref_min_return, spec.ref_max_return, spec.episode_length) == \
        (-20.0, 3000.0, 500)
    assert spec.termination_fn is ENV_SPECS["hopper"].termination_fn
    # The evaluation environment wins over the collection one, as in recover_environment.
    chosen = env_spec_from_metadata("x/y-v0", _metadata(eval_env_spec=_gym_spec("Hopper-v4")),
                                    (11,), (3,))
    assert chosen.gym_id == "Hopper-v4"
    # Normalized with the dataset's own scores (not D4RL's hopper: -20.27, 3234.3).
    register_env_spec(spec)
    np.testing.assert_allclose(normalized_score(spec.name, [-20.0, 1490.0, 3000.0]),
                               [0.0, 50.0, 100.0])
    assert normalized_score("hopper", 3000.0) != pytest.approx(100.0)


@pytest.mark.parametrize("changes, fragments", [
    (dict(ref_max_score=None), ["key 'ref_max_score'", "no such key"]),
    (dict(ref_min_score="low"), ["key 'ref_min_score'", "'low'"]),
    (dict(ref_min_score=5.0, ref_max_score=5.0), ["two different returns"]),
    (dict(env_spec=None), ["key 'env_spec'", "found none"]),
    (dict(env_spec="{not json"), ["key 'env_spec'", "EnvSpec as JSON"]),
    (dict(env_spec=_gym_spec("Humanoid-v5")), ["'Humanoid-v5'", "Hopper-v5", "Walker2d-v4"]),
    (dict(env_spec=_gym_spec("Hopper-v3")), ["found 'Hopper-v3'"]),
])
def test_unusable_metadata_is_an_error_naming_the_key(changes, fragments):
    with pytest.raises(MinariError) as info:
        env_spec_from_metadata("mujoco/hopper/tiny-v0", _metadata(**changes), (11,), (3,))
    message = str(info.value)
    for fragment in ("mujoco/hopper/tiny-v0", "expected", "found", *fragments):
        assert fragment in message, (fragment, message)


def test_keyword_arguments_that_move_the_termination_rule_are_refused():
    entry = "gymnasium.envs.mujoco.hopper_v5:HopperEnv"

    def with_kwargs(kwargs):
        env = json.dumps({"id": "Hopper-v5", "entry_point": entry, "kwargs": kwargs})
        return env_spec_from_metadata("x/y-v0", _metadata(env_spec=env), (11,), (3,))

    # The defaults written out, and arguments that leave termination alone, are accepted.
    spec = with_kwargs({"healthy_z_range": [0.7, float("inf")], "ctrl_cost_weight": 2e-3})
    assert dict(spec.gym_kwargs)["ctrl_cost_weight"] == 2e-3
    with pytest.raises(MinariError, match=r"kwargs.healthy_z_range': expected Hopper-v5's "
                                          r"default \(0.7, inf\).*found \(0.5, 2.0\)"):
        with_kwargs({"healthy_z_range": [0.5, 2.0]})
    with pytest.raises(MinariError, match="terminate_when_unhealthy"):
        with_kwargs({"terminate_when_unhealthy": False})


def test_v5_ant_has_other_observations_than_v4_and_the_env_checks_them():
    ant = env_spec_from_metadata("mujoco/ant/tiny-v0", _metadata("Ant-v5"), (105,), (8,))
    env = ant.make_gym_env()
    obs, _ = env.reset(seed=0)
    env.close()
    assert obs.shape == (105,) and ENV_SPECS["ant"].obs_dim == 111
    # v5's first observation is still the torso height, so v4's termination function holds.
    assert not bool(ant.termination_fn(jnp.asarray(obs)))
    wrong = env_spec_from_metadata("mujoco/ant/tiny-v0", _metadata("Ant-v5"), (111,), (8,))
    with pytest.raises(ValueError, match=r"Ant-v5.*expected a observation space of shape "
                                         r"\(111,\)"):
        wrong.make_gym_env()


def test_the_device_backend_refuses_a_minari_environment():
    spec = register_env_spec(env_spec_from_metadata("mujoco/walker2d/tiny-v0",
                                                    _metadata("Walker2d-v5"), (17,), (6,)))
    check_backend(spec.name, "host")
    check_backend("walker2d", "device")
    with pytest.raises(ValueError, match=r"'mujoco/walker2d/tiny-v0' \(Walker2d-v5\): the "
                                         r"device backend \(MJX\).*--eval-backend host"):
        check_backend(spec.name, "device")
    with pytest.raises(ValueError, match="device backend"):
        Evaluator(spec.name, lambda p, o, k, d: o[:, :6], backend="device")
    with pytest.raises(ValueError, match="backend must be one of"):
        check_backend("hopper", "gpu")


# ---- with the minari package: datasets written by minari itself --------------------------


def _create(minari, dataset_id, gym_id, episodes, eval_env=None):
    """A dataset in Minari's own format, written by the package into $MINARI_DATASETS_PATH."""
    from minari.data_collector.episode_buffer import EpisodeBuffer

    buffers = [EpisodeBuffer(id=i, observations=e["observations"], actions=e["actions"],
                             rewards=list(e["rewards"]), terminations=list(e["terminations"]),
                             truncations=list(e["truncations"]))
               for i, e in enumerate(episodes)]
    with warnings.catch_warnings():  # minari warns that no eval_env was given, etc.
        warnings.simplefilter("ignore")
        minari.create_dataset_from_buffers(dataset_id, buffers, env=gym_id, eval_env=eval_env,
                                           ref_min_score=-20.0, ref_max_score=3000.0,
                                           data_format="hdf5")


def test_an_id_loads_through_the_package_like_the_directory_reader(monkeypatch, tmp_path):
    minari = pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    episodes = toy_episodes("hopper", [6, 3, 8], ["terminal", "timeout", "both"], seed=3)
    _create(minari, "mujoco/hopper/tiny-v0", "Hopper-v5", episodes)
    # Our rule for the local directory is the package's.
    from minari.storage import get_dataset_path

    assert local_dataset_dir("mujoco/hopper/tiny-v0") == get_dataset_path("mujoco/hopper/tiny-v0")

    task = parse_task_argument("mujoco/hopper/tiny-v0")
    assert (task.name, task.kind, task.minari_id) == \
        ("mujoco-hopper-tiny-v0", "tiny", "mujoco/hopper/tiny-v0")
    assert get_task("mujoco-hopper-tiny-v0") == task
    spec = task.spec
    assert (spec.gym_id, spec.obs_dim, spec.act_dim) == ("Hopper-v5", 11, 3)
    assert (spec.ref_min_return, spec.ref_max_return) == (-20.0, 3000.0)
    read = []  # the episodes come through the package
    iterate = minari.MinariDataset.iterate_episodes
    monkeypatch.setattr(minari.MinariDataset, "iterate_episodes",
                        lambda self, *args: read.append(self.id) or iterate(self, *args))
    through_package = load_task_dataset(task)
    assert read == ["mujoco/hopper/tiny-v0"]
    by_reader = read_minari(tmp_path / "minari" / "mujoco" / "hopper" / "tiny-v0", env="hopper")
    assert through_package.size == 17
    for field in ("observations", "actions", "rewards", "next_observations", "terminals",
                  "timeouts", "episode_ids"):
        np.testing.assert_array_equal(getattr(through_package, field),
                                      getattr(by_reader, field), err_msg=field)
    np.testing.assert_array_equal(np.asarray(through_package.terminals)[[5, 8, 16]], [1, 0, 1])
    np.testing.assert_array_equal(np.asarray(through_package.timeouts)[[5, 8, 16]], [0, 1, 1])

    # What a run records: the Minari id, the v5 environment, the scores and the note.
    from offrl_jax.training.runner import ensure_dataset

    info = ensure_dataset(task, "tiny", progress=False)
    assert info["dataset_id"] == "mujoco/hopper/tiny-v0" and info["format"] == "minari"
    assert info["minari"]["eval_env"] == "Hopper-v5"
    assert "not comparable with D4RL" in info["minari"]["note"]


def test_a_v5_ant_dataset_keeps_its_105_observations(monkeypatch, tmp_path):
    minari = pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    rng = np.random.default_rng(0)
    episodes = [dict(observations=rng.normal(size=(5, 105)),
                     actions=rng.uniform(-1, 1, size=(4, 8)).astype(np.float32),
                     rewards=rng.normal(size=4), terminations=np.eye(4, dtype=bool)[3],
                     truncations=np.zeros(4, bool))]
    _create(minari, "mujoco/ant/tiny-v0", "Ant-v5", episodes)
    task = parse_task_argument("mujoco/ant/tiny-v0")
    assert (task.spec.gym_id, task.spec.obs_dim) == ("Ant-v5", 105)
    assert load_task_dataset(task).observations.shape == (4, 105)
    # Read as the built-in (v4) ant, the same files do not fit: 111 observations expected.
    with pytest.raises(DatasetError, match="obs_dim 111 for env 'ant'"):
        read_minari(tmp_path / "minari" / "mujoco" / "ant" / "tiny-v0", env="ant")


def test_bench_on_a_minari_id_records_its_own_normalisation(monkeypatch, tmp_path):
    minari = pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    episodes = toy_episodes("hopper", [60, 40, 80], ["terminal", "timeout", "terminal"], seed=1)
    _create(minari, "mujoco/hopper/bench-v0", "Hopper-v5", episodes)
    from offrl_jax.cli import main

    out = tmp_path / "run"
    main(["bench", "--profile", "tiny", "--algos", "bc", "--tasks", "mujoco/hopper/bench-v0",
          "--seeds", "1", "--updates", "20", "--eval-every", "20", "--eval-episodes", "2",
          "--out", str(out)])
    (record,) = [json.loads(line) for line in
                 (out / "records" / "bc__mujoco-hopper-bench-v0.jsonl").read_text().splitlines()]
    expected = 100 * (np.asarray(record["episode_returns"]) + 20.0) / 3020.0
    assert record["normalized_score"] == pytest.approx(expected.mean(), rel=1e-9)
    summary = (out / "summary.md").read_text()
    assert "Minari dataset mujoco/hopper/bench-v0" in summary
    assert "evaluated on Hopper-v5" in summary and "not comparable with D4RL" in summary
    run = json.loads((out / "run.json").read_text())
    assert run["data"]["mujoco-hopper-bench-v0"]["minari"]["ref_max_score"] == 3000.0
