"""Pretrained dynamics models shared across algorithms and runs (``Algorithm.pretrain``, the
model store in ``OUT/models/``): equal seeds train equal ensembles in every model-based algorithm,
``init(pretrained=...)`` equals ``init``, the runner fits each seed's model once, and the store
changes time, not numbers."""

import dataclasses
import json
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from offrl_jax.algorithms.registry import get_algorithm
from offrl_jax.data import load_task_dataset, write_d4rl_hdf5
from offrl_jax.models.store import EntryKey, ModelStore, ModelStoreError, load_or_fit
from offrl_jax.tasks import get_env_spec, parse_task_argument
from offrl_jax.training import TrainConfig, Trainer, plan, profiles, runner

HOPPER = get_env_spec("hopper")
TINY = profiles.RUN_PROFILES["tiny"]
SEEDS = [0, 1]


def tiny_config(name):
    algorithm = get_algorithm(name)
    return algorithm, algorithm.make_config(None, plan.config_overrides(
        algorithm, TINY, TINY.train_for(name), {}))


def tiny_algorithm(name):
    """The tiny profile's algorithm, made for hopper, and its config."""
    registration, config = tiny_config(name)
    return registration.make(config, HOPPER), config


def assert_trees_equal(a, b):
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_model_based_algorithms_train_one_ensemble_and_init_takes_it(toy_hopper_dataset):
    """MOPO's and COMBO's inits train bit-identical ensembles; ``init(pretrained=pretrain())``
    is bit-identical to ``init``; the four ensemble algorithms share one id, ARMOR has its own."""
    key = jax.random.PRNGKey(3)
    mopo, config = tiny_algorithm("mopo")
    alone = jax.jit(mopo.init)(key, toy_hopper_dataset)
    pretrained = jax.jit(mopo.pretrain)(key, toy_hopper_dataset)
    given = jax.jit(lambda k, d, p: mopo.init(k, d, pretrained=p))(
        key, toy_hopper_dataset, pretrained)
    assert_trees_equal(alone, given)
    combo, _ = tiny_algorithm("combo")
    combo_state = jax.jit(combo.init)(key, toy_hopper_dataset)
    assert_trees_equal(combo_state.model.params, alone.model.params)
    assert_trees_equal(combo_state.model, pretrained)

    ids = {name: tiny_algorithm(name)[0].pretrain_id
           for name in ("mopo", "combo", "morel", "rambo", "armor")}
    assert len({ids[name] for name in ("mopo", "combo", "morel", "rambo")}) == 1
    assert ids["armor"] != ids["mopo"]
    bigger = get_algorithm("mopo").make_config(None, {
        "dynamics.members": config.dynamics.members + 1,
        "dynamics.hidden_dims": config.dynamics.hidden_dims,
        "dynamics.elites": config.dynamics.elites})
    assert get_algorithm("mopo").make(bigger, HOPPER).pretrain_id != ids["mopo"]


def test_armor_init_with_pretrained_model_equals_init(toy_hopper_dataset):
    armor, config = tiny_algorithm("armor")
    key = jax.random.PRNGKey(5)
    alone = jax.jit(armor.init)(key, toy_hopper_dataset)
    pretrained = jax.jit(armor.pretrain)(key, toy_hopper_dataset)
    given = jax.jit(lambda k, d, p: armor.init(k, d, pretrained=p))(
        key, toy_hopper_dataset, pretrained)
    assert_trees_equal(alone, given)
    assert pretrained.params["params"]["output"]["kernel"].shape[0] == 1  # one member


SHORT = dataclasses.replace(TINY, name="tiny-short", train=TrainConfig(
    num_updates=100, eval_every=100, eval_episodes=1))


@pytest.fixture(scope="module")
def shared_run(toy_hopper_dataset, tmp_path_factory):
    """MOPO then COMBO into one directory, with the tiny profile's sizes and one evaluation
    after 100 updates (two model refreshes)."""
    root = tmp_path_factory.mktemp("store")
    write_d4rl_hdf5(root / "toy.hdf5", toy_hopper_dataset)
    task = parse_task_argument(f"store-toy=hopper:{root / 'toy.hdf5'}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(profiles.RUN_PROFILES, SHORT.name, SHORT)
        runner.run_benchmark(["mopo", "combo"], [task.name], SEEDS, SHORT.name,
                             root / "shared", progress=False)
    return root / "shared", task


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow  # trains COMBO a second time without the store (18 s on 2 cores)
def test_runner_fits_each_seed_once_and_the_store_changes_no_numbers(shared_run):
    run_dir, task = shared_run
    models = json.loads((run_dir / "run.json").read_text())["models"]
    assert models["mopo/store-toy"]["fitted"] == SEEDS
    assert models["mopo/store-toy"]["reused"] == []
    assert models["combo/store-toy"]["fitted"] == []
    assert models["combo/store-toy"]["reused"] == SEEDS
    assert models["combo/store-toy"]["files"] == models["mopo/store-toy"]["files"]
    assert len([p for p in (run_dir / "models").iterdir() if p.is_dir()]) == len(SEEDS)
    shared = read_jsonl(run_dir / "records" / "combo__store-toy.jsonl")
    combo = get_algorithm("combo")
    config = combo.make_config(task.name, plan.config_overrides(
        combo, SHORT, SHORT.train, {}))
    alone = Trainer(combo, config, load_task_dataset(task), task.spec, SEEDS,
                    SHORT.train, log=None).run()["records"]  # no store: fits its own models
    fields = ("seed", "step", "return", "normalized_score", "metrics")
    assert [{k: r[k] for k in fields} for r in shared] == [{k: r[k] for k in fields}
                                                           for r in alone]


def test_rerun_reuses_and_a_corrupt_entry_is_refitted(shared_run, toy_hopper_dataset, capsys):
    run_dir, _ = shared_run
    algorithm, config = tiny_config("morel")
    store = ModelStore(run_dir / "models")

    def prepared():
        trainer = Trainer(algorithm, config, toy_hopper_dataset, HOPPER, SEEDS, TINY.train,
                          model_store=store, sweep={"truncate_reward": [-100.0, -50.0]})
        return trainer.prepare_models(), trainer._pretrained

    # The runner's data file holds the same arrays as the fixture, so its entries match.
    report, reference = prepared()
    assert report["reused"] == SEEDS and report["fitted"] == []
    assert jax.tree_util.tree_leaves(reference)[0].shape[0] == 2 * len(SEEDS)  # sweep rows
    path = store.root / report["files"][1]
    largest = max((f for f in (path / "arrays").rglob("*") if f.is_file()),
                  key=lambda f: f.stat().st_size)
    largest.write_bytes(largest.read_bytes()[:len(largest.read_bytes()) // 2])  # truncated
    report, refitted = prepared()
    assert report["reused"] == [0] and report["fitted"] == [1]
    assert str(path) in report["refitted"]["1"]
    assert "corrupt model store entry" in capsys.readouterr().out
    assert_trees_equal(reference, refitted)
    assert prepared()[0]["reused"] == SEEDS


def test_store_entries_are_atomic_and_mismatches_name_the_file(tmp_path, monkeypatch):
    store = ModelStore(tmp_path)
    tree = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.int32(4)}
    key = EntryKey("hopper", "data-sha", "id-v1", 0, (0, 7))
    path = store.save(key, tree)
    assert_trees_equal(store.load(key, tree), tree)

    # Killed after every byte is written but before the entry is committed (renamed).
    original = ocp.CompositeCheckpointHandler.save

    def killed_after_writing(self, *args, **kwargs):
        original(self, *args, **kwargs)
        raise KeyboardInterrupt

    other = EntryKey("hopper", "data-sha", "id-v1", 1, (0, 8))
    monkeypatch.setattr(ocp.CompositeCheckpointHandler, "save", killed_after_writing)
    with pytest.raises(KeyboardInterrupt):
        store.save(other, tree)
    monkeypatch.undo()
    assert store.load(other, tree) is None
    # Only orbax's temporary directory is left beside the complete entry; it is never read.
    assert [p.name for p in tmp_path.iterdir() if "tmp" not in p.name] == [path.name]
    store.save(other, tree)
    assert_trees_equal(store.load(other, tree), tree)
    shutil.rmtree(store.path(other))

    renamed = store.path(other)
    path.rename(renamed)  # an intact entry under another key's name
    with pytest.raises(ModelStoreError, match=f"{renamed}.*expected .*'seed': 1.*found "
                                              f".*'seed': 0"):
        store.load(other, tree)
    store.save(key, tree)
    with pytest.raises(ModelStoreError, match=r"'leaves': expected .*\(2, 4\).*found .*\(2, 3\)"):
        store.load(key, {"w": np.zeros((2, 4), np.float32), "n": np.int32(0)})
    fits, lines = [], []
    stacked, report = load_or_fit(None, [key], tree, lambda idx: fits.append(idx) or
                                  jax.tree_util.tree_map(lambda x: np.stack([x]), tree),
                                  log=lines.append)
    assert fits == [[0]] and report["fitted"] == [0] and report["store"] is None
    # A line before the silent fit (which can take minutes), and one with its time after it.
    assert lines[0].startswith("fitting 1 model(s) for seeds [0] (one program") and \
        lines[1].startswith("fitting 1 model(s) for seeds [0]: ") and len(lines) == 2
    assert stacked["w"].shape == (1, 2, 3)


def test_a_chunked_fit_saves_each_chunk_before_the_next_and_resumes_after_a_kill(tmp_path):
    store = ModelStore(tmp_path / "models")
    tree = {"w": np.zeros(3, np.float32)}
    keys = [EntryKey("hopper", "data-sha", "id-v1", seed, (0, seed)) for seed in range(5)]

    def fit(indices, calls, fail_on=None):
        calls.append(list(indices))
        # What the store holds when a chunk starts: every earlier chunk, saved.
        calls.append(sorted(k.seed for k in keys if store.load(k, tree) is not None))
        if len(calls) // 2 == fail_on:
            raise KeyboardInterrupt  # killed during this chunk
        return {"w": np.stack([np.full(3, keys[i].seed, np.float32) for i in indices])}

    calls = []
    with pytest.raises(KeyboardInterrupt):
        load_or_fit(store, keys, tree, lambda idx: fit(idx, calls, fail_on=3), chunk=2)
    assert calls == [[0, 1], [], [2, 3], [0, 1], [4], [0, 1, 2, 3]]
    # Resumed: the two finished chunks are reused, only seed 4 is fitted.
    calls, lines = [], []
    stacked, report = load_or_fit(store, keys, tree, lambda idx: fit(idx, calls), lines.append,
                                  chunk=2)
    assert calls == [[4], [0, 1, 2, 3]]
    assert report["reused"] == [0, 1, 2, 3] and report["fitted"] == [4]
    assert stacked["w"][:, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert any(line.startswith("fitting 1 model(s) for seeds [4]: ") for line in lines)
