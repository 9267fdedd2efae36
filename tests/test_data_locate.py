"""Where task data is looked for, in which order, and the error when there is none."""

from pathlib import Path

import pytest

from offrl_jax.data import (
    DatasetError,
    cache_dir,
    episodes_to_arrays,
    find_task_dataset,
    generated_dataset_path,
    load_task_dataset,
    write_d4rl_hdf5,
    write_minari,
)
from offrl_jax.data.toy import toy_episodes
from offrl_jax.generation.versions import generated_file, task_generated_file
from offrl_jax.tasks import Task, get_task


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    cache, d4rl = tmp_path / "cache", tmp_path / "d4rl"
    monkeypatch.setenv("OFFRL_DATA_DIR", str(cache))
    monkeypatch.setenv("OFFRL_D4RL_DIR", str(d4rl))
    return cache, d4rl


def _write(path, lengths, env="hopper"):
    """A small valid file whose size tells which file was loaded."""
    return write_d4rl_hdf5(path, episodes_to_arrays(toy_episodes(env, lengths, seed=len(lengths))))


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("OFFRL_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "offrl_jax"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "offrl_jax"
    monkeypatch.setenv("OFFRL_DATA_DIR", str(tmp_path / "override"))
    assert cache_dir() == tmp_path / "override"
    # The file name carries the data version, so another version's file is never picked up.
    assert generated_dataset_path("hopper", "medium-replay", "quick", "gen1") == \
        tmp_path / "override" / "generated" / "quick" / "hopper-medium-replay-gen1.hdf5"
    # The generation layer decides the version a profile makes and hands data the path.
    assert generated_file("hopper", "medium", "quick").name in (
        "hopper-medium-gen1.hdf5", "hopper-medium-trained-quick.hdf5")
    assert generated_file("hopper", "medium", "tiny").name == "hopper-medium-trained-tiny.hdf5"
    with pytest.raises(ValueError, match="version"):
        generated_dataset_path("hopper", "medium", "quick", "../gen1")
    with pytest.raises(ValueError, match="profile"):
        generated_dataset_path("hopper", "medium", "../x", "gen1")
    with pytest.raises(KeyError, match="unknown environment"):
        generated_dataset_path("humanoid", "medium", "quick", "gen1")
    with pytest.raises(KeyError, match="unknown environment"):
        generated_file("humanoid", "medium", "quick")


def test_resolution_order(dirs):
    cache, d4rl = dirs
    task = get_task("hopper-medium-replay")
    quick = task_generated_file(task, "quick")
    with pytest.raises(FileNotFoundError) as info:
        load_task_dataset(task, quick)
    message = str(info.value)
    for fragment in ("hopper-medium-replay", str(d4rl / "hopper_medium_replay-v2.hdf5"),
                     str(d4rl / "hopper-medium-replay-v2.hdf5"),
                     str(generated_file("hopper", "medium-replay", "quick")),
                     "offrl data generate --env hopper", "(profile 'quick')",
                     "OFFRL_D4RL_DIR"):
        assert fragment in message, (fragment, message)

    _write(generated_file("hopper", "medium-replay", "quick"), [3])
    assert load_task_dataset(task, quick).size == 3
    with pytest.raises(FileNotFoundError):  # another profile's file is not this one
        load_task_dataset(task, task_generated_file(task, "full"))
    with pytest.raises(FileNotFoundError):  # no generated file named: none looked for
        load_task_dataset(task)

    _write(d4rl / "hopper-medium-replay-v2.hdf5", [3, 3])
    assert load_task_dataset("hopper-medium-replay", quick).size == 6
    _write(d4rl / "hopper_medium_replay-v2.hdf5", [3, 3, 3])
    assert find_task_dataset(task, quick) == (d4rl / "hopper_medium_replay-v2.hdf5", "d4rl")
    assert load_task_dataset(task, quick).size == 9

    own = _write(d4rl / "elsewhere.hdf5", [4])
    mine = Task("mine", "hopper", "custom", str(own), "d4rl")
    assert task_generated_file(mine, "quick") is None
    assert load_task_dataset(mine).size == 4
    minari_dir = write_minari(d4rl / "minari-set", toy_episodes("hopper", [5, 2], seed=0))
    assert load_task_dataset(Task("m", "hopper", "custom", str(minari_dir), "minari")).size == 7
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_task_dataset(Task("gone", "hopper", "custom", str(d4rl / "gone.hdf5"), "d4rl"))


def test_unset_d4rl_dir_and_env_dims_checked(dirs, monkeypatch):
    cache, _ = dirs
    monkeypatch.delenv("OFFRL_D4RL_DIR")
    walker = task_generated_file(get_task("walker2d-medium"), "quick")
    with pytest.raises(FileNotFoundError, match=r"\$OFFRL_D4RL_DIR \(not set\)"):
        load_task_dataset("walker2d-medium", walker)
    # A file with hopper's dims in walker2d's generated slot is rejected, naming the file.
    wrong = _write(generated_file("walker2d", "medium", "quick"), [3], env="hopper")
    with pytest.raises(DatasetError) as info:
        load_task_dataset("walker2d-medium", walker)
    assert str(wrong) in str(info.value) and "obs_dim 17 for env 'walker2d'" in str(info.value)
    assert Path(wrong).is_relative_to(cache)
