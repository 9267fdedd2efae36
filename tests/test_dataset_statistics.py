"""How good a dataset's best episodes are: the best return, the best tenth's mean and the share
of transitions from episodes above 90, on data whose episodes are known, also through
``offrl data stats`` for a D4RL and a Minari file."""

import numpy as np
import pytest

from offrl_jax.data import episodes_to_arrays, write_d4rl_hdf5, write_minari
from offrl_jax.generation.generate import dataset_statistics, return_statistics
from offrl_jax.generation.stats import stats_table
from offrl_jax.tasks import get_env_spec

HOPPER = get_env_spec("hopper")
# 20 episodes: normalized 5, 10, ..., 100; episode i has i + 1 rows.
NORMALIZED = 5.0 * np.arange(1, 21)
LENGTHS = np.arange(1, 21)


def raw_return(normalized):
    return HOPPER.ref_min_return + normalized / 100 * (HOPPER.ref_max_return
                                                       - HOPPER.ref_min_return)


def episodes():
    rng = np.random.default_rng(0)
    out = []
    for score, length in zip(NORMALIZED, LENGTHS, strict=True):
        flags = np.zeros(length, np.float32)
        flags[-1] = 1.0
        out.append({"observations": rng.normal(size=(length + 1, HOPPER.obs_dim)),
                    "actions": rng.uniform(-1, 1, (length, HOPPER.act_dim)),
                    "rewards": np.full(length, raw_return(score) / length),
                    "terminations": flags, "truncations": 0 * flags})
    return out


# Top tenth: the 2 best of 20 episodes (95 and 100); above 90: episodes 95 and 100, 19 + 20 of
# the 210 rows.
EXPECTED = {"normalized_max": 100.0, "normalized_top_decile_mean": 97.5,
            "share_above_90": 39 / 210}


def test_return_statistics_of_known_episodes():
    found = return_statistics("hopper", episodes_to_arrays(episodes()))
    assert found == pytest.approx(EXPECTED, rel=1e-9)


def test_top_decile_keeps_at_least_one_episode_and_rounds_down():
    few = episodes()[:9]  # 9 episodes: floor(0.9) -> the best one alone
    found = return_statistics("hopper", episodes_to_arrays(few))
    assert found["normalized_top_decile_mean"] == pytest.approx(45.0)
    assert found["share_above_90"] == 0.0


def test_stats_command_shows_them_for_d4rl_and_minari_files(tmp_path, monkeypatch):
    monkeypatch.setenv("OFFRL_DATA_DIR", str(tmp_path / "cache"))  # nothing generated there
    arrays = episodes_to_arrays(episodes())
    d4rl = write_d4rl_hdf5(tmp_path / "hopper-medium-v2.hdf5", arrays)
    minari = write_minari(tmp_path / "hopper_medium_minari", episodes())
    table = stats_table(["hopper"], "quick", [f"hopper:{d4rl}", f"hopper:{minari}"])
    header, rule, *rows = table.splitlines()
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert len(columns) == rule.count("---")
    for name in (d4rl.name, minari.name):
        row = next(r for r in rows if r.startswith(f"| {name} "))
        cells = dict(zip(columns, (c.strip() for c in row.strip("|").split("|")),
                         strict=True))
        assert cells["normalized max"] == "100.0"
        assert cells["top-10% episodes' mean"] == "97.5"
        assert cells["transitions from episodes > 90"] == f"{100 * 39 / 210:.1f}%"
        assert cells["normalized mean +- std"].startswith("52.5 +- ")


def test_generated_metadata_keeps_its_keys():
    # Adding a key to the stored statistics would change every regenerated file's bytes.
    assert set(dataset_statistics("hopper", episodes_to_arrays(episodes()))) == {
        "transitions", "episodes", "normalized_mean", "normalized_std", "length_mean",
        "length_std"}
