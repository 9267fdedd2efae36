import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offrl_jax.algorithms.registry import Algorithm, Registration, get_algorithm
from offrl_jax.results.summary import summarize
from offrl_jax.tasks import get_env_spec, get_task
from offrl_jax.training import TrainConfig, Trainer
from offrl_jax.training.loop import read_checkpoint
from offrl_jax.training.runner import run_benchmark

HOPPER = get_env_spec("hopper")
TRAIN = TrainConfig(num_updates=60, eval_every=20, eval_episodes=1)


def tiny_bc():
    algo = get_algorithm("bc")
    return algo, algo.make_config(overrides={"hidden_dims": (16, 16), "batch_size": 32})


def leaves_equal(a, b):
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_each_vmapped_seed_depends_only_on_its_own_seed(toy_hopper_dataset):
    """Seeds [3, 7] and [7, 3]: each seed's row is bit-identical in both orders. Both runs are
    the same compiled program on same-shaped arrays, so this holds on any processor; a 1-seed
    program is another compilation (see docs/reproducibility.md)."""
    algo, config = tiny_bc()
    together = Trainer(algo, config, toy_hopper_dataset, HOPPER, [3, 7], TRAIN).run()
    swapped = Trainer(algo, config, toy_hopper_dataset, HOPPER, [7, 3], TRAIN).run()
    for i in range(2):
        jax.tree_util.tree_map(
            lambda a, b, i=i: np.testing.assert_array_equal(a[i], b[1 - i]),
            together["state"].actor_params, swapped["state"].actor_params)
    seeds_params = jax.tree_util.tree_leaves(together["state"].actor_params)[0]
    assert np.max(np.abs(seeds_params[0] - seeds_params[1])) > 1e-2


class _Killed(Exception):
    pass


def test_resume_after_kill_is_bit_identical(toy_hopper_dataset, tmp_path):
    algo, config = tiny_bc()
    reference = Trainer(algo, config, toy_hopper_dataset, HOPPER, [0, 1], TRAIN,
                        checkpoint_dir=tmp_path / "a").run()

    def kill_after_second(done, total, records, new):
        if done == 2:
            raise _Killed

    with pytest.raises(_Killed):
        Trainer(algo, config, toy_hopper_dataset, HOPPER, [0, 1], TRAIN,
                checkpoint_dir=tmp_path / "b").run(kill_after_second)
    assert read_checkpoint(tmp_path / "b")[1]["next_interval"] == 2
    resumed_intervals = []
    trainer = Trainer(algo, config, toy_hopper_dataset, HOPPER, [0, 1], TRAIN,
                      checkpoint_dir=tmp_path / "b")

    def no_init():  # the checkpoint is read into shapes: init (ATAC's warm start) never runs
        raise AssertionError("a resumed run called Trainer.initial")

    trainer.initial = no_init
    resumed = trainer.run(lambda done, *_: resumed_intervals.append(done))
    assert resumed_intervals == [3]  # only the missing interval ran
    leaves_equal(reference["state"], resumed["state"])
    assert reference["records"] == resumed["records"]
    other = algo.make_config(overrides={"hidden_dims": (8,), "batch_size": 32})
    with pytest.raises(ValueError, match="fingerprint"):
        Trainer(algo, other, toy_hopper_dataset, HOPPER, [0, 1], TRAIN,
                checkpoint_dir=tmp_path / "b").run()


def test_init_updates_are_announced_once_and_a_resume_skips_them(toy_hopper_dataset, tmp_path):
    """ATAC's warm start runs inside init: the first call says so (nothing else shows progress
    until it ends); the resumed call reads the checkpoint and neither runs nor announces it."""
    algo = get_algorithm("atac")
    config = algo.make_config(overrides={"agent.hidden_dims": (16, 16), "batch_size": 32,
                                         "warmstart_steps": 7})
    train = TrainConfig(num_updates=40, eval_every=20, eval_episodes=1)
    lines = []

    def kill_after_first(done, total, records, new):
        raise _Killed

    with pytest.raises(_Killed):
        Trainer(algo, config, toy_hopper_dataset, HOPPER, [0, 1], train,
                checkpoint_dir=tmp_path / "w", log=lines.append).run(kill_after_first)
    assert [line for line in lines if "init runs" in line] == [
        "init runs 7 updates per row before the first interval (warm start or behaviour "
        "cloning; no progress until it ends)"]
    lines.clear()
    ran = []
    Trainer(algo, config, toy_hopper_dataset, HOPPER, [0, 1], train,
            checkpoint_dir=tmp_path / "w", log=lines.append).run(lambda done, *_: ran.append(done))
    assert ran == [2] and not [line for line in lines if "init runs" in line]
    assert get_algorithm("bc").make(tiny_bc()[1], HOPPER).init_updates(1000) == 0


def test_a_damaged_checkpoint_is_reported_and_the_previous_one_resumes(toy_hopper_dataset,
                                                                       tmp_path, capsys):
    """Truncating a data file of the newest checkpoint: the resume names it in one line and
    goes on from the previous good one, to the same final state as an uninterrupted run."""
    algo, config = tiny_bc()
    reference = Trainer(algo, config, toy_hopper_dataset, HOPPER, [0, 1], TRAIN,
                        log=None).run()

    def kill_after_third(done, total, records, new):
        if done == 3:
            raise _Killed

    with pytest.raises(_Killed):
        Trainer(algo, config, toy_hopper_dataset, HOPPER, [0, 1], TRAIN,
                checkpoint_dir=tmp_path / "c").run(kill_after_third)
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if p.name.isdigit()) == ["2", "3"]
    # Every data file (orbax keeps them in d/ folders; on several devices some are copies).
    newest = tmp_path / "c" / "3" / "state"
    for data in (f for f in newest.rglob("*") if f.is_file() and f.parent.name == "d"):
        data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
    ran = []
    resumed = Trainer(algo, config, toy_hopper_dataset, HOPPER, [0, 1], TRAIN,
                      checkpoint_dir=tmp_path / "c").run(lambda done, *_: ran.append(done))
    warning = [line for line in capsys.readouterr().out.splitlines() if "damaged" in line]
    assert len(warning) == 1 and str(tmp_path / "c" / "3") in warning[0]
    assert ran == [3]  # interval 3 ran again, from checkpoint 2
    leaves_equal(reference["state"], resumed["state"])
    assert reference["records"] == resumed["records"]


@flax.struct.dataclass
class _CounterState:
    count: jax.Array
    poisoned: jax.Array


@dataclasses.dataclass(frozen=True)
class _CounterConfig:
    poison_after: int = 25


@dataclasses.dataclass(frozen=True)
class _Counter(Algorithm):
    """Counts updates; seeds whose key draws 'poisoned' emit NaN losses after a while."""

    name = "counter"

    def init(self, key, dataset=None, pretrained=None):
        return _CounterState(jnp.zeros(()), jax.random.uniform(key) < 0.5)

    def update(self, state, dataset, key):
        count = state.count + 1
        loss = jnp.where(state.poisoned & (count > self.config.poison_after), jnp.nan, count)
        return state.replace(count=count), {"loss": loss}

    def act(self, state, obs, key, deterministic=True):
        return jnp.zeros((obs.shape[0], HOPPER.act_dim)) + 0.0 * state.count


def _counter_algorithm() -> Registration:
    return Registration("counter", _CounterConfig, _Counter)


def test_nan_seed_is_marked_failed_and_others_continue(toy_hopper_dataset):
    algo = _counter_algorithm()
    seeds = list(range(6))
    poisoned = np.array([bool(jax.random.uniform(jax.random.fold_in(jax.random.PRNGKey(s), 0))
                              < 0.5) for s in seeds])
    assert poisoned.any() and (~poisoned).any()
    out = Trainer(algo, algo.make_config(overrides={"poison_after": 25}), toy_hopper_dataset,
                  HOPPER, seeds, TRAIN).run()
    np.testing.assert_array_equal(np.asarray(out["failed"]), poisoned)
    counts = np.asarray(out["state"].count)
    np.testing.assert_array_equal(counts[~poisoned], 60.0)
    # Frozen at the start of the interval in which it failed (updates 21..40).
    np.testing.assert_array_equal(counts[poisoned], 20.0)
    last = [r for r in out["records"] if r["step"] == 60]
    assert [r["failed"] for r in last] == list(poisoned)
    # Failed seeds are evaluated with their last finite parameters and stay in the table.
    assert all(np.isfinite(r["normalized_score"]) for r in last)
    row = next(r for r in summarize([{"algorithm": "counter", "task": "toy", **r}
                                      for r in out["records"]]) if r["task"] == "toy")
    assert (row["seeds"], row["failed_seeds"]) == (len(seeds), int(poisoned.sum()))


def test_tiny_sweep_table_matches_records(toy_hopper_dataset, tmp_path):
    from offrl_jax.data import write_d4rl_hdf5

    data_file = tmp_path / "toy.hdf5"
    write_d4rl_hdf5(data_file, toy_hopper_dataset)
    rows = run_benchmark(["bc", "iql"], [f"toy-hopper=hopper:{data_file}"], [0, 1], "tiny",
                         tmp_path / "run", progress=False)
    assert get_task("toy-hopper").path == str(data_file.resolve())
    records = [json.loads(line) for path in sorted((tmp_path / "run" / "records").iterdir())
               for line in path.read_text().splitlines()]
    assert len(records) == 2 * 2 * 2  # algorithms x seeds x evaluations
    for algo in ("bc", "iql"):
        final = [r["normalized_score"] for r in records
                 if r["algorithm"] == algo and r["step"] == 200]
        last10 = [np.mean([r["normalized_score"] for r in records
                           if r["algorithm"] == algo and r["seed"] == s]) for s in (0, 1)]
        row = next(r for r in rows if r["algorithm"] == algo and r["task"] == "toy-hopper")
        assert row["final_mean"] == pytest.approx(np.mean(final))
        assert row["final_std"] == pytest.approx(np.std(final, ddof=1))
        assert row["last10_mean"] == pytest.approx(np.mean(last10))
        assert row["final_ci_low"] <= row["final_iqm"] <= row["final_ci_high"]
        assert row["seeds"] == 2 and row["failed_seeds"] == 0
    csv_text = (tmp_path / "run" / "summary.csv").read_text()
    assert csv_text.count("\n") == 1 + len(rows)
    table = (tmp_path / "run" / "summary.md").read_text()
    bc_row = next(r for r in rows if r["algorithm"] == "bc" and r["task"] == "toy-hopper")
    assert f"{bc_row['final_mean']:.1f} ± {bc_row['final_std']:.1f}" in table
    assert (tmp_path / "run" / "plots" / "scores.png").stat().st_size > 1000
    assert (tmp_path / "run" / "plots" / "curves_toy-hopper.png").exists()
    assert (tmp_path / "run" / "plots" / "performance_profile.png").stat().st_size > 1000
    # 2 evaluations and 2 seeds: "last-2", and every IQM marked as the mean.
    assert "last-2 mean ± sample std" in table and "IQM cuts nothing" in table
    assert f"| {bc_row['final_iqm']:.1f}* [" in table
    improvement = (tmp_path / "run" / "probability_of_improvement.md").read_text()
    assert improvement.startswith("| P(row > column) | bc | iql |")
    assert "| bc | - | " in improvement and "| iql | " in improvement
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["profile"] == "tiny" and info["device"].startswith("cpu")
    assert info["started"] <= info["this_invocation_started"] <= info["finished"]
    assert isinstance(info["code_modified_since_commit"], (bool, type(None)))


SHARDED_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from offrl_jax.algorithms.registry import get_algorithm
    from offrl_jax.data import Dataset, episodes_to_arrays
    from offrl_jax.data.toy import toy_episodes
    from offrl_jax.tasks import get_env_spec
    from offrl_jax.training import Trainer, TrainConfig
    assert jax.device_count() == 4, jax.devices()
    data = Dataset.from_arrays(**episodes_to_arrays(toy_episodes("hopper", [120, 80])))
    algo = get_algorithm("bc")
    config = algo.make_config(overrides={"hidden_dims": (16, 16), "batch_size": 32})
    train = TrainConfig(num_updates=40, eval_every=20, eval_episodes=1)
    out = {}
    for name, shard, seeds in (("True", True, [0, 1, 2, 3]), ("False", False, [0, 1, 2, 3]),
                               ("swapped", True, [1, 0, 3, 2]), ("five", True, [0, 1, 2, 3, 4])):
        trainer = Trainer(algo, config, data, get_env_spec("hopper"), seeds, train,
                          shard=shard)
        trained = []
        trainer._interval = (lambda f: lambda *a: trained.append(len(a[1])) or f(*a))(
            trainer._interval)
        carry = trainer.run()
        leaf = jax.tree_util.tree_leaves(carry["state"].actor_params)[0]
        out[name] = {"devices": len(leaf.sharding.device_set),
                           "trained_devices": len(trainer.keys.sharding.device_set),
                           "trained_rows": trained, "padding": trainer.num_padding,
                           "params": np.asarray(leaf).tolist(),
                           "seeds": [r["seed"] for r in carry["records"]],
                           "scores": [r["normalized_score"] for r in carry["records"]]}
    json.dump(out, sys.stdout)
""")


def test_sharded_and_unsharded_runs_agree():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", SHARDED_SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["True"]["devices"] == 4 and out["False"]["devices"] == 1
    # Sharding cannot mix seeds: swapped seeds give swapped rows bit for bit (same program).
    np.testing.assert_array_equal(out["True"]["params"], np.asarray(out["swapped"]["params"])[
        [1, 0, 3, 2]])
    # Sharded and unsharded runs are two compilations (a 1-row program per device against one
    # 4-row program): they start one float32 rounding apart (6e-8 relative) and 40 Adam steps
    # of BC keep that under 1e-8 (4e-9 measured, AMD EPYC). 1e-6 is 100x that, and a seed
    # trained on the wrong data or key would be a whole Adam step (lr 1e-3) away.
    np.testing.assert_allclose(out["True"]["params"], out["False"]["params"], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(out["True"]["scores"], out["False"]["scores"], rtol=1e-4)
    # 5 seeds on 4 devices: 3 padding rows make 8, so all 4 devices train; the padding is
    # never recorded or returned, and the first 4 seeds train as in the 4-seed run.
    five = out["five"]
    assert five["trained_devices"] == 4 and five["padding"] == 3
    assert five["trained_rows"] == [8, 8] and len(five["params"]) == 5
    assert five["seeds"] == [0, 1, 2, 3, 4] * 2
    np.testing.assert_allclose(np.asarray(five["params"])[:4], out["True"]["params"],
                               rtol=1e-5, atol=1e-6)


def test_schedule_flags_records_every_episode_and_config_json_relaunches(toy_hopper_dataset,
                                                                        tmp_path):
    """``--updates/--eval-every/--eval-episodes`` set the schedule; records keep every episode;
    ``config.json`` holds every resolved setting and relaunches the same run."""
    from offrl_jax.cli import main
    from offrl_jax.data import write_d4rl_hdf5

    write_d4rl_hdf5(tmp_path / "toy.hdf5", toy_hopper_dataset)
    task = f"flags-toy=hopper:{tmp_path / 'toy.hdf5'}"
    main(["bench", "--profile", "tiny", "--algos", "bc", "--tasks", task, "--seeds", "2",
          "--updates", "40", "--eval-every", "20", "--eval-episodes", "3",
          "--set", "bc.batch_size=16", "--out", str(tmp_path / "a")])

    def records(run):
        path = tmp_path / run / "records" / "bc__flags-toy.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]

    first = records("a")
    # Scalar logs: one CSV stream per seed, a line per evaluation, every metric.
    log = (tmp_path / "a" / "logs" / "bc__flags-toy" / "seed1.csv").read_text().splitlines()
    assert log[0] == "step,normalized_score,failed,action_mse,nll"
    assert [line.split(",")[0] for line in log[1:]] == ["20", "40"]
    assert float(log[2].split(",")[1]) == pytest.approx(first[3]["normalized_score"])
    assert [(r["seed"], r["step"]) for r in first] == [(0, 20), (1, 20), (0, 40), (1, 40)]
    for r in first:
        assert len(r["episode_returns"]) == len(r["episode_lengths"]) == 3
        assert r["return"] == pytest.approx(np.mean(r["episode_returns"]), rel=1e-6)
        assert all(isinstance(n, int) and 0 < n <= 1000 for n in r["episode_lengths"])
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["train"]["bc"]["num_updates"] == 40
    assert config["train"]["bc"]["eval_episodes"] == 3
    settings = config["settings"]["bc/flags-toy"]
    assert settings["batch_size"] == 16 and settings["hidden_dims"] == [32, 32]  # profile's

    main(["bench", "--config", str(tmp_path / "a" / "config.json"), "--out",
          str(tmp_path / "b")])
    assert records("b") == first  # the same settings, seeds and schedule: the same numbers

    # offrl evaluate: the final policies from the checkpoints; by default the episodes of the
    # run's last evaluation, so the numbers equal its last records.
    main(["evaluate", str(tmp_path / "a")])
    evaluated = [json.loads(line) for line in (tmp_path / "a" / "evaluation" /
                                               "bc__flags-toy.jsonl").read_text().splitlines()]
    assert [(r["seed"], r["step"], r["episodes"]) for r in evaluated] == [(0, 40, 3), (1, 40, 3)]
    for r, last in zip(evaluated, first[2:], strict=True):
        assert r["episode_returns"] == last["episode_returns"]
        assert r["normalized_score"] == pytest.approx(last["normalized_score"], rel=1e-9)
    main(["evaluate", str(tmp_path / "a"), "--episodes", "5", "--seed", "3", "--out",
          str(tmp_path / "e")])
    more = [json.loads(line) for line in
            (tmp_path / "e" / "bc__flags-toy.jsonl").read_text().splitlines()]
    assert [len(r["episode_lengths"]) for r in more] == [5, 5] and more[0]["key"] == 3
    with pytest.raises(SystemExit, match="remove --seeds"):
        main(["bench", "--config", str(tmp_path / "a" / "config.json"), "--seeds", "3"])
    with pytest.raises(SystemExit, match=r"num_updates \(50\) must be a multiple of eval_every"):
        main(["bench", "--profile", "tiny", "--algos", "bc", "--tasks", task, "--updates", "50",
              "--eval-every", "20", "--out", str(tmp_path / "c")])
    assert not (tmp_path / "c").exists()


def test_a_second_invocation_into_the_same_run_keeps_the_first_ones_algorithms(
        toy_hopper_dataset, tmp_path):
    """Adding an algorithm to a finished run directory (same profile, tasks, seeds) keeps the
    earlier algorithms in config.json and run.json, so ``--config`` still relaunches every
    cell of the directory."""
    from offrl_jax.cli import main
    from offrl_jax.data import write_d4rl_hdf5

    write_d4rl_hdf5(tmp_path / "toy.hdf5", toy_hopper_dataset)
    common = ["bench", "--profile", "tiny", "--tasks", f"two-toy=hopper:{tmp_path / 'toy.hdf5'}",
              "--seeds", "1", "--updates", "20", "--eval-every", "20", "--eval-episodes", "1",
              "--out", str(tmp_path / "run")]
    main(common[:1] + ["--algos", "bc"] + common[1:])
    main(common[:1] + ["--algos", "td3bc", "--set", "td3bc.alpha=5.0"] + common[1:])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["algorithms"] == ["bc", "td3bc"]
    assert set(config["train"]) == {"bc", "td3bc"}
    assert config["settings"]["td3bc/two-toy"]["alpha"] == 5.0
    assert "bc/two-toy" in config["settings"]
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["algorithms"] == ["bc", "td3bc"] and set(info["train"]) == {"bc", "td3bc"}
    assert set(info["configs"]) == {"bc/two-toy", "td3bc/two-toy"}
    # Other seeds, tasks or profile make another run: nothing is merged into it.
    from offrl_jax.training.runner import _same_run
    assert _same_run(config, {**config, "algorithms": ["iql"]})
    for key, value in (("seeds", [0, 1]), ("tasks", ["other"]), ("profile", "quick"),
                       ("sweep", {"alpha": [1.0]})):
        assert not _same_run(config, {**config, key: value})
