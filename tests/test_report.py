"""Score tables from records: known answers, failed seeds, and the provenance line."""

import numpy as np
import pytest

from offrl_jax.results.summary import summarize, summary_markdown


def records(algo, task, scores_per_seed, failed_seeds=()):
    """One record per (seed, evaluation); scores_per_seed {seed: [score at step 1, 2, ...]}."""
    out = []
    for seed, scores in scores_per_seed.items():
        for i, score in enumerate(scores):
            out.append({"algorithm": algo, "task": task, "seed": seed, "step": 1000 * (i + 1),
                        "failed": False, "return": score, "normalized_score": score,
                        "metrics": {}})
    for seed, score in dict(failed_seeds).items():
        out.append({"algorithm": algo, "task": task, "seed": seed, "step": 1000, "failed": True,
                    "return": score, "normalized_score": score, "metrics": {}})
    return out


def test_summary_rows_have_the_known_final_and_last10_scores():
    # 12 evaluations per seed: last-10 averages evaluations 3..12.
    seed0 = [0.0, 0.0] + [10.0] * 9 + [20.0]
    seed1 = [0.0, 0.0] + [30.0] * 9 + [40.0]
    rows = summarize(records("bc", "hopper-medium", {0: seed0, 1: seed1}))
    by_task = {r["task"]: r for r in rows}
    row = by_task["hopper-medium"]
    assert row["final_mean"] == pytest.approx(30.0)
    assert row["final_std"] == pytest.approx(np.sqrt(200.0))  # sample std of 20 and 40
    assert row["last10_mean"] == pytest.approx(np.mean([11.0, 31.0]))
    assert (row["seeds"], row["failed_seeds"]) == (2, 0)
    assert row["final_ci_low"] <= row["final_iqm"] <= row["final_ci_high"]
    assert by_task["all tasks"]["final_mean"] == pytest.approx(30.0)


def test_failed_seeds_stay_in_every_aggregate():
    """A diverged seed (scored with its last finite parameters) pulls the mean down; it is
    counted, not dropped. An evaluation without a score (older records) is left out."""
    rows = summarize(records("bc", "hopper-medium", {0: [20.0], 1: [40.0]},
                             failed_seeds={2: 0.0, 3: None}))
    row = next(r for r in rows if r["task"] == "hopper-medium")
    assert row["final_mean"] == pytest.approx(20.0)  # (20 + 40 + 0) / 3
    assert (row["seeds"], row["failed_seeds"]) == (3, 2)


@pytest.mark.parametrize("modified", [False, True])
def test_summary_names_the_commit_and_local_changes(modified):
    rows = summarize(records("bc", "hopper-medium", {0: [5.0], 1: [7.0]}))
    text = summary_markdown(rows, {"profile": "tiny", "device": "cpu (cpu)", "device_count": 1,
                                   "commit": "abc123", "code_modified_since_commit": modified})
    assert "| bc | hopper-medium | 6.0 ± 1.4 |" in text  # sample std of 5 and 7
    assert ("commit abc123 with local changes." in text) == modified
    assert ("commit abc123." in text) == (not modified)


def test_report_merges_runs_and_refuses_double_seeds_and_mixed_data(toy_hopper_dataset,
                                                                     tmp_path):
    import json

    from offrl_jax.cli import main
    from offrl_jax.data import write_d4rl_hdf5

    write_d4rl_hdf5(tmp_path / "toy.hdf5", toy_hopper_dataset)
    task = f"merge-toy=hopper:{tmp_path / 'toy.hdf5'}"
    common = ["bench", "--profile", "tiny", "--algos", "bc", "--tasks", task, "--updates", "20",
              "--eval-every", "20", "--eval-episodes", "1"]
    main([*common, "--seeds", "1", "--out", str(tmp_path / "a")])
    main([*common, "--seeds", "2", "--out", str(tmp_path / "b")])  # seeds 0 and 1
    with pytest.raises(SystemExit, match=r"seed 0, step 20: in .*a and in .*b"):
        main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
              str(tmp_path / "m")])
    # Keep seed 1 only in b: the two runs together have seeds 0 and 1.
    path = tmp_path / "b" / "records" / "bc__merge-toy.jsonl"
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines()
                            if json.loads(line)["seed"] == 1))
    main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m")])
    merged = [json.loads(line) for line in
              (tmp_path / "m" / "records" / "bc__merge-toy.jsonl").read_text().splitlines()]
    assert sorted(r["seed"] for r in merged) == [0, 1]
    table = (tmp_path / "m" / "summary.md").read_text()
    assert "| bc | merge-toy |" in table and "| 2 | 0 |" in table
    info = json.loads((tmp_path / "m" / "run.json").read_text())
    assert set(info["merged_from"]) == {str(tmp_path / "a"), str(tmp_path / "b")}
    # Another version of the task's data in one of the runs: refused.
    run_json = tmp_path / "b" / "run.json"
    other = json.loads(run_json.read_text())
    other["data"]["merge-toy"]["dataset_id"] = "hopper-medium-gen1"
    run_json.write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="two versions of a dataset"):
        main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
              str(tmp_path / "n")])
