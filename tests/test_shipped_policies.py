"""The behaviour policies shipped in the repository and the datasets made from them: files and
hashes, sizes, generation layout, the medium-replay schedule, statistics with known answers,
the reference-statistics check, versioned ids, and an expert that beats the medium policy."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
from layout import assert_d4rl_layout

from offrl_jax import policies
from offrl_jax.data import DatasetError, read_d4rl_hdf5, read_d4rl_metadata
from offrl_jax.generation import generate, get_data_profile
from offrl_jax.generation.export import evaluate_actor
from offrl_jax.tasks import ENV_SPECS, normalized_score

SHIPPED = sorted(env for env in ENV_SPECS if policies.has_shipped_policies(env))
# A profile that reads the shipped policies (any but "tiny") at a test-sized dataset.
SMALL = dataclasses.replace(get_data_profile("quick"), name="test-small", dataset_size=400,
                            collect_envs=2)
# The size whose reference statistics the manifest records for this test (about 12 medium and
# 5 expert hopper episodes).
CHECKED = dataclasses.replace(get_data_profile("quick"), name="test-5k", dataset_size=5000,
                              collect_envs=2)


def test_hopper_policies_are_shipped():
    assert "hopper" in SHIPPED


@pytest.mark.parametrize("env", SHIPPED)
def test_manifest_files_and_hashes(env):
    manifest = policies.load_manifest(env)
    root = policies.policy_dir(env)
    files = {manifest["policies"][role]["file"] for role in ("medium", "expert")}
    files |= {p["policy"]["file"] for p in manifest["medium_replay"]["pieces"] if p["policy"]}
    assert {p.name for p in root.glob("actor_*.npz")} == files
    for role in ("medium", "expert"):
        params = policies.load_role(env, role)
        kernel = params["params"]["MLP_0"]["Dense_0"]["kernel"]
        assert kernel.shape == (ENV_SPECS[env].obs_dim, 256)
    training = manifest["training"]
    for field in ("recipe", "env_steps", "versions", "commit", "device"):
        assert field in training, field
    assert (root / "learning_curve.png").stat().st_size > 5000
    # The schedule covers every step up to the medium snapshot, in order.
    pieces = manifest["medium_replay"]["pieces"]
    assert pieces[0]["policy"] is None
    assert sum(p["transitions"] for p in pieces) == manifest["policies"]["medium"]["env_steps"]
    starts = [p["env_steps"] for p in pieces]
    assert starts == sorted(starts)


def test_shipped_files_fit_the_size_budget():
    sizes = [p.stat().st_size for p in policies.POLICY_ROOT.rglob("*") if p.is_file()]
    assert max(sizes) < 5 * 2**20
    assert sum(sizes) < 30 * 2**20


def test_a_corrupted_policy_file_is_refused_naming_file_and_hashes(tmp_path):
    shutil.copytree(policies.policy_dir("hopper"), tmp_path / "hopper")
    manifest = policies.load_manifest("hopper", tmp_path)
    path = tmp_path / "hopper" / manifest["policies"]["expert"]["file"]
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(policies.PolicyFileError) as info:
        policies.load_role("hopper", "expert", tmp_path)
    message = str(info.value)
    assert str(path) in message and manifest["policies"]["expert"]["sha256"] in message
    (tmp_path / "hopper" / "manifest.json").write_text(json.dumps({**manifest, "format": 99}))
    with pytest.raises(policies.PolicyFileError, match="'format' expected 1, found 99"):
        policies.load_manifest("hopper", tmp_path)


def test_dataset_statistics_known_answer():
    # Two episodes: returns 3 and 10 (lengths 2 and 3), hopper's normalization.
    rewards = np.array([1.0, 2.0, 3.0, 3.0, 4.0], np.float32)
    arrays = {"rewards": rewards, "episode_ids": np.array([5, 5, 6, 6, 6])}
    stats = generate.dataset_statistics("hopper", arrays)
    expected = normalized_score("hopper", [3.0, 10.0])
    assert stats["transitions"] == 5 and stats["episodes"] == 2
    assert stats["normalized_mean"] == pytest.approx(expected.mean())
    assert stats["normalized_std"] == pytest.approx(expected.std())
    assert stats["length_mean"] == 2.5 and stats["length_std"] == 0.5


def test_statistics_check_flags_only_differences_beyond_sampling_noise():
    reference = {"transitions": 1000, "episodes": 100, "normalized_mean": 50.0,
                 "normalized_std": 10.0, "length_mean": 400.0, "length_std": 100.0}
    # Standard error of the difference: sqrt(2 * 10^2 / 100) = 1.41; 4 of them: 5.66.
    close = {**reference, "normalized_mean": 55.0, "length_mean": 430.0}
    assert generate.compare_statistics(close, reference) == []
    far = {**reference, "normalized_mean": 56.0, "transitions": 999}
    problems = generate.compare_statistics(far, reference)
    assert len(problems) == 2
    assert any("transitions: expected 1000, found 999" in p for p in problems)
    assert any("normalized_mean: expected 50.00 +- 5.66" in p for p in problems)


@pytest.fixture(scope="module")
def small_hopper(tmp_path_factory):
    out = tmp_path_factory.mktemp("shipped")
    paths = generate.generate_env_datasets("hopper", SMALL, seed=0, out_dir=out,
                                           progress=False)
    return paths


def test_generated_datasets_have_the_layout_flags_and_versioned_ids(small_hopper):
    manifest = policies.load_manifest("hopper")
    version = manifest["data_version"]
    for kind, path in small_hopper.items():
        assert path.name == f"hopper-{kind}-{version}.hdf5"
        meta = read_d4rl_metadata(path)
        assert meta["dataset_id"] == f"hopper-{kind}-{version}" and "-v2" not in path.name
        assert meta["recipe"]["source"] == "shipped"
        data = read_d4rl_hdf5(path, env="hopper")
        assert_d4rl_layout(data, "hopper")
        assert meta["statistics"]["transitions"] == data.size
    sizes = {k: read_d4rl_hdf5(p, env="hopper").size for k, p in small_hopper.items()}
    assert sizes["random"] == sizes["medium"] == sizes["expert"] == SMALL.dataset_size
    assert sizes["medium-expert"] == 2 * SMALL.dataset_size
    # medium-replay: the schedule, each piece scaled by dataset_size / 1M (at least 1 row).
    scale = SMALL.dataset_size / generate.FULL_SIZE
    pieces = manifest["medium_replay"]["pieces"]
    assert sizes["medium-replay"] == sum(max(1, round(p["transitions"] * scale))
                                         for p in pieces)


def test_regenerating_with_another_seed_passes_the_statistics_check_and_a_shift_fails(
        small_hopper, tmp_path, monkeypatch):
    # random: about 20 episodes in 400 rows, enough for the check's standard errors.
    reference = read_d4rl_metadata(small_hopper["random"])["statistics"]
    assert reference["episodes"] >= 10
    monkeypatch.setattr(generate, "reference_statistics",
                        lambda env, kind, profile: reference if kind == "random" else None)
    # Seed 1 meets other episodes of the same distribution: within 4 standard errors.
    path = generate.generate_env_datasets("hopper", SMALL, seed=1, kinds=["random"],
                                          out_dir=tmp_path, progress=False)["random"]
    assert read_d4rl_metadata(path)["reference_check"] == "matches"
    assert read_d4rl_metadata(path)["checksum"] != read_d4rl_metadata(
        small_hopper["random"])["checksum"]
    found = read_d4rl_metadata(path)["statistics"]
    error = np.sqrt(found["length_std"] ** 2 / found["episodes"]
                    + reference["length_std"] ** 2 / reference["episodes"])
    shifted = {**reference, "length_mean": found["length_mean"] + 8 * error}
    monkeypatch.setattr(generate, "reference_statistics",
                        lambda env, kind, profile: shifted if kind == "random" else None)
    with pytest.raises(DatasetError, match="reference_stats.test-small.random"):
        generate.generate_env_datasets("hopper", SMALL, seed=1, kinds=["random"],
                                       out_dir=tmp_path / "x", progress=False)


@pytest.mark.parametrize("env", SHIPPED)
def test_regenerated_data_matches_the_shipped_reference_statistics(env, tmp_path):
    """The cross-machine claim, tested on whatever processor runs it: medium and expert data
    regenerated from the shipped policies have the statistics recorded on the development
    machine, within 4 standard errors (generate raises otherwise)."""
    assert set(policies.load_manifest(env)["reference_stats"][CHECKED.name]) == {
        "medium", "expert"}
    paths = generate.generate_env_datasets(env, CHECKED, seed=0, kinds=["medium", "expert"],
                                           out_dir=tmp_path, progress=False)
    for path in paths.values():
        assert read_d4rl_metadata(path)["reference_check"] == "matches"


def test_shipped_expert_beats_shipped_medium():
    manifest = policies.load_manifest("hopper")
    returns = {}
    for role in ("medium", "expert"):
        stats = evaluate_actor("hopper", policies.load_role("hopper", role, manifest=manifest),
                               episodes=4, seed=0)
        returns[role] = stats["normalized_mean"]
    assert returns["expert"] > returns["medium"] + 20, returns


def test_a_run_directory_refuses_a_second_version_of_a_dataset(tmp_path):
    from offrl_jax.training.runner import check_same_data

    path = tmp_path / "run.json"
    previous = {"data": {"hopper-medium": {"dataset_id": "hopper-medium-gen1", "path": "/a"}}}
    # The same version elsewhere on disk (another machine's cache) is the same data.
    check_same_data(path, previous, "hopper-medium", {"dataset_id": "hopper-medium-gen1",
                                                      "path": "/b"})
    check_same_data(path, previous, "walker2d-medium", {"dataset_id": "x", "path": "/c"})
    with pytest.raises(ValueError) as info:
        check_same_data(path, previous, "hopper-medium",
                        {"dataset_id": "hopper_medium-v2", "path": "/d4rl/hopper_medium-v2.hdf5"})
    message = str(info.value)
    for fragment in (str(path), "data.hopper-medium.dataset_id", "'hopper-medium-gen1'",
                     "'hopper_medium-v2'"):
        assert fragment in message, fragment
    with pytest.raises(ValueError, match="dataset_id' missing"):
        check_same_data(path, {"data": {"hopper-medium": {"path": "/a"}}}, "hopper-medium",
                        {"dataset_id": "hopper-medium-gen1", "path": "/a"})


def test_stats_table_shows_files_beside_d4rl(small_hopper, tmp_path, monkeypatch):
    from offrl_jax.generation.stats import stats_table

    monkeypatch.setenv("OFFRL_DATA_DIR", str(tmp_path))  # nothing generated there
    path = small_hopper["medium"]
    table = stats_table(["hopper"], "quick", [f"hopper:{path}"])
    stats = read_d4rl_metadata(path)["statistics"]
    row = next(line for line in table.splitlines() if line.startswith(f"| {path.name} "))
    assert f"{stats['normalized_mean']:.1f} +- {stats['normalized_std']:.1f}" in row
    assert "1,000,000, 2,186, 44.3 +- 11.6, 457" in row  # D4RL v2 hopper-medium
    assert "| hopper-expert-gen1 (quick) | not generated |" in table
    with pytest.raises(ValueError, match="expected ENV:PATH"):
        stats_table(["hopper"], "quick", [str(path)])
