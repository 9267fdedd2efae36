"""The tables' "±" is the sample std, and each row says where its run's settings differ from
the algorithm's reference settings."""

import json

import numpy as np
import pytest

from offrl_jax.results.compare import comparison_markdown, comparison_rows
from offrl_jax.results.settings import differences, row_settings, run_settings, sample_std
from offrl_jax.results.summary import summarize, summary_markdown
from offrl_jax.training.profiles import reference_updates

REFERENCE = reference_updates(["rebrac", "edac", "bc", "iql"])


def records(algorithm, task, finals):
    return [{"algorithm": algorithm, "task": task, "seed": seed, "step": 1000, "failed": False,
             "normalized_score": score, "return": score}
            for seed, score in enumerate(finals)]


def test_plus_minus_is_the_sample_std_and_the_headers_say_so():
    recs = records("bc", "hopper-medium", [10.0, 20.0, 60.0])
    expected = np.std([10.0, 20.0, 60.0], ddof=1)
    assert sample_std([10.0, 20.0, 60.0]) == pytest.approx(expected)
    assert np.isnan(sample_std([5.0]))
    rows = summarize(recs)
    assert rows[0]["final_std"] == pytest.approx(expected)
    run_info = {"profile": "quick", "data": {}}
    summary = summary_markdown(rows, run_info)
    assert "final (mean ± sample std)" in summary and "ddof=1" in summary
    compared = comparison_rows(recs, run_info)
    assert compared[0]["final_std"] == pytest.approx(expected)
    table = comparison_markdown(compared, run_info)
    assert f"30.0 ± {expected:.1f}" in table and "ddof=1" in table


def test_differences_name_every_setting_off_the_reference_and_the_budget():
    from offrl_jax.algorithms.base import config_paths
    from offrl_jax.algorithms.registry import get_algorithm

    reference = config_paths(get_algorithm("rebrac").make_config("hopper-medium-replay"))
    assert reference["batch_size"] == 1024
    settings = {**reference, "batch_size": 256}
    assert differences("rebrac", "hopper-medium-replay", settings, 100_000, REFERENCE) == [
        "batch_size=256 (ref. 1024)", "100k of 1M updates"]
    assert differences("rebrac", "hopper-medium-replay", reference, 1_000_000,
                       REFERENCE) == []
    edac = config_paths(get_algorithm("edac").make_config("hopper-medium-replay"))
    assert differences("edac", "hopper-medium-replay", {**edac, "agent.num_qs": 10},
                       50_000, REFERENCE) == [f"agent.num_qs=10 (ref. {edac['agent.num_qs']})",
                                   "50k of 3M updates"]


def test_rows_show_their_settings_from_config_json(tmp_path):
    from offrl_jax.algorithms.base import config_paths
    from offrl_jax.algorithms.registry import get_algorithm

    task = "hopper-medium-replay"
    bc = config_paths(get_algorithm("bc").make_config(task))
    rebrac = {**config_paths(get_algorithm("rebrac").make_config(task)), "batch_size": 256}
    config = {"train": {"bc": {"num_updates": 1_000_000}, "rebrac": {"num_updates": 100_000}},
              "settings": {f"bc/{task}": {k: list(v) if isinstance(v, tuple) else v
                                          for k, v in bc.items()},
                           f"rebrac/{task}": {k: list(v) if isinstance(v, tuple) else v
                                              for k, v in rebrac.items()}}}
    (tmp_path / "config.json").write_text(json.dumps(config))
    settings = run_settings(tmp_path, {}, REFERENCE)
    assert row_settings(settings, "bc", [task]) == "reference"
    assert row_settings(settings, "rebrac", [task]) == ("batch_size=256 (ref. 1024); "
                                                         "100k of 1M updates")
    assert row_settings(settings, "iql", [task]) == "-"
    recs = records("bc", task, [10.0, 20.0]) + records("rebrac", task, [30.0, 50.0])
    table = comparison_markdown(comparison_rows(recs, {}, settings=settings), {})
    line = next(x for x in table.splitlines() if x.startswith("| rebrac "))
    assert line.endswith("| batch_size=256 (ref. 1024); 100k of 1M updates |")
