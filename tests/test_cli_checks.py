"""``offrl bench`` and ``offrl evaluate``: numeric flags checked before any data step, runs
outside git by default, and a smoke profile's summary that says what it is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from offrl_jax.cli import main
from offrl_jax.training import cli as training_cli
from offrl_jax.training import runner

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_data_step(tmp_path, monkeypatch):
    """A working directory and data cache of their own, and every data or training step an
    error, so a test sees whether a command got as far as one."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a data or training step ran")

    for name in ("ensure_dataset", "load_task_dataset", "run_plan"):
        monkeypatch.setattr(runner, name, forbidden)
    monkeypatch.setenv("OFFRL_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "0"], "--seeds: expected a whole number >= 1, found 0"),
    (["--seeds", "-1"], "--seeds: expected a whole number >= 1, found -1"),
    (["--updates", "-5"], "--updates: expected a whole number >= 1, found -5"),
    (["--updates", "0"], "--updates: expected a whole number >= 1, found 0"),
    (["--eval-every", "0"], "--eval-every: expected a whole number >= 1, found 0"),
    (["--eval-episodes", "-2"], "--eval-episodes: expected a whole number >= 1, found -2"),
    (["--ray", "local", "--ray-gpus-per-cell", "-1"],
     "--ray-gpus-per-cell: expected a number >= 0, found -1"),
    (["--ray", "local", "--ray-cpus-per-cell", "0"],
     "--ray-cpus-per-cell: expected a number > 0, found 0"),
    (["--config", "missing/config.json", "--seeds", "0"],
     "--seeds: expected a whole number >= 1, found 0"),
])
def test_bench_numbers_are_checked_before_any_data_step(no_data_step, argv, message):
    with pytest.raises(SystemExit) as raised:
        main(["bench", "--profile", "tiny", "--algos", "bc", *argv])
    text = str(raised.value)
    assert text.startswith("offrl bench: ") and message in text and "\n" not in text
    assert list(no_data_step.iterdir()) == []  # no data, no run directory


@pytest.mark.parametrize("argv, message", [
    (["--episodes", "0"], "--episodes: expected a whole number >= 1, found 0"),
    (["--seed", "-3"], "--seed: expected a whole number >= 0, found -3"),
])
def test_evaluate_numbers_are_checked(no_data_step, argv, message):
    with pytest.raises(SystemExit) as raised:
        main(["evaluate", str(no_data_step / "run"), *argv])
    assert str(raised.value) == f"offrl evaluate: {message}"


def test_bench_writes_outside_git_by_default(tmp_path, monkeypatch):
    calls = []

    def fake_run(plan, *args, **kwargs):
        calls.append((list(plan.seeds), str(plan.out_dir)))

    monkeypatch.setattr(runner, "run_plan", fake_run)
    monkeypatch.chdir(tmp_path)
    main(["bench", "--profile", "tiny", "--algos", "bc"])
    main(["bench", "--profile", "tiny", "--algos", "bc", "--seeds", "1", "--out", "mine"])
    assert calls == [([0, 1], "runs/tiny"), ([0], "mine")]
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "/runs/" in ignored


def _recipe(target: str) -> str:
    text = (REPO / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", text, re.MULTILINE)
    assert match, f"Makefile: no target {target}"
    return match.group(1)


def test_make_benchmark_leaves_committed_results_alone():
    assert "results/" not in _recipe("benchmark")
    assert "--profile quick --out results/quick" in _recipe("results-quick")


def test_smoke_summary_opens_with_its_budget(tmp_path, monkeypatch):
    def fake_run(plan, *args, **kwargs):
        plan.out_dir.mkdir(parents=True)
        (plan.out_dir / "summary.md").write_text("| algorithm | task |\n")

    monkeypatch.setattr(runner, "run_plan", fake_run)
    monkeypatch.chdir(tmp_path)
    main(["bench", "--profile", "quick", "--algos", "bc", "mopo", "--out", "q"])
    summary = (tmp_path / "q" / "summary.md").read_text()
    first, rest = summary.split("\n\n", 1)
    assert first.startswith("**A budget-limited run")
    assert "bc 100k of 1M, mopo 5k of 3M" in first
    assert "results/validate/summary.md" in first
    assert rest == "| algorithm | task |\n"


def test_budget_note_only_for_budget_profiles(tmp_path):
    assert training_cli.budget_note("validate", {"bc": 200_000}) == ""
    assert training_cli.budget_note("quick", {"bc": 1_000_000}) == ""
    note = training_cli.budget_note("tiny", {"bc": 200, "cql": 1_500_000})
    assert "bc 200 of 1M" in note and "cql" not in note
    assert [training_cli.format_count(n) for n in (200, 2_000, 10_000, 1_500_000, 12_345)] == [
        "200", "2k", "10k", "1.5M", "12345"]


def test_budget_note_quotes_the_validated_rows_of_the_same_tasks(tmp_path):
    table = tmp_path / "summary.csv"
    table.write_text("algorithm,task,final_mean,final_std,seeds\n"
                     "bc,hopper-medium-replay,22.04,9.11,5\n"
                     "td3bc,hopper-medium-replay,89.2,8.8,5\n"
                     "td3bc,hopper-medium-expert,100.0,1.0,5\n")
    note = training_cli.budget_note("quick", {"bc": 100_000, "td3bc": 100_000, "iql": 100_000},
                                    ["hopper-medium-replay"], validated=table)
    assert ("bc 22.0 ± 9.1 (5 seeds), td3bc 89.2 ± 8.8 (5 seeds)." in note
            and "100.0" not in note and "iql" not in note.split("Validated")[1])
    # No validated rows for the task: the note points to the file instead.
    note = training_cli.budget_note("quick", {"bc": 100_000}, ["walker2d-medium"],
                                    validated=table)
    assert "Validated on" not in note and "results/validate/summary.md" in note
