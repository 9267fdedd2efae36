"""The device check: the projections' arithmetic on a known rate table, the evaluation estimate,
a warm compile read from the persistent cache, and the whole check at --tiny size on a CPU
(every algorithm listed with a rate or the reason it has none, compile apart from the timed
calls, the projections computed from the measured rates)."""

import json

import pytest

from benchmarks import device_check
from offrl_jax.algorithms.registry import ALGORITHMS
from offrl_jax.training.compilation_cache import enable_compilation_cache


def test_projection_on_a_known_rate_table():
    rates = {"bc": {5: 1000.0, 1: 2000.0}, "cql": {1: 100.0}, "armor": {5: 500.0},
             "mopo": {5: 3000.0}}
    out = device_check.project(rates, device_check.POSTER, eval_s=10.0,
                               evaluations={"armor": 2})
    rows = out["algorithms"]
    # 9 tasks x 1M updates at 1000/s = 2.5 h; 100 evaluations x 10 s x 9 tasks = 2.5 h.
    assert rows["bc"]["rate_seeds"] == 5 and rows["bc"]["hours"] == pytest.approx(5.0)
    # Only a 1-seed rate: used, and said.
    assert rows["cql"]["hours"] == pytest.approx(25.0 + 2.5) and "1-seed" in rows["cql"][
        "rate_note"]
    # ARMOR scores pi_ref beside the policy: 200 evaluations per task.
    assert rows["armor"]["evaluations"] == 200 and rows["armor"]["hours"] == pytest.approx(10.0)
    # MOPO's reference budget is 3M updates, 300 evaluations.
    assert rows["mopo"]["train_hours"] == pytest.approx(2.5)
    assert rows["mopo"]["eval_hours"] == pytest.approx(7.5)
    assert out["hours"] == pytest.approx(5.0 + 27.5 + 10.0 + 10.0)
    assert out["missing"] == ["combo", "morel", "rambo", "atac", "iql"]
    assert device_check.project(rates, ["bc"], eval_s=None)["hours"] == pytest.approx(2.5)


def test_evaluation_estimate():
    # 1000 steps x (50 environments at 5000 steps/s + a 1 ms policy call).
    env = {"host_steps_per_s": 5000.0, "policy_call_s": 0.001}
    assert device_check.evaluation_seconds(env, 50) == pytest.approx(11.0)


def test_a_second_compile_reads_the_persistent_cache(tmp_path, toy_hopper_dataset):
    enable_compilation_cache(tmp_path, min_compile_s=0)
    try:
        row = device_check.measure_training("bc", True, 10, toy_hopper_dataset, 1,
                                            deadline=0.0, max_calls=5)
        assert row["steady_calls"] == device_check.MIN_CALLS and row["compile_s"] > 0
        assert row["updates_per_s"] > 0 and row["first_call_s"] > 0
        warm = device_check.warm_compile("bc", True, 10, toy_hopper_dataset, 1)
        assert warm["cache_hits"] >= 1
        assert any(tmp_path.iterdir())
    finally:
        enable_compilation_cache("off")


def test_the_warm_process_reads_the_cache_the_first_one_wrote(tmp_path):
    enable_compilation_cache(tmp_path, min_compile_s=0)
    try:
        dataset = device_check.synthetic_dataset(10)
        device_check.measure_training("bc", True, 10, dataset, 1, deadline=0.0, max_calls=3)
        args = device_check.parse_args(["--tiny", "--cache-dir", str(tmp_path)])
        warm = device_check._warm_process(args, [("bc", 1)], 120)
        assert "note" not in warm, warm.get("note")
        [row] = warm["rows"]
        assert row["algorithm"] == "bc" and row["cache_hits"] >= 1
    finally:
        enable_compilation_cache("off")


def test_device_check_at_tiny_size(tmp_path):
    result = device_check.main(["--tiny", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "device_check.json").read_text())
    assert saved["device"] == result["device"] and saved["device"].startswith("cpu")
    assert saved["commit"] and saved["versions"]["jax"]
    rows = {(row["algorithm"], row["seeds"]): row for row in saved["training"]}
    assert set(rows) == {(name, seeds) for name in ALGORITHMS for seeds in (5, 1)}
    measured = [row for row in rows.values() if "skipped" not in row]
    assert measured, "nothing measured in the tiny budget"
    for row in rows.values():
        if "skipped" in row:
            assert row["skipped"].strip()
        else:
            assert row["compile_s"] > 0 and row["steady_calls"] >= device_check.MIN_CALLS
            assert row["updates_per_s"] == pytest.approx(
                row["updates_per_call"] * row["steady_calls"] / row["steady_s"])
    assert saved["rollout"]["seconds"] > 0 and saved["env"]["host_steps_per_s"] > 0
    assert saved["eval_s"] == pytest.approx(device_check.evaluation_seconds(saved["env"], 50))
    assert "rows" in saved["warm"] or saved["warm"]["skipped"]
    rates = {}
    for row in measured:
        rates.setdefault(row["algorithm"], {})[row["seeds"]] = row["updates_per_s"]
    evaluations = {row["algorithm"]: row["evaluations_per_interval"] for row in measured}
    expected = device_check.project(rates, sorted(ALGORITHMS), saved["eval_s"], evaluations)
    assert saved["projections"]["full_profile"]["hours"] == pytest.approx(expected["hours"])
    text = (tmp_path / "device_check.md").read_text()
    assert text.startswith(f"# Device check: {saved['device']}")
    assert "(a) The poster's table" in text and "(b) The whole `full` profile" in text
    assert "MOPO model refresh" in text
