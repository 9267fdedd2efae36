"""Hyperparameter sweeps over float state leaves (``offrl bench --sweep``): values x seeds rows in
one program, one table row per value, the default value's rows equal to the unswept run."""

import dataclasses
import json

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from offrl_jax.algorithms.registry import Algorithm, Registration, get_algorithm
from offrl_jax.cli import main
from offrl_jax.data import load_task_dataset, write_d4rl_hdf5
from offrl_jax.results.labels import format_value
from offrl_jax.tasks import get_env_spec, parse_task_argument
from offrl_jax.training import TrainConfig, Trainer, runner
from offrl_jax.training.cli import parse_sweeps
from offrl_jax.training.loop import SweepError, read_checkpoint

HOPPER = get_env_spec("hopper")
TRAIN = TrainConfig(num_updates=40, eval_every=20, eval_episodes=1)
SEEDS = [0, 1]


def restore_state(checkpoint_dir):
    """The last checkpoint's state as nested dicts of arrays (no template needed)."""
    return read_checkpoint(checkpoint_dir)[0]["state"]


@pytest.fixture(scope="module")
def iql_runs(toy_hopper_dataset, tmp_path_factory):
    """IQL (the cheapest algorithm with a float state leaf, ``reward_scale``) on the toy data:
    a sweep of 2 values x 2 seeds, then the unswept run of the same seeds in the same directory.
    The second value is the one init computes (1000 / the data's return range)."""
    root = tmp_path_factory.mktemp("sweep")
    write_d4rl_hdf5(root / "toy.hdf5", toy_hopper_dataset)
    task_arg = f"sweep-toy=hopper:{root / 'toy.hdf5'}"
    task = parse_task_argument(task_arg)
    iql = get_algorithm("iql")
    default = float(iql.make(iql.make_config(), task.spec).init(
        jax.random.PRNGKey(0), load_task_dataset(task)).reward_scale)
    values = [default / 2, default]
    run_dir = root / "run"
    runner.run_benchmark(["iql"], [task_arg], SEEDS, "tiny", run_dir, progress=False,
                         sweep={"reward_scale": values})
    sweep_info = json.loads((run_dir / "run.json").read_text())
    rows = runner.run_benchmark(["iql"], [task_arg], SEEDS, "tiny", run_dir, progress=False)
    return run_dir, values, rows, sweep_info


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sweep_writes_a_row_per_value_and_sets_the_leaf(iql_runs):
    run_dir, values, rows, sweep_info = iql_runs
    records = read_jsonl(run_dir / "records" / "iql__sweep-toy__sweep-reward_scale.jsonl")
    assert len(records) == len(values) * len(SEEDS) * 2  # values x seeds x evaluations
    assert {(r["sweep"]["reward_scale"], r["seed"]) for r in records if r["step"] == 200} == {
        (v, s) for v in values for s in SEEDS}
    assert all(r["algorithm"] == "iql" and not r["failed"] for r in records)
    # The unswept run's records keep today's format (no "sweep" key) in their own file.
    assert all("sweep" not in r for r in read_jsonl(run_dir / "records" /
                                                    "iql__sweep-toy.jsonl"))
    labels = [f"iql[reward_scale={format_value(v)}]" for v in values]
    table = (run_dir / "summary.md").read_text().splitlines()
    for label in ["iql", *labels]:
        assert sum(line.startswith(f"| {label} | sweep-toy |") for line in table) == 1
        row = next(r for r in rows if r["algorithm"] == label and r["task"] == "sweep-toy")
        assert row["seeds"] == len(SEEDS) and row["failed_seeds"] == 0
    csv_header = (run_dir / "summary.csv").read_text().splitlines()[0].split(",")
    assert csv_header[:3] == ["algorithm", "task", "reward_scale"]
    assert (run_dir / "plots" / "sweep_iql_reward_scale.png").stat().st_size > 1000
    assert sweep_info["sweep"] == {"reward_scale": values}
    assert "sweep" not in json.loads((run_dir / "run.json").read_text())  # the unswept run's
    state = restore_state(run_dir / "checkpoints" / "iql__sweep-toy__sweep-reward_scale")
    np.testing.assert_array_equal(state["reward_scale"],
                                  np.repeat(np.float32(values), len(SEEDS)))


def test_default_value_rows_reproduce_the_unswept_run(iql_runs):
    run_dir, values, _, _ = iql_runs
    swept = {(r["seed"], r["step"]): r for r in read_jsonl(
        run_dir / "records" / "iql__sweep-toy__sweep-reward_scale.jsonl")
        if r["sweep"]["reward_scale"] == values[1]}
    plain = {(r["seed"], r["step"]): r
             for r in read_jsonl(run_dir / "records" / "iql__sweep-toy.jsonl")}
    assert swept.keys() == plain.keys()
    # The swept program (4 rows) and the unswept one (2 rows) are two compilations: they start
    # one float32 rounding apart (6e-8 relative), which 200 Adam steps of IQL on toy data keep
    # far below the tolerances (bit-identical on the AMD EPYC this was written on); a wrong
    # leaf value or another seed's key moves every number by percents.
    for key, record in plain.items():
        for field in ("return", "normalized_score"):
            assert swept[key][field] == pytest.approx(record[field], rel=1e-4), (key, field)
        np.testing.assert_allclose(list(swept[key]["metrics"].values()),
                                   list(record["metrics"].values()), rtol=1e-4, atol=1e-6)
    swept_state = restore_state(run_dir / "checkpoints" / "iql__sweep-toy__sweep-reward_scale")
    plain_state = restore_state(run_dir / "checkpoints" / "iql__sweep-toy")
    # The default value is the second point: rows 2 and 3.
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a[len(SEEDS):], b, rtol=1e-5, atol=1e-6),
        swept_state["actor_params"], plain_state["actor_params"])


def test_bad_leaf_fails_before_any_data_or_training(tmp_path, monkeypatch, capsys):
    def no_training(*args, **kwargs):
        raise AssertionError("the sweep must be checked before data is made or trained on")

    monkeypatch.setattr(runner, "ensure_dataset", no_training)
    monkeypatch.setattr(runner, "run_cell", no_training)  # every cell trains through it
    with pytest.raises(SweepError, match=r"'lambda'.*mopo.*penalty_coef"):
        runner.run_benchmark(["mopo"], ["hopper-medium"], [0], "tiny", tmp_path,
                             sweep={"lambda": [0.5, 1.0]})
    # Every algorithm must have the leaf: BC has no float leaf at all.
    with pytest.raises(SweepError, match=r"'penalty_coef'.*bc.*none"):
        runner.run_benchmark(["mopo", "bc"], ["hopper-medium"], [0], "tiny", tmp_path,
                             sweep={"penalty_coef": [1.0]})
    with pytest.raises(SystemExit, match=r"combo's state has no float leaf 'beta'.*cql_weight"):
        main(["bench", "--algos", "combo", "--tasks", "hopper-medium", "--profile", "tiny",
              "--out", str(tmp_path), "--sweep", "beta=0.5,5"])
    assert not (tmp_path / "run.json").exists()


def test_parse_sweeps():
    assert parse_sweeps([]) == {}
    assert parse_sweeps(["penalty_coef=0.5,1,2.5,5"]) == {"penalty_coef": [0.5, 1.0, 2.5, 5.0]}
    assert parse_sweeps(["a=1", "b=2,3e-4"]) == {"a": [1.0], "b": [2.0, 3e-4]}
    for bad, message in [("penalty_coef", "expected LEAF="), ("=1", "expected LEAF="),
                         ("penalty_coef=", "at least one value"),
                         ("penalty_coef=1,x", "must be numbers"),
                         ("penalty_coef=1,1.0", "repeats")]:
        with pytest.raises(SystemExit, match=message):
            parse_sweeps([bad])
    with pytest.raises(SystemExit, match="given twice"):
        parse_sweeps(["a=1", "a=2"])


@flax.struct.dataclass
class _RateState:
    count: jax.Array
    rate: jax.Array


@dataclasses.dataclass(frozen=True)
class _RateConfig:
    rate: float = 1.0


@dataclasses.dataclass(frozen=True)
class _Rate(Algorithm):
    """Adds ``rate`` (a float leaf, 1 by default) to ``count`` every update."""

    name = "rate"

    def init(self, key, dataset=None, pretrained=None):
        return _RateState(jax.random.uniform(key), jnp.asarray(self.config.rate, jnp.float32))

    def update(self, state, dataset, key):
        return state.replace(count=state.count + state.rate), {"count": state.count}

    def act(self, state, obs, key, deterministic=True):
        return jnp.zeros((obs.shape[0], HOPPER.act_dim)) + 0.0 * state.count


def _rate_algorithm() -> Registration:
    return Registration("rate", _RateConfig, _Rate)


class _Killed(Exception):
    pass


def test_trainer_sweep_rows_resume_and_fingerprint(toy_hopper_dataset, tmp_path):
    algo = _rate_algorithm()
    config = algo.make_config()
    sweep = {"rate": [0.5, 2.0]}

    def trainer(directory, sweep=sweep):
        return Trainer(algo, config, toy_hopper_dataset, HOPPER, [3, 7], TRAIN,
                       checkpoint_dir=tmp_path / directory, sweep=sweep)

    reference = trainer("a").run()
    unswept = Trainer(algo, config, toy_hopper_dataset, HOPPER, [3, 7], TRAIN)
    # real_rows: on 4 devices the 2 unswept rows are padded to 4.
    start = np.asarray(unswept.real_rows(unswept.initial()["state"]).count)
    # Value-major rows; each seed keeps its key, so both values start from the seed's count.
    np.testing.assert_array_equal(reference["state"].rate, [0.5, 0.5, 2.0, 2.0])
    np.testing.assert_allclose(reference["state"].count,
                               np.tile(start, 2) + 40 * np.repeat([0.5, 2.0], 2), rtol=1e-6)
    assert [(r["sweep"], r["seed"]) for r in reference["records"][:4]] == [
        ({"rate": 0.5}, 3), ({"rate": 0.5}, 7), ({"rate": 2.0}, 3), ({"rate": 2.0}, 7)]

    def kill_after_first(done, *_):
        raise _Killed

    with pytest.raises(_Killed):
        trainer("b").run(kill_after_first)
    resumed = trainer("b").run()
    jax.tree_util.tree_map(np.testing.assert_array_equal, reference["state"], resumed["state"])
    assert reference["records"] == resumed["records"]
    for other in ({"rate": [0.5, 3.0]}, None):
        with pytest.raises(ValueError, match="fingerprint"):
            trainer("b", other).run()


def test_a_run_makes_each_algorithm_once_and_checks_the_sweep_once(toy_hopper_dataset, tmp_path,
                                                                    monkeypatch):
    """The run plan makes each cell's algorithm once (for its checks and its training) and
    checks the sweep once per run, not again in the cell's Trainer."""
    from offrl_jax.algorithms import registry
    from offrl_jax.training import loop, plan

    calls = {"make": 0, "check_sweep": 0}
    iql = registry.get_algorithm("iql")
    check_sweep = loop.check_sweep

    def make(config, spec):
        calls["make"] += 1
        return iql.make(config, spec)

    def check(*args, **kwargs):
        calls["check_sweep"] += 1
        return check_sweep(*args, **kwargs)

    monkeypatch.setitem(registry.ALGORITHMS, "iql", dataclasses.replace(iql, make=make))
    for module in (plan, loop):
        monkeypatch.setattr(module, "check_sweep", check)
    write_d4rl_hdf5(tmp_path / "toy.hdf5", toy_hopper_dataset)
    runner.run_benchmark(["iql"], [f"count-toy=hopper:{tmp_path / 'toy.hdf5'}"], [0], "tiny",
                         tmp_path / "run", progress=False, sweep={"reward_scale": [1.0, 2.0]},
                         schedule={"num_updates": 10, "eval_every": 10, "eval_episodes": 1})
    assert calls == {"make": 1, "check_sweep": 1}
