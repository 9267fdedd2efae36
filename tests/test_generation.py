import dataclasses
import json
import shutil

import flax.serialization
import jax
import numpy as np
import pytest
from layout import assert_d4rl_layout

from offrl_jax.data import episode_returns, read_d4rl_hdf5, read_d4rl_metadata
from offrl_jax.generation import generate, get_data_profile, is_complete
from offrl_jax.generation.behaviour import _RunFiles, train_behaviour
from offrl_jax.tasks import DATASET_KINDS

TINY = get_data_profile("tiny")


@pytest.fixture(scope="module")
def hopper_tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    paths = generate.generate_env_datasets("hopper", TINY, seed=0, out_dir=root / "data",
                                           work_dir=root / "work", progress=False)
    return root, paths


def test_tiny_generation_makes_five_valid_datasets(hopper_tiny):
    _, paths = hopper_tiny
    assert set(paths) == set(DATASET_KINDS)
    datasets = {kind: read_d4rl_hdf5(path, env="hopper") for kind, path in paths.items()}
    for kind, data in datasets.items():
        expected = {"medium-expert": 2 * TINY.dataset_size,
                    "medium-replay": None}.get(kind, TINY.dataset_size)
        if expected is not None:
            assert data.size == expected, kind
        assert_d4rl_layout(data, "hopper")
    # Time-outs only at the horizon, at the data budget's cut (the last row), or, for the
    # replay buffer, at the training segments' ends.
    for kind in ("random", "medium", "expert"):
        data = datasets[kind]
        ids = np.asarray(data.episode_ids)
        lengths = np.bincount(ids - ids.min())
        rows = np.flatnonzero(np.asarray(data.timeouts) > 0.5)
        for row in rows[:-1]:
            assert lengths[ids[row] - ids.min()] == 1000, (kind, row)
    replay_rows = np.flatnonzero(np.asarray(datasets["medium-replay"].timeouts) > 0.5)
    assert np.all((replay_rows + 1) % TINY.segment_steps == 0)
    means = {k: episode_returns(datasets[k]).mean() for k in ("random", "medium", "expert")}
    assert means["random"] < means["medium"] < means["expert"], means


def test_metadata_records_recipe_and_behaviour(hopper_tiny):
    _, paths = hopper_tiny
    meta = read_d4rl_metadata(paths["medium"])
    assert meta["recipe"]["kind"] == "medium" and meta["recipe"]["seed"] == 0
    assert meta["versions"]["jax"] == jax.__version__
    behaviour = meta["behaviour"]
    expert = behaviour["expert"]["mean_return"]
    assert expert == max(r for _, r in behaviour["checkpoint_returns"])
    assert behaviour["medium"]["mean_return"] >= expert / 3
    earlier = [r for step, r in behaviour["checkpoint_returns"]
               if step < behaviour["medium"]["env_steps"]]
    assert all(r < expert / 3 for r in earlier)  # the FIRST checkpoint past 1/3 of the expert
    replay = read_d4rl_hdf5(paths["medium-replay"])
    assert replay.size == behaviour["medium"]["env_steps"]


def test_generation_is_deterministic(hopper_tiny, tmp_path):
    _, first = hopper_tiny
    second = generate.generate_env_datasets("hopper", TINY, seed=0, out_dir=tmp_path / "d",
                                            work_dir=tmp_path / "w", progress=False)
    for kind in DATASET_KINDS:
        a = read_d4rl_hdf5(first[kind]).to_numpy()
        b = read_d4rl_hdf5(second[kind]).to_numpy()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{kind}/{key}")


def test_valid_files_are_reused_and_corrupt_ones_regenerated(hopper_tiny, monkeypatch):
    root, paths = hopper_tiny
    calls = []
    real = generate.collect_dataset
    monkeypatch.setattr(generate, "collect_dataset",
                        lambda *a, **k: calls.append(k.get("desc")) or real(*a, **k))
    again = generate.generate_env_datasets("hopper", TINY, seed=0, out_dir=root / "data",
                                           work_dir=root / "work", progress=False)
    assert again == paths and calls == []
    random_path = paths["random"]
    before = read_d4rl_hdf5(random_path).to_numpy()
    import h5py

    with h5py.File(random_path, "r+") as handle:
        handle["rewards"][0] += 1.0  # arrays no longer match the stored checksum
    recipe = read_d4rl_metadata(random_path)["recipe"]
    assert not is_complete(random_path, recipe)
    generate.generate_env_datasets("hopper", TINY, seed=0, kinds=["random"],
                                   out_dir=root / "data", work_dir=root / "work", progress=False)
    assert calls == ["hopper-random"]
    np.testing.assert_array_equal(read_d4rl_hdf5(random_path).to_numpy()["rewards"],
                                  before["rewards"])


def test_interrupted_generation_leaves_no_complete_looking_file(tmp_path, monkeypatch):
    real = generate.collect_dataset

    def failing(*args, **kwargs):
        if kwargs.get("desc") == "hopper-expert":
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(generate, "collect_dataset", failing)
    small = dataclasses.replace(TINY, train_steps={"hopper": 1000})
    with pytest.raises(KeyboardInterrupt):
        generate.generate_env_datasets("hopper", small, seed=1, out_dir=tmp_path / "d",
                                       work_dir=tmp_path / "w", progress=False)
    written = sorted(p.name for p in (tmp_path / "d").iterdir())
    # Kinds finished before the interruption are complete; nothing else (no temp file) exists.
    assert all(not name.startswith(".") for name in written)
    assert "hopper-expert.hdf5" not in written and "hopper-medium-expert.hdf5" not in written
    for name in written:
        path = tmp_path / "d" / name
        assert is_complete(path, read_d4rl_metadata(path)["recipe"])


def test_behaviour_training_resumes_identically(tmp_path):
    small = dataclasses.replace(TINY, train_steps={"hopper": 1500})
    full = train_behaviour("hopper", small, seed=3, work_dir=tmp_path / "a", progress=False)
    partial = train_behaviour("hopper", small, seed=3, work_dir=tmp_path / "b", progress=False,
                              stop_after_segments=2)  # killed after its first checkpoint
    assert len(partial.checkpoints) == 1
    # The same interrupted run as an older release left it (one state.msgpack): it resumes too.
    shutil.copytree(tmp_path / "b", tmp_path / "c")
    saved = _RunFiles(tmp_path / "c").load_state()
    to_dict = flax.serialization.to_state_dict
    legacy = {"recipe": json.dumps(saved["recipe"]), "next_segment": saved["next_segment"],
              "sac_state": to_dict(saved["sac_state"]),
              "checkpoints": {str(i): {**c, "actor": to_dict(c["actor"])}
                              for i, c in enumerate(saved["checkpoints"])}}
    (tmp_path / "c" / "state.msgpack").write_bytes(flax.serialization.msgpack_serialize(legacy))
    (tmp_path / "c" / "latest.json").unlink()
    for resume_dir in ("b", "c"):
        resumed = train_behaviour("hopper", small, seed=3, work_dir=tmp_path / resume_dir,
                                  progress=False)
        assert [c.mean_return for c in resumed.checkpoints] == [c.mean_return
                                                                for c in full.checkpoints]
        for key in full.replay:
            np.testing.assert_array_equal(full.replay[key], resumed.replay[key])
        jax.tree_util.tree_map(np.testing.assert_array_equal, full.state.actor_params,
                               resumed.state.actor_params)
    assert not (tmp_path / "c" / "state.msgpack").exists()  # rewritten as a saved tree
    with pytest.raises(ValueError, match="recipe"):
        train_behaviour("hopper", small, seed=4, work_dir=tmp_path / "b", progress=False)


def test_export_writes_policies_that_generation_reads(hopper_tiny, tmp_path, monkeypatch):
    """export-behaviour on the tiny run: medium, expert and the medium-replay schedule, files
    with their sha256, a manifest and a learning curve; generation then reads them, training
    nothing."""
    from offrl_jax import policies
    from offrl_jax.generation import export
    from offrl_jax.tasks import normalized_score

    root, _ = hopper_tiny
    recipe, checkpoints = export.read_behaviour_run(root / "work")
    assert [c["env_steps"] for c in checkpoints] == [500, 1000, 1500]
    # The tiny run is far from D4RL's medium: aim at its first checkpoint's level instead.
    target = float(normalized_score("hopper", checkpoints[0]["mean_return"]))
    export.export_behaviour("hopper", root / "work", root=tmp_path, replay_every=500,
                            eval_episodes=2, candidates=2, medium_target=target,
                            log=lambda line: None)
    manifest = policies.load_manifest("hopper", tmp_path)
    medium = manifest["policies"]["medium"]
    assert medium["env_steps"] < manifest["policies"]["expert"]["env_steps"]
    pieces = manifest["medium_replay"]["pieces"]
    assert pieces[0] == {"policy": None, "env_steps": 0, "transitions": TINY.start_steps}
    assert sum(p["transitions"] for p in pieces) == medium["env_steps"]
    # Each 500-step interval: half by the snapshot that starts it, half by the one that ends it.
    assert [(p["policy"]["env_steps"], p["env_steps"], p["transitions"]) for p in pieces[1:3]] \
        == [(500, 500, 250), (1000, 750, 250)][:len(pieces) - 1]
    for entry in [manifest["policies"]["expert"], *(p["policy"] for p in pieces[1:])]:
        assert policies.file_sha256(tmp_path / "hopper" / entry["file"]) == entry["sha256"]
    assert (tmp_path / "hopper" / "learning_curve.png").stat().st_size > 5000
    assert manifest["training"]["hidden_dims"] == list(TINY.sac.hidden_dims)

    monkeypatch.setattr(policies, "POLICY_ROOT", tmp_path)
    monkeypatch.setattr(generate, "train_behaviour", None)  # must not be called
    small = dataclasses.replace(TINY, name="exported", dataset_size=300, collect_envs=2)
    paths = generate.generate_env_datasets("hopper", small, seed=0, out_dir=tmp_path / "d",
                                           kinds=["medium", "medium-replay"], progress=False)
    meta = read_d4rl_metadata(paths["medium"])
    assert meta["recipe"]["source"] == "shipped" and meta["dataset_id"] == "hopper-medium-gen1"
    assert meta["recipe"]["policy_sha256"] == [medium["sha256"]]
