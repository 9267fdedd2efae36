"""The comparison table (each algorithm beside BC, the dataset's mean and its paper's score) and
the report's algorithm filter and data check: known answers on hand-made records."""

import json

import numpy as np
import pytest

from offrl_jax.algorithms.registry import ALGORITHMS
from offrl_jax.results.compare import comparison_markdown, comparison_rows
from offrl_jax.results.merge import MergeError, merge_runs
from offrl_jax.results.published import (
    PUBLISHED,
    REFERENCE_RUNS,
    REFERENCE_SOURCES,
    SOURCES,
    published_score,
    reference_score,
)
from offrl_jax.training.profiles import reference_updates


def records(algo, task, scores_per_seed, every=1000):
    """One record per (seed, evaluation); scores_per_seed {seed: [score at each evaluation]}."""
    return [{"algorithm": algo, "task": task, "seed": seed, "step": every * (i + 1),
             "failed": False, "return": score, "normalized_score": score, "metrics": {}}
            for seed, scores in scores_per_seed.items() for i, score in enumerate(scores)]


def run_info(mean=12.5, sha="a" * 64, train=None):
    return {"profile": "validate", "device": "cpu", "commit": "abc",
            "train": train or {},
            "data": {"hopper-medium-replay": {
                "dataset_id": "hopper-medium-replay-gen1", "sha256": sha,
                "generated": {"recipe": {"source": "shipped", "profile": "validate", "seed": 0},
                              "statistics": {"normalized_mean": mean, "normalized_std": 1.0,
                                             "transitions": 100, "episodes": 2}}}}}


TASK = "hopper-medium-replay"
REFERENCE = reference_updates(ALGORITHMS)


def test_rows_have_the_known_differences_to_bc_and_the_data():
    bc = records("bc", TASK, {0: [10.0, 20.0], 1: [10.0, 30.0]})
    # iql: every seed above every BC seed; cut short at 1000 of 4000 planned updates.
    iql = records("iql", TASK, {0: [40.0], 1: [50.0], 2: [60.0]})
    # td3bc: ties BC's seeds exactly, so P(> BC) is a half.
    td3bc = records("td3bc", TASK, {0: [0.0, 20.0], 1: [0.0, 30.0]})
    info = run_info(train={"iql": {"num_updates": 4000}, "bc": {"num_updates": 2000}})
    rows = {r["algorithm"]: r for r in comparison_rows(bc + iql + td3bc, info)}
    assert list(rows) == ["bc", "iql", "td3bc"]  # BC first
    assert rows["bc"]["final_mean"] == 25.0  # sample std of 20 and 30:
    assert rows["bc"]["final_std"] == pytest.approx(np.sqrt(50.0))
    assert rows["bc"]["last_mean"] == pytest.approx(17.5) and rows["bc"]["last_n"] == 2
    assert rows["bc"]["vs_bc"] is None and rows["bc"]["p_over_bc"] is None
    assert rows["iql"]["vs_bc"] == pytest.approx(25.0)
    assert rows["iql"]["p_over_bc"][0] == 1.0
    assert rows["td3bc"]["p_over_bc"][0] == pytest.approx(0.5)
    assert (rows["iql"]["updates"], rows["iql"]["planned"]) == (1000, 4000)
    assert rows["iql"]["dataset_mean"] == 12.5
    text = comparison_markdown(list(rows.values()), info)
    assert "Dataset mean (normalized return of its episodes): 12.5." in text
    iql_line = next(line for line in text.splitlines() if line.startswith("| iql |"))
    cells = [c.strip() for c in iql_line.strip("|").split("|")]
    assert cells[1:7] == ["3", "1k of 4k", "50.0 ± 10.0", "50.0 (1)", "+25.0",
                          "1.00 [1.00, 1.00]"]
    assert cells[7] == "+37.5"  # final 50.0 against the data's 12.5
    bc_line = next(line for line in text.splitlines() if line.startswith("| bc |"))
    assert "| 2k |" in bc_line and "| - | - |" in bc_line  # no "of": it ran its plan


def test_a_task_without_bc_or_statistics_leaves_those_columns_empty():
    info = {"data": {TASK: {"format": "d4rl", "path": "x.hdf5"}}}
    rows = comparison_rows(records("cql", TASK, {0: [5.0], 1: [7.0]}), info)
    assert rows[0]["vs_bc"] is None and rows[0]["dataset_mean"] is None
    assert "Dataset mean (normalized return of its episodes): unknown." in \
        comparison_markdown(rows, info)
    # ARMOR has a paper's score but no public re-run: its column is "-", no sources line.
    text = comparison_markdown(comparison_rows(records("armor", TASK, {0: [5.0]}), info), info)
    assert "| 97.1 [armor] | - |" in text and "Re-run sources" not in text


def test_every_published_score_names_a_source_and_is_a_normalized_score():
    assert PUBLISHED[TASK], "the validation tasks have published scores"
    for task, table in PUBLISHED.items():
        for algo, (score, key) in table.items():
            assert published_score(algo, task + "-v2") == (score, key)
            assert 0.0 < score < 130.0 and SOURCES[key]
    for task, table in REFERENCE_RUNS.items():
        assert set(table) <= set(PUBLISHED[task]), "a re-run of an algorithm with no paper row"
        for algo, (score, key) in table.items():
            assert reference_score(algo, task + "-v2") == (score, key)
            assert 0.0 < score < 130.0 and REFERENCE_SOURCES[key]
    assert published_score("bc", "ant-medium") is None
    assert reference_score("armor", TASK) is None  # no public re-run table


def write_run(directory, info, recs):
    (directory / "records").mkdir(parents=True)
    (directory / "run.json").write_text(json.dumps(info))
    by_algo = {}
    for r in recs:
        by_algo.setdefault(r["algorithm"], []).append(r)
    for algo, rs in by_algo.items():
        (directory / "records" / f"{algo}__{TASK}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rs))


def test_report_keeps_only_the_named_algorithms_and_checks_the_data_file(tmp_path):
    cpu = records("bc", TASK, {s: [20.0] for s in range(5)}) + \
        records("iql", TASK, {s: [60.0] for s in range(5)})
    gpu = records("cql", TASK, {s: [80.0] for s in range(3)})
    write_run(tmp_path / "cpu", run_info(), cpu)
    write_run(tmp_path / "gpu", {**run_info(), "device": "gpu"}, gpu)
    rows = merge_runs([tmp_path / "cpu", tmp_path / "gpu"], tmp_path / "m", ["bc", "cql"],
                      reference_updates=REFERENCE)
    assert {r["algorithm"] for r in rows} == {"bc", "cql"}
    assert sorted(p.name for p in (tmp_path / "m" / "records").iterdir()) == \
        [f"bc__{TASK}.jsonl", f"cql__{TASK}.jsonl"]
    comparison = (tmp_path / "m" / "comparison.md").read_text()
    assert "| cql | 3 | 1k |" in comparison and "+60.0" in comparison
    assert "| 95.0 [iql] | 95.1 [corl] |" in comparison and "[iql] IQL paper" in comparison
    assert "[corl] CORL" in comparison and "offlinerl-kit" not in comparison  # cited if used
    with pytest.raises(MergeError, match="--algos td3bc: in none of the runs"):
        merge_runs([tmp_path / "cpu", tmp_path / "gpu"], tmp_path / "n", ["bc", "td3bc"],
                   reference_updates=REFERENCE)
    # The same dataset id made twice, differently (another machine's data): refused.
    write_run(tmp_path / "other", run_info(sha="b" * 64), gpu)
    with pytest.raises(MergeError, match="different files"):
        merge_runs([tmp_path / "cpu", tmp_path / "other"], tmp_path / "o",
                   reference_updates=REFERENCE)
    assert np.isfinite(rows[0]["final_mean"])


def test_a_measured_peer_gets_its_own_columns_with_the_probability_of_improvement():
    ours = records("td3bc", TASK, {0: [50.0, 80.0], 1: [60.0, 90.0], 2: [55.0, 85.0]})
    peer = records("d3rlpy-td3bc", TASK, {0: [40.0, 60.0], 1: [45.0, 70.0], 2: [50.0, 65.0]})
    bc = records("bc", TASK, {0: [20.0, 20.0], 1: [30.0, 30.0], 2: [25.0, 25.0]})
    rows = {r["algorithm"]: r for r in comparison_rows(ours + peer + bc, run_info())}
    mean, std, seeds, updates = rows["td3bc"]["peer"]
    assert (mean, seeds, updates) == (65.0, 3, 2000) and std == pytest.approx(5.0)
    # Every seed of ours (80, 85, 90) is above every seed of the peer (60, 65, 70).
    assert rows["td3bc"]["p_over_peer"][0] == pytest.approx(1.0)
    assert rows["bc"]["peer"] is None and rows["d3rlpy-td3bc"]["peer"] is None
    table = comparison_markdown(list(rows.values()), run_info())
    assert "| measured peer (d3rlpy, same data)" in table
    assert "| 65.0 ± 5.0 (3, 2k) | 1.00 [1.00, 1.00] |" in table
    # Without a peer the columns are absent.
    assert "measured peer" not in comparison_markdown(comparison_rows(ours + bc, run_info()),
                                                      run_info())
