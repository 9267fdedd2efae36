"""Minari datasets: round trip, equivalence with the same data as D4RL, metadata checks."""

import json

import h5py
import numpy as np
import pytest

from offrl_jax.data import (
    DatasetError,
    episode_lengths,
    episode_returns,
    episodes_to_arrays,
    read_d4rl_hdf5,
    read_minari,
    read_minari_metadata,
    write_d4rl_hdf5,
    write_minari,
)
from offrl_jax.data.toy import toy_episodes

FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts",
          "episode_ids")
ENDINGS = ("terminal", "timeout", "both", "none")


def _episodes():
    return toy_episodes("halfcheetah", [5, 3, 7, 2], ENDINGS, seed=4)


def test_round_trip_and_data_folder(tmp_path):
    episodes = _episodes()
    root = write_minari(tmp_path / "mujoco" / "halfcheetah" / "toy-v0", episodes,
                        metadata={"dataset_id": "mujoco/halfcheetah/toy-v0",
                                  "ref_min_score": np.float32(-280.0)})
    metadata = read_minari_metadata(root)
    assert metadata["total_steps"] == 17 and metadata["total_episodes"] == 4
    assert metadata["dataset_id"] == "mujoco/halfcheetah/toy-v0"
    assert metadata["ref_min_score"] == -280.0
    for where in (root, root / "data"):
        dataset = read_minari(where, env="halfcheetah")
        assert dataset.size == 17
        np.testing.assert_array_equal(dataset.observations,
                                      np.concatenate([ep["observations"][:-1] for ep in episodes]))
        np.testing.assert_array_equal(dataset.next_observations,
                                      np.concatenate([ep["observations"][1:] for ep in episodes]))
        np.testing.assert_array_equal(dataset.terminals, np.concatenate(
            [ep["terminations"] for ep in episodes]))
        np.testing.assert_array_equal(dataset.timeouts, np.concatenate(
            [ep["truncations"] for ep in episodes]))
        np.testing.assert_array_equal(dataset.episode_ids, np.repeat(np.arange(4), [5, 3, 7, 2]))
        np.testing.assert_array_equal(episode_lengths(dataset), [5, 3, 7, 2])
        np.testing.assert_allclose(episode_returns(dataset),
                                   [ep["rewards"].sum() for ep in episodes], rtol=1e-6)


def test_minari_equals_same_data_written_as_d4rl(tmp_path):
    episodes = _episodes()
    from_minari = read_minari(write_minari(tmp_path / "toy", episodes), env="halfcheetah")
    d4rl_path = write_d4rl_hdf5(tmp_path / "toy.hdf5", episodes_to_arrays(episodes))
    from_d4rl = read_d4rl_hdf5(d4rl_path, env="halfcheetah")
    # Also without the stored episode ids: D4RL readers derive the same episodes.
    with h5py.File(d4rl_path, "a") as handle:
        del handle["episode_ids"]
    derived = read_d4rl_hdf5(d4rl_path, env="halfcheetah")
    for name in FIELDS:
        expected = np.asarray(getattr(from_minari, name))
        np.testing.assert_array_equal(getattr(from_d4rl, name), expected, err_msg=name)
        np.testing.assert_array_equal(getattr(derived, name), expected, err_msg=name)


def _edit_metadata(root, **changes):
    path = root / "data" / "metadata.json"
    metadata = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            metadata.pop(key)
        else:
            metadata[key] = value
    path.write_text(json.dumps(metadata))
    return path


def _expect_error(path, *fragments, env=None):
    with pytest.raises(DatasetError) as info:
        read_minari(path, env=env)
    message = str(info.value)
    for fragment in ("expected", "found", *fragments):
        assert fragment in message, (fragment, message)


def test_metadata_missing_or_disagreeing(tmp_path):
    root = write_minari(tmp_path / "toy", _episodes())
    metadata_path = root / "data" / "metadata.json"
    _edit_metadata(root, total_steps=18)
    _expect_error(root, str(metadata_path), "key 'total_steps'", "expected 17", "found 18")
    _edit_metadata(root, total_steps=17, total_episodes=5)
    _expect_error(root, str(metadata_path), "key 'total_episodes'", "expected 4", "found 5")
    _edit_metadata(root, total_episodes=None)
    _expect_error(root, str(metadata_path), "key 'total_episodes'", "no such key")
    _edit_metadata(root, total_episodes=4, data_format="arrow")
    _expect_error(root, str(metadata_path), "key 'data_format'", "'arrow'")
    metadata_path.write_text("{not json")
    _expect_error(root, str(metadata_path), "key 'metadata.json'", "unreadable")
    metadata_path.unlink()
    _expect_error(root, str(metadata_path), "key 'metadata.json'", "no such file")
    with pytest.raises(FileNotFoundError):
        read_minari(tmp_path / "absent")


def _rewrite_episode(root, name, key, value):
    with h5py.File(root / "data" / "main_data.hdf5", "a") as handle:
        del handle[name][key]
        if value is not None:
            handle[name].create_dataset(key, data=value)
    return str(root / "data" / "main_data.hdf5")


def test_malformed_episodes(tmp_path):
    episodes = _episodes()
    cases = [
        ("episode_1", "actions", None, ["key 'episode_1/actions'", "no such key"], None),
        ("episode_2", "observations", episodes[2]["observations"][:-1],
         ["key 'episode_2/observations'", "(8, obs_dim)", "found shape (7, 17)"], None),
        ("episode_0", "rewards", np.zeros(4),
         ["key 'episode_0/rewards'", "expected 5 rows", "found shape (4,)"], None),
        ("episode_2", "terminations", np.eye(7, dtype=bool)[2],
         ["key 'episode_2/terminations'", "last step", "found one at step 2 of 7"], None),
        ("episode_3", "observations", np.concatenate([episodes[3]["observations"][:2],
                                                      [[np.nan] * 17]]),
         ["key 'next_observations'", "found 17 NaN/inf values in 1 rows (first at row 16)"],
         None),
        ("episode_0", "actions", np.zeros((5, 4)),
         ["key 'episode_0/actions'", "act_dim 6 for env 'halfcheetah'", "found shape (5, 4)"],
         "halfcheetah"),
        ("episode_1", "actions", np.zeros((3, 4)),
         ["key 'episode_1/actions'", "act_dim 6 like episode_0", "found shape (3, 4)"], None),
    ]
    for index, (name, key, value, fragments, env) in enumerate(cases):
        root = write_minari(tmp_path / f"case{index}", episodes)
        source = _rewrite_episode(root, name, key, value)
        _expect_error(root, source, *fragments, env=env)


def test_truncated_episode_file(tmp_path):
    root = write_minari(tmp_path / "toy", _episodes())
    main = root / "data" / "main_data.hdf5"
    main.write_bytes(main.read_bytes()[:300])
    _expect_error(root, str(main), "readable HDF5 file")
