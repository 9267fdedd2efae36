"""D4RL HDF5 reading and writing: round trips, rebuilt next states, validation, atomic writes."""

import h5py
import numpy as np
import pytest

from offrl_jax.data import (
    Dataset,
    DatasetError,
    episode_lengths,
    episodes_to_arrays,
    read_d4rl_hdf5,
    read_d4rl_infos,
    read_d4rl_metadata,
    write_d4rl_hdf5,
)
from offrl_jax.data.toy import toy_episodes

FIELDS = ("observations", "actions", "rewards", "next_observations", "terminals", "timeouts",
          "episode_ids")


def _arrays(env="hopper", lengths=(6, 4, 5), endings=("timeout", "terminal", "both")):
    return episodes_to_arrays(toy_episodes(env, lengths, endings, seed=2))


def _write_raw(path, **arrays):
    """A D4RL-layout file written verbatim with h5py (no validation), as other tools would."""
    with h5py.File(path, "w") as handle:
        for key, value in arrays.items():
            handle.create_dataset(key, data=value)
    return path


def _assert_same(dataset, arrays):
    for name in FIELDS:
        np.testing.assert_array_equal(np.asarray(getattr(dataset, name)), arrays[name],
                                      err_msg=name)


def test_round_trip_dataset_metadata_and_infos(tmp_path):
    arrays = _arrays()
    dataset = Dataset.from_arrays(**arrays, env="hopper")
    n = dataset.size
    qpos = np.random.default_rng(0).normal(size=(n, 6))
    metadata = {"algorithm": "SAC", "seed": 3, "return_mean": 1234.5, "deterministic": False,
                "obs_mean": np.arange(3.0), "config": {"hidden": [256, 256], "lr": 3e-4},
                "note": None}
    path = write_d4rl_hdf5(tmp_path / "out" / "hopper-medium.hdf5", dataset, metadata=metadata,
                           infos={"qpos": qpos})
    assert path.is_file()
    loaded = read_d4rl_hdf5(path, env="hopper")
    _assert_same(loaded, arrays)
    meta = read_d4rl_metadata(path)
    assert meta["algorithm"] == "SAC" and meta["seed"] == 3 and meta["return_mean"] == 1234.5
    assert meta["deterministic"] is False and meta["note"] is None
    assert meta["config"] == {"hidden": [256, 256], "lr": 3e-4}
    np.testing.assert_array_equal(meta["obs_mean"], np.arange(3.0))
    np.testing.assert_array_equal(read_d4rl_infos(path)["qpos"], qpos)
    with h5py.File(path, "r") as handle:  # the D4RL layout itself
        assert handle["rewards"].shape == (n,) and handle["terminals"].dtype == bool
        assert handle["observations"].compression == "gzip"
        assert handle["observations"].dtype == np.float32


def test_write_mapping_and_read_file_without_episode_ids(tmp_path):
    arrays = _arrays(endings=("timeout", "terminal", "none"))
    mapping = {key: arrays[key] for key in FIELDS[:-1]}
    mapping["rewards"] = mapping["rewards"][:, None]  # (N, 1) accepted by the writer too
    path = write_d4rl_hdf5(tmp_path / "a.hdf5", mapping)
    _assert_same(read_d4rl_hdf5(path), arrays)
    # A file by another tool: (N, 1) float64 rewards, no episode_ids, no timeouts key.
    raw = {key: arrays[key] for key in ("observations", "actions", "next_observations",
                                        "terminals")}
    raw["rewards"] = arrays["rewards"].astype(np.float64)[:, None]
    loaded = read_d4rl_hdf5(_write_raw(tmp_path / "b.hdf5", **raw), env="hopper")
    _assert_same(loaded, {**arrays, "timeouts": np.zeros_like(arrays["timeouts"])})
    np.testing.assert_array_equal(episode_lengths(loaded), [6, 4, 5])  # ends found by jumps


def test_reader_without_next_observations_builds_next_states_within_episodes(tmp_path):
    observations = np.stack([np.arange(8.0), 10.0 * np.arange(8.0)], axis=1)
    # Episodes: rows 0-2 end by timeout; 3-4 by a terminal; row 5 is terminal AND timeout;
    # 6-7 end with the file (no flag).
    terminals = np.array([0, 0, 0, 0, 1, 1, 0, 0], dtype=bool)
    timeouts = np.array([0, 0, 1, 0, 0, 1, 0, 0], dtype=bool)
    rewards = np.arange(8.0) + 0.5
    actions = np.arange(8.0)[:, None]
    path = _write_raw(tmp_path / "nonext.hdf5", observations=observations, actions=actions,
                      rewards=rewards, terminals=terminals, timeouts=timeouts)
    dataset = read_d4rl_hdf5(path)
    kept = [0, 1, 3, 4, 5, 6]  # row 2 (timeout) and row 7 (last of file) have no next state
    np.testing.assert_array_equal(dataset.observations, observations[kept])
    np.testing.assert_array_equal(dataset.actions, actions[kept])
    np.testing.assert_array_equal(dataset.rewards, rewards[kept])
    expected_next = observations[[1, 2, 4, 4, 5, 7]]  # terminal rows 4, 5 repeat their own obs
    np.testing.assert_array_equal(dataset.next_observations, expected_next)
    np.testing.assert_array_equal(dataset.terminals, [0, 0, 0, 1, 1, 0])
    np.testing.assert_array_equal(dataset.timeouts, [0, 0, 0, 0, 1, 0])
    np.testing.assert_array_equal(dataset.episode_ids, [0, 0, 1, 1, 2, 3])


def test_reader_without_next_observations_and_no_usable_row(tmp_path):
    path = _write_raw(tmp_path / "one.hdf5", observations=np.zeros((1, 11)),
                      actions=np.zeros((1, 3)), rewards=np.zeros(1), terminals=np.zeros(1))
    with pytest.raises(DatasetError, match="one.hdf5: key 'next_observations'.*found none"):
        read_d4rl_hdf5(path)


def _with_nan(values, row, column=None):
    values = values.astype(np.float32).copy()
    if column is None:
        values[row] = np.nan
    else:
        values[row, column] = np.inf
    return values


BASE = _arrays()
N = BASE["rewards"].shape[0]
FILE_KEYS = [key for key in FIELDS if key != "episode_ids"]
# case: (key named in the error, replaced arrays (None = remove the key), env, message parts)
ERROR_CASES = {
    "missing key": ("actions", {"actions": None}, None, ["expected an array", "no such key"]),
    "length mismatch": ("rewards", {"rewards": BASE["rewards"][:-2]}, None,
                        [f"expected {N} rows", f"found {N - 2} rows"]),
    "obs dim": ("observations", {"observations": np.zeros((N, 17)),
                                 "next_observations": np.zeros((N, 17))}, "hopper",
                ["expected obs_dim 11 for env 'hopper'", "found 17"]),
    "next obs shape": ("next_observations", {"next_observations": np.zeros((N, 10))}, None,
                       [f"expected the shape of 'observations' ({N}, 11)", "found shape"]),
    "act dim": ("actions", {"actions": np.zeros((N, 6))}, "hopper",
                ["expected act_dim 3 for env 'hopper'", "found 6"]),
    "nan": ("observations", {"observations": _with_nan(BASE["observations"], 7)}, None,
            ["expected finite values", "found 11 NaN/inf values in 1 rows (first at row 7)"]),
    "inf": ("actions", {"actions": _with_nan(BASE["actions"], 4, column=2)}, None,
            ["expected finite values", "found 1 NaN/inf values", "(first at row 4)"]),
    "non-binary terminals": ("terminals", {"terminals": np.where(np.arange(N) == 3, 0.5, 0.0)},
                             None, ["expected binary values", "found 1 other values",
                                    "first at row 3: np.float32(0.5)"]),
    "non-binary timeouts": ("timeouts", {"timeouts": np.full(N, 2.0)}, None,
                            ["expected binary values", f"found {N} other values"]),
    "terminal mid-episode": ("terminals", {"terminals": np.where(np.arange(N) == 1, 1.0, 0.0),
                                           "episode_ids": BASE["episode_ids"]}, None,
                             ["expected a flag only on the last row of an episode",
                              "first at row 1"]),
    "episode ids not contiguous": ("episode_ids",
                                   {"episode_ids": np.r_[BASE["episode_ids"][:-1], 0]}, None,
                                   ["expected each episode's rows to be contiguous",
                                    f"found episode id 0 again at row {N - 1}"]),
    "empty": ("observations", {key: BASE[key][:0] for key in FILE_KEYS}, None,
              ["expected at least one row", "found an empty dataset (0 rows)"]),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_validation_errors_name_file_key_expected_found(tmp_path, case):
    key, replaced, env, fragments = ERROR_CASES[case]
    arrays = {k: BASE[k] for k in FILE_KEYS} | replaced
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = _write_raw(tmp_path / f"bad_{case.replace(' ', '_')}.hdf5", **arrays)
    with pytest.raises(DatasetError) as info:
        read_d4rl_hdf5(path, env=env)
    message = str(info.value)
    for fragment in (str(path), f"key '{key}'", *fragments):
        assert fragment in message, (fragment, message)


def test_group_where_array_expected(tmp_path):
    path = tmp_path / "group.hdf5"
    _write_raw(path, **{k: v for k, v in BASE.items() if k != "rewards"})
    with h5py.File(path, "a") as handle:
        handle.create_group("rewards")
    with pytest.raises(DatasetError, match=r"group.hdf5: key '/rewards': expected an array, "
                                           r"found an HDF5 group"):
        read_d4rl_hdf5(path)


def test_truncated_non_hdf5_and_missing_files(tmp_path):
    path = write_d4rl_hdf5(tmp_path / "full.hdf5", BASE)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(data[: len(data) // 2])
    not_hdf5 = tmp_path / "notes.hdf5"
    not_hdf5.write_text("observations,actions\n1,2\n")
    for bad in (truncated, not_hdf5):
        with pytest.raises(DatasetError) as info:
            read_d4rl_hdf5(bad)
        assert str(bad) in str(info.value)
        assert "expected a readable HDF5 file" in str(info.value)
        with pytest.raises(DatasetError):
            read_d4rl_metadata(bad)
    with pytest.raises(FileNotFoundError, match="missing.hdf5"):
        read_d4rl_hdf5(tmp_path / "missing.hdf5")


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    final = tmp_path / "data.hdf5"
    real_create = h5py.Group.create_dataset
    calls = []

    def failing_create(self, name, *args, **kwargs):
        calls.append(name)
        if len(calls) == 3:  # after two arrays are already in the file
            raise RuntimeError("disk full")
        return real_create(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing_create)
    with pytest.raises(RuntimeError, match="disk full"):
        write_d4rl_hdf5(final, BASE)
    assert len(calls) == 3
    assert list(tmp_path.iterdir()) == []

    # Over an existing file: the old file survives intact.
    monkeypatch.setattr(h5py.Group, "create_dataset", real_create)
    write_d4rl_hdf5(final, BASE, metadata={"version": "old"})
    monkeypatch.setattr(h5py.Group, "create_dataset", failing_create)
    calls.clear()
    with pytest.raises(RuntimeError, match="disk full"):
        write_d4rl_hdf5(final, BASE, metadata={"version": "new"})
    assert [p.name for p in tmp_path.iterdir()] == ["data.hdf5"]
    assert read_d4rl_metadata(final) == {"version": "old"}


def test_writer_rejects_bad_input_before_creating_a_file(tmp_path):
    target = tmp_path / "x.hdf5"
    with pytest.raises(DatasetError, match=r"x.hdf5: key 'metadata/policy': expected .*found "
                                           r"object"):
        write_d4rl_hdf5(target, BASE, metadata={"policy": object()})
    with pytest.raises(DatasetError, match=r"key 'infos/qpos': expected 15 rows"):
        write_d4rl_hdf5(target, BASE, infos={"qpos": np.zeros((3, 2))})
    with pytest.raises(DatasetError, match=r"key 'timeouts': expected an array"):
        write_d4rl_hdf5(target, {k: v for k, v in BASE.items() if k != "timeouts"})
    with pytest.raises(DatasetError, match=r"key 'qpos': expected one of .*found an unknown"):
        write_d4rl_hdf5(target, {**BASE, "qpos": np.zeros((15, 2))})
    assert list(tmp_path.iterdir()) == []
