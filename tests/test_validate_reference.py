"""The validate profile's reference statistics: the published datasets' facts, checked on
regeneration, while a regenerated file keeps the published bytes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from offrl_jax.data import DatasetError, read_d4rl_metadata
from offrl_jax.data.checksum import path_sha256
from offrl_jax.generation import generate, get_data_profile

VALIDATE = get_data_profile("validate")


@pytest.mark.parametrize("kind, transitions, episodes, mean", [
    ("medium-replay", 240_000, 1_721, 12.1),   # hopper-medium-replay-gen1, sha256 a146cea3...
    ("medium-expert", 400_000, 687, 63.0),     # hopper-medium-expert-gen1, sha256 28d808f6...
])
def test_validate_references_are_the_published_datasets(kind, transitions, episodes, mean):
    reference = generate.reference_statistics("hopper", kind, VALIDATE)
    assert reference is not None
    assert (reference["transitions"], reference["episodes"]) == (transitions, episodes)
    assert round(reference["normalized_mean"], 1) == mean
    assert generate.compare_statistics(reference, reference) == []


def test_validate_files_keep_their_bytes_and_are_still_checked(tmp_path, monkeypatch):
    # A test-sized profile that, like validate, keeps the check's outcome out of its files.
    profile = dataclasses.replace(VALIDATE, name="test-validate", dataset_size=400,
                                  collect_envs=2)
    assert not profile.metadata_records_check and get_data_profile("quick").metadata_records_check

    def made(reference, out):
        monkeypatch.setattr(generate, "reference_statistics",
                            lambda env, kind, profile: reference)
        return generate.generate_env_datasets("hopper", profile, kinds=["random"],
                                              out_dir=tmp_path / out, progress=False)["random"]

    before = made(None, "before")  # made before any reference existed
    reference = read_d4rl_metadata(before)["statistics"]
    after = made(reference, "after")
    assert read_d4rl_metadata(after)["reference_check"] == "no reference"
    assert path_sha256(after) == path_sha256(before)

    error = np.sqrt(2 * reference["length_std"] ** 2 / reference["episodes"])
    shifted = {**reference, "length_mean": reference["length_mean"] + 8 * error}
    with pytest.raises(DatasetError, match="reference_stats.test-validate.random"):
        made(shifted, "shifted")
