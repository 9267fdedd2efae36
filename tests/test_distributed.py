"""Cells (algorithm x task) that run anywhere without racing: each writes only its own files,
the driver alone writes ``run.json`` and the summary, shared models are fitted once before the
cells, and a worker checks the data's sha256 before it trains.

``test_ray_cells_equal_a_local_run`` needs the ``ray`` package (the optional extra, which CI does
not install) and is skipped without it; the other tests run the driver's Ray path with Ray's
dispatch replaced by one in this process, so the same driver and worker code is tested in CI.
"""

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from offrl_jax import pytrees
from offrl_jax.algorithms.registry import get_algorithm
from offrl_jax.cli import main
from offrl_jax.data import DatasetError, load_task_dataset, write_d4rl_hdf5
from offrl_jax.data.checksum import path_sha256
from offrl_jax.models.store import EntryKey, ModelStore
from offrl_jax.results.provenance import process_commit, training_commits
from offrl_jax.results.records import load_records
from offrl_jax.tasks import parse_task_argument
from offrl_jax.training import Trainer, distributed, plan, profiles, runner
from offrl_jax.training.cells import Cell, fit_models, load_cell_dataset, model_groups, run_cell
from offrl_jax.training.distributed import RayConfig

SEEDS = [0, 1]
# Two evaluations of two seeds: enough to compare every record, short enough for CI.
SCHEDULE = {"num_updates": 40, "eval_every": 20, "eval_episodes": 1}


@pytest.fixture(scope="module")
def toy_task(toy_hopper_dataset, tmp_path_factory):
    path = tmp_path_factory.mktemp("cells-data") / "toy.hdf5"
    write_d4rl_hdf5(path, toy_hopper_dataset)
    return f"cells-toy=hopper:{path}"


@pytest.fixture(scope="module")
def local_run(toy_task, tmp_path_factory):
    """BC and IQL, tiny sizes, run one after another in this process (no Ray)."""
    out = tmp_path_factory.mktemp("local") / "run"
    runner.run_benchmark(["bc", "iql"], [toy_task], SEEDS, "tiny", out, progress=False,
                         schedule=SCHEDULE)
    return out


def _files(root: Path) -> dict[Path, tuple[int, int]]:
    return {p.relative_to(root): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in root.rglob("*") if p.is_file()}


def _owner(path: Path) -> str | None:
    """The cell a run-directory file belongs to (None: a shared file)."""
    if path.parts[0] in ("records", "cells"):
        return path.name.rsplit(".", 1)[0]
    if path.parts[0] in ("logs", "checkpoints"):
        return path.parts[1]
    return None


def _comparable(root: Path) -> set[Path]:
    """The run directory's files, checkpoints as their cells' folders (orbax names its data
    files at random)."""
    return {Path(*p.parts[:2]) if p.parts[0] == "checkpoints" else p for p in _files(root)}


def test_dispatched_cells_write_only_their_files_and_equal_a_local_run(local_run, toy_task,
                                                                       tmp_path, monkeypatch):
    """The driver's Ray path, with an in-process dispatch that runs the cells as a worker does
    (no dataset given: loaded from the driver's path and checked by sha256), in reverse order:
    each cell touches only its own files (never run.json, config.json or the summary), and the
    run directory holds the files and records of the local run, bit for bit (same process,
    same programs)."""
    out = tmp_path / "dispatched"
    touched: dict[str, set[Path]] = {}

    def dispatch(cells, groups, config, gpus):
        assert groups == {}  # BC and IQL pretrain no model
        assert (out / "run.json").exists()  # the data is recorded before any cell starts
        for cell in reversed(cells):
            assert Path(cell.out_dir).is_absolute() and cell.provenance["versions"]
            before = _files(out)
            info = run_cell(cell)
            after = _files(out)
            touched[cell.name] = {p for p, stamp in after.items() if before.get(p) != stamp}
            yield "cell", cell, info, None

    monkeypatch.setattr(distributed, "connect", lambda config: {
        "address": config.address, "nodes": 1, "resources": {"CPU": 2.0}})
    monkeypatch.setattr(distributed, "gpus_per_cell", lambda config: 0.0)
    monkeypatch.setattr(distributed, "run_on_ray", dispatch)
    runner.run_benchmark(["bc", "iql"], [toy_task], SEEDS, "tiny", out, progress=False,
                         schedule=SCHEDULE, ray=RayConfig("in-process"))

    assert sorted(touched) == ["bc__cells-toy", "iql__cells-toy"]
    for name, paths in touched.items():
        assert paths and {_owner(p) for p in paths} == {name}, (name, sorted(map(str, paths)))
    assert _comparable(out) == _comparable(local_run)
    assert load_records(out) == load_records(local_run)
    assert (out / "summary.csv").read_text() == (local_run / "summary.csv").read_text()
    ours, local = (json.loads((d / "run.json").read_text()) for d in (out, local_run))
    for key in ("data", "train", "configs", "algorithms", "tasks", "seeds"):
        assert ours[key] == local[key], key
    data = local["data"]["cells-toy"]
    assert data["sha256"] == hashlib.sha256(Path(data["path"]).read_bytes()).hexdigest()
    assert "ray" not in local and set(ours["ray"]["cells"]) == set(touched)
    for name in touched:
        cell = json.loads((out / "cells" / f"{name}.json").read_text())
        assert cell["status"] == "finished" and cell["data"]["sha256"] == data["sha256"]
        assert json.loads((local_run / "cells" / f"{name}.json").read_text())["config"] == \
            cell["config"]


def _tiny_cell(name: str, task_argument: str, task, data: dict, out: Path) -> Cell:
    registration = get_algorithm(name)
    profile = profiles.RUN_PROFILES["tiny"]
    config = registration.make_config(None, plan.config_overrides(
        registration, profile, profile.train_for(name), {}))
    return Cell(name, task_argument, task.name, config, profile.train_for(name), tuple(SEEDS),
                {}, str(out), data, "tiny", progress=False)


def test_shared_models_are_fitted_once_before_the_cells(toy_task, tmp_path):
    """MOPO, COMBO and MOReL share one ensemble per seed, ARMOR has its own model: two fits.
    The fit (as a worker runs it, loading the data itself) writes only store entries, and the
    other cells of its group then find every seed's model: none fits again."""
    task = parse_task_argument(toy_task)
    data = runner.ensure_dataset(task, "tiny", progress=False)
    out = tmp_path / "run"
    cells = [_tiny_cell(name, toy_task, task, data, out)
             for name in ("bc", "mopo", "combo", "armor", "morel")]
    made = {(cell.algorithm, task.name): get_algorithm(cell.algorithm).make(cell.config, task.spec)
            for cell in cells}
    groups = model_groups(cells, made)
    assert [[cell.algorithm for cell in group] for group in groups.values()] == [
        ["mopo", "combo", "morel"], ["armor"]]
    assert {key[0] for key in groups} == {task.name}
    mopo, combo, morel = next(iter(groups.values()))
    report = fit_models(mopo)
    assert report["fitted"] == SEEDS and report["reused"] == []
    assert {p.relative_to(out).parts[0] for p in out.rglob("*")} == {"models"}
    assert sorted(p.name for p in (out / "models").iterdir()) == sorted(report["files"])
    dataset = load_task_dataset(task)
    for cell in (combo, morel):
        trainer = Trainer(get_algorithm(cell.algorithm), cell.config, dataset, task.spec,
                          SEEDS, cell.train, model_store=ModelStore(out / "models"), log=None)
        prepared = trainer.prepare_models()
        assert prepared["reused"] == SEEDS and prepared["fitted"] == []


def test_a_worker_refuses_data_whose_sha256_differs(toy_hopper_dataset, tmp_path):
    path = tmp_path / "toy.hdf5"
    write_d4rl_hdf5(path, toy_hopper_dataset)
    argument = f"sha-toy=hopper:{path}"
    task = parse_task_argument(argument)
    data = runner.ensure_dataset(task, "tiny", progress=False)
    assert data["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() == path_sha256(path)
    cell = _tiny_cell("bc", argument, task, data, tmp_path / "run")
    jax.tree_util.tree_map(np.testing.assert_array_equal, load_cell_dataset(cell)[1],
                           load_task_dataset(task))

    # Another dataset at the same path (regenerated on one host, say): refused, naming the file
    # and both digests, before the cell writes anything.
    write_d4rl_hdf5(path, toy_hopper_dataset.replace(rewards=toy_hopper_dataset.rewards + 1))
    with pytest.raises(DatasetError) as refused:
        run_cell(cell)
    message = str(refused.value)
    assert str(path) in message and data["sha256"] in message and path_sha256(path) in message
    assert not (tmp_path / "run").exists()
    path.unlink()
    with pytest.raises(FileNotFoundError, match="shared filesystem"):
        run_cell(cell)

    # A Minari dataset is a directory: every file's name and bytes count.
    minari = tmp_path / "minari"
    (minari / "data").mkdir(parents=True)
    (minari / "data" / "main_data.hdf5").write_bytes(b"episodes")
    (minari / "data" / "metadata.json").write_text("{}")
    digest = path_sha256(minari)
    (minari / "data" / "metadata.json").write_text("{ }")
    assert path_sha256(minari) not in (digest, path_sha256(minari / "data" / "metadata.json"))
    (minari / "data" / "metadata.json").write_text("{}")
    assert path_sha256(minari) == digest
    (minari / "data" / "metadata.json").rename(minari / "data" / "other.json")
    assert path_sha256(minari) != digest


def test_store_writers_of_one_entry_never_mix(tmp_path, monkeypatch):
    """Each write goes to a temporary directory of its own (orbax's own temporary name is the
    same for every writer of an entry) and is renamed when complete. A writer of a missing
    entry that another one published meanwhile drops its copy; a refit replaces the entry;
    nothing is left beside the entries."""
    store = ModelStore(tmp_path)
    key = EntryKey("hopper", "data-sha", "id-v1", 0, (0, 1))
    first, second = {"w": np.zeros(3, np.float32)}, {"w": np.ones(3, np.float32)}
    write = pytrees.save

    def another_writer_publishes_meanwhile(path, tree, meta):
        written = write(path, tree, meta)
        if not store.path(key).exists():
            monkeypatch.setattr(pytrees, "save", write)
            store.save(key, first)
        return written

    monkeypatch.setattr(pytrees, "save", another_writer_publishes_meanwhile)
    assert store.save(key, second, replace=False) == store.path(key).resolve()
    np.testing.assert_array_equal(store.load(key, first)["w"], first["w"])  # the first one's
    store.save(key, second, replace=False)  # found there: this copy is dropped
    np.testing.assert_array_equal(store.load(key, first)["w"], first["w"])
    store.save(key, second)  # a corrupt entry's refit replaces it
    np.testing.assert_array_equal(store.load(key, first)["w"], second["w"])
    assert [p.name for p in tmp_path.iterdir()] == [store.path(key).name]


def test_ray_flags_fail_in_one_line_without_ray(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(SystemExit, match=r"ray package is not installed.*\.\[ray\]"):
        main(["bench", "--ray", "auto", "--profile", "tiny", "--algos", "bc",
              "--out", str(tmp_path / "run")])
    with pytest.raises(SystemExit, match="need --ray"):
        main(["bench", "--ray-gpus-per-cell", "1", "--profile", "tiny", "--algos", "bc",
              "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists()


RAY_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import ray
    from offrl_jax.training.distributed import RayConfig
    from offrl_jax.training.runner import run_benchmark
    task, out, algos, schedule = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    ray.init(num_cpus=2, include_dashboard=False)
    run_benchmark(algos.split(","), [task], [0, 1], "tiny", out, progress=False,
                  schedule=schedule, ray=RayConfig("local"))
    ray.shutdown()
    print(json.dumps({"driver_pid": os.getpid()}))
""")

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="needs ray, the optional extra (pip install -e '.[ray]')")


def _ray_run(task: str, out: Path, algos: list[str], schedule: dict) -> int:
    """``run_benchmark`` with ``ray`` in a subprocess, bounded in time; the driver's pid."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.run([sys.executable, "-c", RAY_SCRIPT, task, str(out), ",".join(algos),
                           json.dumps(schedule)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["driver_pid"]


@needs_ray
def test_ray_cells_equal_a_local_run(local_run, toy_task, tmp_path):
    """BC and IQL as two Ray tasks on a local Ray instance (2 CPUs, so both run at once, each
    in a worker process of its own): the same files and bit-identical records as the local
    run. Bit identity across processes holds because each worker compiles the same programs
    with the same XLA on the same CPU (docs/reproducibility.md); measured so."""
    out = tmp_path / "ray"
    driver = _ray_run(toy_task, out, ["bc", "iql"], SCHEDULE)
    info = json.loads((out / "run.json").read_text())
    pids = {name: cell["pid"] for name, cell in info["ray"]["cells"].items()}
    assert sorted(pids) == ["bc__cells-toy", "iql__cells-toy"]
    assert len(set(pids.values())) == 2 and driver not in pids.values()
    assert _comparable(out) == _comparable(local_run)
    assert load_records(out) == load_records(local_run)
    assert (out / "summary.csv").read_text() == (local_run / "summary.csv").read_text()


@needs_ray
def test_ray_fits_a_shared_model_once_and_equals_a_local_run(toy_task, tmp_path):
    """MOPO and COMBO under Ray: one model fit (a Ray task) before both cells, which reuse
    every seed's model, and the records of a local run, where MOPO's cell fits and COMBO's
    reuses."""
    schedule = {"num_updates": 100, "eval_every": 50, "eval_episodes": 1}
    runner.run_benchmark(["mopo", "combo"], [toy_task], SEEDS, "tiny", tmp_path / "local",
                         progress=False, schedule=schedule)
    _ray_run(toy_task, tmp_path / "ray", ["mopo", "combo"], schedule)
    info = json.loads((tmp_path / "ray" / "run.json").read_text())
    (fit,) = info["model_fits"].values()
    assert fit["algorithms"] == ["mopo", "combo"] and fit["fitted"] == SEEDS
    assert {key: models["reused"] for key, models in info["models"].items()} == {
        "mopo/cells-toy": SEEDS, "combo/cells-toy": SEEDS}
    assert sorted(p.name for p in (tmp_path / "ray" / "models").iterdir()) == sorted(
        p.name for p in (tmp_path / "local" / "models").iterdir())
    assert load_records(tmp_path / "ray") == load_records(tmp_path / "local")



def _bc_bench_args(dataset, tmp_path, task, seeds, out) -> list[str]:
    """``offrl bench`` arguments (without ``--updates``) for BC on ``dataset``, written to
    ``tmp_path/toy.hdf5`` as task ``task``, evaluated every 20 updates, into ``out``."""
    write_d4rl_hdf5(tmp_path / "toy.hdf5", dataset)
    return ["bench", "--profile", "tiny", "--algos", "bc", "--tasks",
            f"{task}=hopper:{tmp_path / 'toy.hdf5'}", "--seeds", str(seeds), "--eval-every",
            "20", "--eval-episodes", "1", "--out", str(out)]


def test_a_resumed_cell_keeps_the_history_of_its_calls(toy_hopper_dataset, tmp_path):
    """cells/ALGO__TASK.json lists every call that worked on the cell: a killed one (left
    "running" in the file, here in the format before the list existed), the resuming one, and
    one that found nothing left to train (it keeps the time the training ended)."""
    out = tmp_path / "run"
    args = _bc_bench_args(toy_hopper_dataset, tmp_path, "hist-toy", 1, out)
    main([*args, "--updates", "20"])
    path = out / "cells" / "bc__hist-toy.json"
    first = json.loads(path.read_text())
    assert [c["status"] for c in first["invocations"]] == ["finished"]
    assert [c["updates"] for c in first["invocations"]] == [20]
    assert first["total_seconds"] == first["seconds"] > 0
    # As a run killed during its first call would have left it (and without the list).
    old = {k: v for k, v in first.items() if k not in ("invocations", "total_seconds")}
    path.write_text(json.dumps({**old, "status": "running", "started": "2026-01-01T00:00:00"}))
    main([*args, "--updates", "40"])
    second = json.loads(path.read_text())
    calls = second["invocations"]
    assert [c["status"] for c in calls] == ["killed", "finished"]
    assert calls[0]["seconds"] == first["seconds"] and second["started"] == "2026-01-01T00:00:00"
    assert second["total_seconds"] == pytest.approx(first["seconds"] + calls[1]["seconds"],
                                                    abs=0.11)
    assert second["status"] == "finished" and second["seconds"] == calls[1]["seconds"]
    assert calls[1]["updates"] == 20  # from the first call's checkpoint at 20 to 40
    assert second["finished"] >= calls[1]["started"]
    main([*args, "--updates", "40"])  # already at its end: nothing trained
    third = json.loads(path.read_text())
    assert [c.get("updates") for c in third["invocations"]] == [None, 20, 0]
    assert third["finished"] == second["finished"] and third["status"] == "finished"


def test_a_finished_cell_without_checkpoints_is_not_retrained(toy_hopper_dataset, tmp_path,
                                                               capsys):
    """Results kept in git, checkpoints not (a fresh checkout): a finished cell whose records
    reach its last update is not trained again, its records stay byte for byte; a longer
    schedule, or records cut short, trains from the start (nothing to resume from)."""
    import shutil

    out = tmp_path / "run"
    args = _bc_bench_args(toy_hopper_dataset, tmp_path, "kept-toy", 2, out)
    main([*args, "--updates", "40"])
    cell, records = out / "cells" / "bc__kept-toy.json", out / "records" / "bc__kept-toy.jsonl"
    kept = records.read_bytes()
    shutil.rmtree(out / "checkpoints")
    capsys.readouterr()
    main([*args, "--updates", "40"])
    assert "its checkpoints are absent, not retrained" in capsys.readouterr().out
    assert records.read_bytes() == kept and not (out / "checkpoints").exists()
    again = json.loads(cell.read_text())
    assert [c["updates"] for c in again["invocations"]] == [40, 0]
    assert again["status"] == "finished" and "not retrained" in again["invocations"][1]["note"]
    commit, dirty = process_commit()
    assert again["invocations"][0]["commit"] == commit
    assert training_commits(out) == {commit + ("+changes" if dirty else ""): ["bc__kept-toy"]}
    merged = tmp_path / "merged"
    main(["report", str(out), "--out", str(merged)])
    assert json.loads((merged / "run.json").read_text())["trained_by_commit"] == \
        training_commits(out)
    # A longer schedule: not this cell; no checkpoint, so from the start, to 60.
    main([*args, "--updates", "60"])
    assert "training from the start" in capsys.readouterr().out
    longer = json.loads(cell.read_text())
    assert longer["invocations"][-1]["updates"] == 60
    steps = [json.loads(line)["step"] for line in records.read_text().splitlines()]
    assert steps == [20, 20, 40, 40, 60, 60]
    # Records cut short (one seed's last evaluation lost): retrained, not taken as finished.
    shutil.rmtree(out / "checkpoints")
    records.write_text("\n".join(records.read_text().splitlines()[:-1]) + "\n")
    main([*args, "--updates", "60"])
    assert json.loads(cell.read_text())["invocations"][-1]["updates"] == 60
    assert [json.loads(line)["step"] for line in records.read_text().splitlines()] == steps


def test_a_finished_cell_of_an_earlier_algorithm_version_is_retrained(toy_hopper_dataset,
                                                                       tmp_path, capsys,
                                                                       monkeypatch):
    """A finished cell whose file records another algorithm version (a file without one is
    version 1) is trained again when its checkpoints are gone, and a checkpoint of another
    version is not resumed: the config alone does not say what the code computed."""
    import dataclasses
    import shutil

    from offrl_jax.algorithms import registry

    out = tmp_path / "run"
    args = _bc_bench_args(toy_hopper_dataset, tmp_path, "versioned-toy", 2, out)
    main([*args, "--updates", "40"])
    cell = out / "cells" / "bc__versioned-toy.json"
    assert json.loads(cell.read_text())["algorithm_version"] == 1
    monkeypatch.setitem(registry.ALGORITHMS, "bc",
                        dataclasses.replace(registry.ALGORITHMS["bc"], version=2))
    with pytest.raises(ValueError, match="algorithm_version"):
        main([*args, "--updates", "40"])  # its checkpoint is version 1's
    shutil.rmtree(out / "checkpoints")
    capsys.readouterr()
    main([*args, "--updates", "40"])
    assert "training from the start" in capsys.readouterr().out
    again = json.loads(cell.read_text())
    assert again["algorithm_version"] == 2 and again["invocations"][-1]["updates"] == 40


def test_the_commit_note_names_the_commits_that_trained_cells_finished_earlier():
    """Nothing to add when every cell was trained at the run's commit; otherwise each commit
    (short), its cells, and the calls from before invocations carried their commit."""
    from offrl_jax.results.labels import commit_note

    a, b = "a" * 40, "b" * 40
    assert commit_note({"commit": a, "trained_by_commit": {a: ["bc__t"]}}) == ""
    assert commit_note({"commit": a}) == ""
    assert commit_note({"commit": a, "trained_by_commit": {
        a: ["bc__t"], b + "+changes": ["edac__t"], "not recorded": ["iql__t", "cql__t"]}}) == (
        " Cells trained at: aaaaaaa (bc__t); bbbbbbb+changes (edac__t); not recorded (iql__t, "
        "cql__t).")


def test_training_commits_reads_every_call_that_trained(tmp_path):
    """Calls that trained (or, older, did not record how many updates) count, under their
    commit or "not recorded"; a 0-update call does not."""
    cells = tmp_path / "cells"
    cells.mkdir()
    (cells / "bc__t.json").write_text(json.dumps({"invocations": [
        {"status": "killed"}, {"updates": 20, "commit": "c1"}, {"updates": 0, "commit": "c2"}]}))
    (cells / "iql__t.json").write_text(json.dumps({"invocations": [
        {"updates": 0, "commit": "c1"}]}))
    assert training_commits(tmp_path) == {"not recorded": ["bc__t"], "c1": ["bc__t"]}


def test_the_progress_rate_leaves_out_init_and_the_first_interval(capsys):
    """A 100 s init (ATAC's warm start) then 10 s per 1k-update interval: the first line's rate
    says it holds init; every later one is the training rate, 100 updates/s, and its time left
    follows from it."""
    from offrl_jax.training.cells import _ProgressLine

    now = iter([0.0, 110.0, 120.0, 130.0])
    line = _ProgressLine("atac hopper", 1_000, 3, {}, True, clock=lambda: next(now))
    new = [{"failed": False, "normalized_score": s} for s in (40.0, 42.0, 44.0)]
    for i in (1, 2, 3):
        line(i, 10, new)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("atac hopper: eval 1/10, score 42.0 ± 1.6, 9 updates/s (x3 seeds, incl. "
                      "start-up, compilation, evaluation), ~16.5 min left")
    assert out[1].endswith("100 updates/s (x3 seeds, incl. evaluation), ~1.3 min left")
    assert out[2].endswith("100 updates/s (x3 seeds, incl. evaluation), ~1.2 min left")
