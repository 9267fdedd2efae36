"""The device check at CPU size: every section measured, written as JSON and Markdown, the
device named, and the full-profile projection computed from the measured rates."""

import json

from benchmarks import device_check


def test_device_check_writes_a_complete_table(tmp_path):
    result = device_check.main(["--size", "small", "--algos", "bc", "--seeds", "1", "2",
                                "--updates", "20", "--env-batch", "2", "--env-steps", "5",
                                "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "device_check.json").read_text())
    assert saved["device"] == result["device"] and saved["device"].startswith("cpu")
    assert [(row["algorithm"], row["seeds"]) for row in saved["training"]] == [("bc", 1),
                                                                               ("bc", 2)]
    assert all(row["updates_per_s"] > 0 and row["compile_s"] > 0 for row in saved["training"])
    assert saved["rollout"]["seconds"] > 0 and saved["rollout"]["starts"] == 1000
    assert saved["env"]["device_steps_per_s"] > 0 and saved["env"]["host_steps_per_s"] > 0
    # The projection uses the 2-seed rate (the most measured below the profile's 5 seeds):
    # 9 tasks x 1M updates at that rate.
    projected = saved["projection"]["bc"]
    rate = saved["training"][1]["updates_per_s"]
    assert projected["rate_seeds"] == 2
    assert abs(projected["hours"] - 9 * 1_000_000 / rate / 3600) < 1e-9
    text = (tmp_path / "device_check.md").read_text()
    assert text.startswith(f"# Device check: {saved['device']}")
    assert "| bc | 2 |" in text and "MOPO rollout" in text and "| all | | |" in text


def test_device_check_stops_at_its_budget(tmp_path):
    result = device_check.main(["--size", "small", "--algos", "bc", "--seeds", "1",
                                "--budget-s", "0", "--out", str(tmp_path)])
    assert result["training"][0]["skipped"].startswith("budget")
    assert "skipped" in result["rollout"] and "skipped" in result["env"]
    assert result["projection"] == {}
    assert "skipped: budget" in (tmp_path / "device_check.md").read_text()
