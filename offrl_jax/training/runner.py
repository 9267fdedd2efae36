"""The benchmark runner: algorithms x tasks x seeds into records, tables and plots.

For each task the dataset is found (a registered file, a real D4RL file under
``$OFFRL_D4RL_DIR``, or the suite's generated data, made first when missing); for each algorithm
one :class:`~offrl_jax.training.Trainer` trains all seeds in one program. Records are rewritten
atomically after every evaluation, and checkpoints let a killed sweep resume where it stopped.

``sweep`` (``{leaf: values}``) also sweeps hyperparameters that are float leaves of every chosen
algorithm's state (MOPO's ``penalty_coef``): each (algorithm, task) then trains values x seeds
rows in one program, and each value is its own row of the score table (``mopo[penalty_coef=1]``).
Names are checked against every algorithm's state before any data is made or loaded.

Pretrained models (the dynamics ensembles of MOPO, COMBO, MOReL and RAMBO, ARMOR's model) are kept
in ``OUT/models/`` (:mod:`offrl_jax.models.store`): each (dataset, env, ``pretrain_id``, seed) is
fitted once, by the first algorithm that needs it, and loaded by every later algorithm, sweep and
run into the same ``OUT``. ``run.json``'s ``models`` says, per algorithm and task, which seeds
were reused and which fitted.

Each (algorithm, task) is a cell (:mod:`offrl_jax.training.cells`) that writes only its own
files (records, logs, checkpoints, ``cells/ALGO__TASK.json``); this process, the driver, alone
writes ``run.json``, ``config.json`` and the summary. Cells run one after another here, or as
Ray tasks over the GPUs of a cluster with ``ray`` (:mod:`offrl_jax.training.distributed`):
the same cells, the same files.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from offrl_jax.algorithms.base import ConfigError, config_paths
from offrl_jax.algorithms.registry import get_algorithm
from offrl_jax.data import Dataset, find_task_dataset, load_task_dataset, read_d4rl_metadata
from offrl_jax.data.checksum import path_sha256
from offrl_jax.evaluation import check_backend
from offrl_jax.files import write_text_atomic
from offrl_jax.generation.versions import task_generated_file
from offrl_jax.results.provenance import provenance, training_commits
from offrl_jax.results.summary import write_summary
from offrl_jax.results.tensorboard import require as require_tensorboard
from offrl_jax.tasks import Task, parse_task_argument
from offrl_jax.training.cells import Cell, finished_without_checkpoint, model_groups, run_cell
from offrl_jax.training.distributed import RayConfig
from offrl_jax.training.loop import TrainConfig, check_sweep


@dataclasses.dataclass(frozen=True)
class RunProfile:
    name: str
    train: TrainConfig
    data_profile: str
    default_tasks: tuple[str, ...]
    default_seeds: int
    # Per-algorithm config overrides of this profile (e.g. smaller networks for tests), and
    # per-algorithm TrainConfig fields (e.g. fewer updates for the costly ones on a CPU).
    algorithm_overrides: dict = dataclasses.field(default_factory=dict)
    train_overrides: dict = dataclasses.field(default_factory=dict)
    # None: every registered algorithm.
    default_algorithms: tuple[str, ...] | None = None

    def train_for(self, algorithm: str) -> TrainConfig:
        return dataclasses.replace(self.train, **self.train_overrides.get(algorithm, {}))


# Model-based settings shrunk for a CPU: fewer and smaller dynamics models, a capped model
# fit, 5k-state rollouts, and short warm starts. "*" entries apply to every algorithm that has
# the setting (ARMOR keeps its single model: its own entry restores members and elites).
_QUICK_MODEL = {
    "dynamics.members": 5, "dynamics.elites": 3, "dynamics.hidden_dims": (200, 200),
    "dynamics.max_epochs": 30, "rollouts.batch_size": 5_000,
    "model_buffer_capacity": 50_000, "warmstart_steps": 2_000,
}
_ARMOR_MODEL = {"dynamics.members": 1, "dynamics.elites": 1,
                "dynamics.weight_decays": (2.5e-5, 5e-5, 1e-4)}
_TINY_MODEL = {
    "dynamics.members": 2, "dynamics.elites": 1, "dynamics.hidden_dims": (32, 32),
    "dynamics.max_epochs": 3, "rollouts.batch_size": 100, "rollouts.refresh_every": 50,
    "model_buffer_capacity": 1_000,
    "warmstart_steps": 50, "bc_pretrain_steps": 50, "adversary_steps": 5,
    "adversary_batch_size": 64, "model_batch_size": 64, "conservative.num_samples": 2,
}

# The papers' (or their reference code's) number of updates, where it is not the profile's 1M;
# sources: docs/algorithms.md#training-length.
FULL_UPDATES = {"mopo": {"num_updates": 3_000_000}, "rambo": {"num_updates": 2_000_000},
                "sacn": {"num_updates": 3_000_000}, "edac": {"num_updates": 3_000_000},
                "mobile": {"num_updates": 3_000_000}}

RUN_PROFILES = {
    "tiny": RunProfile("tiny", TrainConfig(num_updates=200, eval_every=100, eval_episodes=2),
                       "tiny", ("hopper-medium",), 2,
                       {"*": {"agent.hidden_dims": (32, 32), "hidden_dims": (32, 32),
                              "td3.hidden_dims": (32, 32), "batch_size": 64, **_TINY_MODEL},
                        "armor": _ARMOR_MODEL}),
    # quick: a 2-core CPU smoke run of every algorithm on one generated task.
    # The conservative critics (30 sampled actions per state) are ~100x costlier per update
    # than BC on a CPU, so they get fewer updates and smaller critics here.
    "quick": RunProfile("quick", TrainConfig(num_updates=10_000, eval_every=1_000,
                                             eval_episodes=5),
                        "quick", ("hopper-medium",), 3,
                        algorithm_overrides={"*": _QUICK_MODEL,
                                             "cql": {"agent.hidden_dims": (256, 256),
                                                     "conservative.num_samples": 5},
                                             "combo": {"agent.hidden_dims": (128, 128),
                                                       "batch_size": 128,
                                                       "conservative.num_samples": 5},
                                             "rambo": {"bc_pretrain_steps": 2_000,
                                                       "adversary_steps": 50},
                                             # A short run needs a faster slow rate: the
                                             # papers' 5e-7 over 1M updates moves the actor
                                             # about as far as ~0.5 / num_updates here.
                                             "armor": {**_ARMOR_MODEL,
                                                       "agent.hidden_dims": (128, 128),
                                                       "batch_size": 128,
                                                       "model_batch_size": 128,
                                                       "warmstart_steps": 1_000,
                                                       "agent.actor_lr": 1.5e-4,
                                                       "model_buffer_capacity": 100_000},
                                             # ReBRAC's batch of 1024 runs 4x slower on
                                             # 2 cores; its LayerNorm 3 x 256 critics stay.
                                             "rebrac": {"batch_size": 256},
                                             # hopper-medium's 500 (SAC-N) and 50 (EDAC)
                                             # critics take hours on 2 cores: 10 here, the
                                             # tables' N on a GPU.
                                             "sacn": {"agent.num_qs": 10,
                                                      "agent.hidden_dims": (256, 256)},
                                             "edac": {"agent.num_qs": 10,
                                                      "agent.hidden_dims": (128, 128),
                                                      "batch_size": 128},
                                             # Each update runs actor and target critics on
                                             # num_samples x elites next states per model row:
                                             # 18x a MOPO update on 2 cores at full width.
                                             "mobile": {"agent.hidden_dims": (128, 128),
                                                        "batch_size": 128, "num_samples": 4},
                                             "atac": {"agent.hidden_dims": (256, 256),
                                                      "warmstart_steps": 1_000,
                                                      "agent.actor_lr": 1e-4}},
                        train_overrides={
                            "cql": {"num_updates": 2_000, "eval_every": 500},
                            "combo": {"num_updates": 2_000, "eval_every": 1_000},
                            "mopo": {"num_updates": 5_000},
                            "morel": {"num_updates": 5_000},
                            "rambo": {"num_updates": 5_000},
                            "armor": {"num_updates": 3_000},
                            "atac": {"num_updates": 5_000},
                            "mobile": {"num_updates": 5_000},
                        },
                        # All nine (None): the five of the first quick table took 7.7 min
                        # on 2 cores, and the four ensemble methods share one model fit.
                        default_algorithms=None),
    # validate: the reproduction report (make validate), a resumable CPU job of hours. Full-size
    # networks and models; 200k updates for the cheap algorithms (5 seeds), fewer for the
    # costly ones (3 seeds: make validate runs them as a second invocation), each figure what
    # its share of the budget buys at the 2-core rates of benchmarks/; docs/validation.md.
    "validate": RunProfile(
        "validate", TrainConfig(num_updates=200_000, eval_every=10_000, eval_episodes=10),
        "validate", ("hopper-medium-replay", "hopper-medium-expert", "walker2d-medium-replay",
                     "halfcheetah-medium-replay"), 5,
        algorithm_overrides={
            "*": {"dynamics.max_epochs": 50},  # about 45k steps of model fitting per seed
            "rebrac": {"batch_size": 256},
            "sacn": {"agent.num_qs": 10}, "edac": {"agent.num_qs": 10},
        },
        train_overrides={
            "rebrac": {"num_updates": 100_000},
            "cql": {"num_updates": 20_000, "eval_every": 2_000},
            "combo": {"num_updates": 20_000, "eval_every": 2_000},
            "armor": {"num_updates": 20_000, "eval_every": 2_000},
            "atac": {"num_updates": 50_000, "eval_every": 5_000},
            "rambo": {"num_updates": 50_000, "eval_every": 5_000},
            "mobile": {"num_updates": 30_000, "eval_every": 5_000},
            "sacn": {"num_updates": 50_000, "eval_every": 5_000},
            "edac": {"num_updates": 50_000, "eval_every": 5_000},
        }),
    "full": RunProfile("full", TrainConfig(num_updates=1_000_000, eval_every=10_000,
                                           eval_episodes=10),
                       "full", tuple(f"{env}-{kind}" for env in
                                     ("halfcheetah", "hopper", "walker2d")
                                     for kind in ("medium", "medium-replay", "medium-expert")),
                       5, train_overrides=FULL_UPDATES),
}


def _config_overrides(algorithm, profile: RunProfile, train: TrainConfig,
                      overrides: dict) -> dict:
    """Profile overrides then user overrides, ``{path: value}``; ``"*"`` applies to every
    algorithm whose config has the path, ``"ALGO"`` to that algorithm only (checked first by
    :func:`check_overrides`). A ``total_updates`` setting (learning-rate schedules) follows the
    run's number of updates."""
    paths = algorithm.paths()
    out = {}
    run_length = {"*": {"total_updates": train.num_updates}}
    for source in (run_length, profile.algorithm_overrides, overrides):
        out.update({k: v for k, v in source.get("*", {}).items() if k in paths})
        out.update(source.get(algorithm.name, {}))
    return out


def check_overrides(algorithms: list[str], overrides: dict, source: str = "--set") -> None:
    """Raise :class:`~offrl_jax.algorithms.base.ConfigError` unless every override names a
    setting: a ``"*"`` path must exist in at least one of ``algorithms`` (the others lack that
    part and skip it), an ``"ALGO"`` path in that algorithm, which must be among
    ``algorithms``. Nothing is loaded or trained."""
    chosen = {name: get_algorithm(name).paths() for name in algorithms}
    for scope, values in overrides.items():
        if scope == "*":
            for path in values:
                if not any(path in paths for paths in chosen.values()):
                    valid = sorted(set().union(*chosen.values()))
                    raise ConfigError(
                        f"{source} {path}: no chosen algorithm ({', '.join(algorithms)}) has "
                        f"a setting {path!r}; valid paths: {', '.join(valid)}")
        elif scope not in chosen:
            raise ConfigError(f"{source} {scope}.{next(iter(values), '')}: {scope!r} is not "
                              f"among the chosen algorithms ({', '.join(algorithms)})")
        else:
            for path in values:
                if path not in chosen[scope]:
                    raise ConfigError(
                        f"{source} {scope}.{path}: {scope} has no setting {path!r}; valid "
                        f"paths: {', '.join(sorted(chosen[scope]))}")


def check_profile(profile: RunProfile) -> None:
    """A profile's overrides against every registered algorithm (a misspelt path in a profile
    table is an error, not a silently dropped setting)."""
    from offrl_jax.algorithms.registry import ALGORITHMS

    names = [name for name in profile.algorithm_overrides if name != "*"]
    unknown = sorted(set(names) - set(ALGORITHMS))
    if unknown:
        raise ConfigError(f"run profile {profile.name!r}: unknown algorithm(s) {unknown}")
    check_overrides(sorted(ALGORITHMS), profile.algorithm_overrides,
                    f"run profile {profile.name!r}:")


def ensure_dataset(task: Task, data_profile: str, progress: bool = True) -> dict:
    """Locate the task's data, generating the suite's own when nothing is on disk."""
    try:
        path, fmt = find_task_dataset(task, task_generated_file(task, data_profile))
    except FileNotFoundError:
        if task.path is not None:
            raise
        from offrl_jax.generation import generate_env_datasets

        print(f"generating {task.name} ({data_profile} profile): no dataset on disk",
              flush=True)
        generate_env_datasets(task.env, data_profile, kinds=[task.kind], progress=progress)
        path, fmt = find_task_dataset(task, task_generated_file(task, data_profile))
    # The bytes a run trains on: a Ray worker refuses a file whose sha256 differs.
    info = {"path": str(Path(path).resolve()), "format": fmt, "dataset_id": Path(path).stem,
            "sha256": path_sha256(path)}
    if task.minari_id is not None:  # its own environment and reference scores, not D4RL's
        from offrl_jax.tasks.minari import describe

        info.update(dataset_id=task.minari_id, minari=describe(task.spec))
    if fmt == "d4rl":
        meta = read_d4rl_metadata(path)
        if "recipe" in meta:
            info["dataset_id"] = meta.get("dataset_id", f"{task.env}-{task.kind}-gen0")
            info["generated"] = {"recipe": meta["recipe"],
                                 "behaviour": meta.get("behaviour", {}),
                                 "statistics": meta.get("statistics"),
                                 "reference_check": meta.get("reference_check"),
                                 "checksum": meta.get("checksum")}
    return info


def check_same_data(run_info_path: Path, previous: dict, task_name: str, info: dict) -> None:
    """A run directory holds one version of each task's data: resuming or adding to it with
    another version (other generated data, a real D4RL file) is an error."""
    before = previous.get("data", {}).get(task_name)
    if before is None:
        return
    if "dataset_id" not in before:
        raise ValueError(
            f"{run_info_path}: key 'data.{task_name}.dataset_id' missing (a run made before "
            f"datasets had versioned ids); expected {info['dataset_id']!r}: use a new output "
            f"directory")
    if before["dataset_id"] != info["dataset_id"]:
        raise ValueError(
            f"{run_info_path}: key 'data.{task_name}.dataset_id': expected "
            f"{before['dataset_id']!r} (this run directory's data), found "
            f"{info['dataset_id']!r}; results on two versions of a dataset cannot share a run: "
            f"use a new output directory")


def _abstract_dataset(spec, size: int = 1_000) -> Dataset:
    """A dataset of shapes only, for ``jax.eval_shape`` of an ``init`` before any data exists."""
    def f32(*shape):
        return jax.ShapeDtypeStruct(shape, jnp.float32)

    return Dataset(observations=f32(size, spec.obs_dim), actions=f32(size, spec.act_dim),
                   rewards=f32(size), next_observations=f32(size, spec.obs_dim),
                   terminals=f32(size), timeouts=f32(size),
                   episode_ids=jax.ShapeDtypeStruct((size,), jnp.int32))


def check_sweep_names(algos, task: Task, configs: dict, sweep: dict) -> None:
    """Raise :class:`~offrl_jax.training.loop.SweepError` unless every swept name is a float
    leaf of every algorithm's state (its shapes from ``jax.eval_shape`` of ``init`` on the first
    task: nothing is trained, loaded or generated). ``configs``: ``{(algo, task): config}``."""
    for algorithm in algos:
        config = configs[(algorithm.name, task.name)]
        made = algorithm.make(config, task.spec)
        state = jax.eval_shape(lambda key, data, made=made: made.init(key, data),
                               jax.random.PRNGKey(0), _abstract_dataset(task.spec))
        check_sweep(algorithm.name, state, sweep)


def train_configs(algorithms: list[str], profile: RunProfile, schedule: dict | None = None,
                  eval_backend: str | None = None) -> dict[str, TrainConfig]:
    """Each algorithm's :class:`TrainConfig`: the profile's, then ``schedule`` (``num_updates``,
    ``eval_every``, ``eval_episodes`` for every algorithm, from ``offrl bench --updates
    --eval-every --eval-episodes``), then the evaluation backend. An inconsistent schedule is
    a :class:`ConfigError`."""
    out = {}
    for name in algorithms:
        try:
            train = dataclasses.replace(profile.train_for(name), **(schedule or {}))
        except ValueError as error:
            raise ConfigError(f"{name}: {error} (--updates, --eval-every)") from None
        out[name] = dataclasses.replace(train, eval_backend=eval_backend) if eval_backend \
            else train
    return out


CONFIG_FORMAT = 1


def write_run_config(out_dir: Path, profile: str, algorithms: list[str], tasks: list[str],
                     seeds: list[int], sweep: dict, trains: dict, configs: dict) -> Path:
    """``OUT/config.json``: everything a run was made of, every setting resolved (profile,
    task tables and overrides applied), so ``offrl bench --config OUT/config.json`` relaunches
    exactly this run, whatever the defaults in the code have become since."""
    document = {
        "format": CONFIG_FORMAT, "profile": profile, "algorithms": algorithms,
        "tasks": tasks, "seeds": seeds, "sweep": sweep,
        "train": {name: dataclasses.asdict(train) for name, train in trains.items()},
        "settings": {f"{a}/{t}": config_paths(config) for (a, t), config in configs.items()},
    }
    path = out_dir / "config.json"
    write_text_atomic(path, json.dumps(document, indent=2) + "\n")
    return path


def read_run_config(path: str | Path) -> dict:
    """A ``config.json`` written by :func:`write_run_config`, checked (file, key, expected,
    found in every message)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path}: expected a run's config.json, found an unreadable file "
                          f"({type(error).__name__}: {error})") from None
    if document.get("format") != CONFIG_FORMAT:
        raise ConfigError(f"{path}: key 'format': expected {CONFIG_FORMAT}, found "
                          f"{document.get('format')!r}")
    for key in ("profile", "algorithms", "tasks", "seeds", "sweep", "train", "settings"):
        if key not in document:
            raise ConfigError(f"{path}: key {key!r} missing")
    return document


def parse_tasks(tasks: list[str]) -> list[Task]:
    """The tasks of ``--tasks`` (:func:`~offrl_jax.tasks.parse_task_argument`); one that cannot
    be resolved (an unknown name, a missing file, a Minari id without the ``minari`` package or
    not in the local Minari directory) is a :class:`ConfigError` with the reason."""
    out = []
    for argument in tasks:
        try:
            out.append(parse_task_argument(argument))
        except (KeyError, ValueError, FileNotFoundError) as error:
            reason = error.args[0] if error.args else error
            raise ConfigError(f"--tasks {argument}: {reason}") from None
    return out


def run_benchmark(algorithms: list[str], tasks: list[str], seeds: list[int], profile: str,
                  out_dir: str | Path, overrides: dict | None = None,
                  eval_backend: str | None = None, argv: list[str] | None = None,
                  progress: bool = True, sweep: dict | None = None,
                  schedule: dict | None = None, exact: dict | None = None,
                  tensorboard: bool = False, ray: RayConfig | None = None) -> list[dict]:
    """Train and evaluate every algorithm x task x seed (x sweep point) and write the tables.

    ``sweep``: ``{leaf: values}``; several leaves sweep their grid (every combination).
    ``schedule``: ``num_updates``, ``eval_every``, ``eval_episodes`` for every algorithm.
    ``exact``: a :func:`read_run_config` document: its resolved settings and training schedules
    replace the profile's, the task tables and ``overrides`` (a relaunch).
    ``tensorboard``: also write the scalar logs as TensorBoard event files
    (:mod:`offrl_jax.results.tensorboard`); without tensorboardX installed, a
    :class:`~offrl_jax.results.tensorboard.TensorBoardUnavailable` before anything runs.
    ``ray``: run the cells as Ray tasks (:mod:`offrl_jax.training.distributed`) instead of one
    after another in this process; the records are the same.
    """
    if tensorboard:
        require_tensorboard()  # before any data step or training
    run_profile = RUN_PROFILES[profile]
    out_dir = Path(out_dir)
    algos = [get_algorithm(a) for a in algorithms]
    task_objs = parse_tasks(tasks)
    sweep = {name: [float(v) for v in values] for name, values in (sweep or {}).items()}
    # Every config first (a misspelt or ill-typed override fails here, before any data step).
    if exact is None:
        check_profile(run_profile)
        check_overrides(algorithms, overrides or {})
        trains = train_configs(algorithms, run_profile, schedule, eval_backend)
        configs = {(algorithm.name, task.name): algorithm.make_config(
            task.name, _config_overrides(algorithm, run_profile, trains[algorithm.name],
                                         overrides or {}))
            for algorithm in algos for task in task_objs}
    else:
        trains = {name: TrainConfig(**exact["train"][name]) for name in algorithms}
        configs = {(algorithm.name, task.name): algorithm.make_config(
            None, exact["settings"][f"{algorithm.name}/{task.name}"])
            for algorithm in algos for task in task_objs}
    for (name, task_name), config in configs.items():
        period = get_algorithm(name).make(config, task_objs[0].spec).refresh_every
        if period and trains[name].eval_every % period:
            raise ConfigError(f"{name} on {task_name}: eval_every ({trains[name].eval_every}) "
                              f"must be a multiple of its rollouts.refresh_every ({period})")
    for task in task_objs:  # a Minari dataset's v5 environment has no MJX version
        for name in algorithms:
            try:
                check_backend(task.spec.name, trains[name].eval_backend)
            except ValueError as error:
                raise ConfigError(f"{name} on {task.name}: {error}") from None
    if sweep:
        check_sweep_names(algos, task_objs[0], configs, sweep)
    run_info_path = out_dir / "run.json"
    run_info = provenance(profile, argv)
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    previous = json.loads(run_info_path.read_text()) if run_info_path.exists() else {}
    if previous:  # a resumed (or repeated) run keeps its first start
        run_info["started"] = previous.get("started")
    run_info.setdefault("started", now)
    run_info["this_invocation_started"] = now
    run_info.update({"algorithms": algorithms, "tasks": [t.name for t in task_objs],
                     "seeds": seeds, "train": {}, "data": {}})
    if sweep:
        run_info["sweep"] = sweep
    write_run_config(out_dir, profile, algorithms, tasks, seeds, sweep, trains, configs)
    total = len(algos) * len(task_objs)

    def make_cell(algorithm, task, argument, done, worker=False):
        return Cell(algorithm.name, argument, task.name, configs[(algorithm.name, task.name)],
                    trains[algorithm.name], tuple(seeds), sweep,
                    str(out_dir.resolve() if worker else out_dir), run_info["data"][task.name],
                    run_profile.data_profile, f"[{done}/{total}] {algorithm.name} {task.name}",
                    progress, tensorboard,
                    {"versions": run_info["versions"], "commit": run_info["commit"]}
                    if worker else None)

    if ray is not None:
        _run_cells_on_ray(algos, task_objs, tasks, trains, configs, run_info, run_info_path,
                          previous, run_profile, progress, make_cell, ray)
    else:
        done = 0
        for task, argument in zip(task_objs, tasks, strict=True):
            run_info["data"][task.name] = ensure_dataset(task, run_profile.data_profile,
                                                         progress)
            check_same_data(run_info_path, previous, task.name, run_info["data"][task.name])
            write_text_atomic(run_info_path, json.dumps(run_info, indent=2))
            dataset = load_task_dataset(
                task, task_generated_file(task, run_profile.data_profile))
            for algorithm in algos:
                run_info["train"][algorithm.name] = dataclasses.asdict(trains[algorithm.name])
                run_info.setdefault("configs", {})[f"{algorithm.name}/{task.name}"] = repr(
                    configs[(algorithm.name, task.name)])
                write_text_atomic(run_info_path, json.dumps(run_info, indent=2))
                done += 1
                info = run_cell(make_cell(algorithm, task, argument, done), dataset)
                if "models" in info:
                    run_info.setdefault("models", {})[f"{algorithm.name}/{task.name}"] = \
                        info["models"]
                    write_text_atomic(run_info_path, json.dumps(run_info, indent=2))
    run_info["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    run_info["trained_by_commit"] = training_commits(out_dir)
    write_text_atomic(run_info_path, json.dumps(run_info, indent=2))
    rows = write_summary(out_dir)
    print(f"results: {out_dir / 'summary.md'} (raw records in {out_dir / 'records'}, plots in "
          f"{out_dir / 'plots'})", flush=True)
    return rows


def _run_cells_on_ray(algos, task_objs, tasks, trains, configs, run_info, run_info_path,
                      previous, run_profile, progress, make_cell, ray: RayConfig) -> None:
    """The cells as Ray tasks: every task's data made and hashed here first, the shared models
    fitted once each, the cells dispatched; ``run.json`` updated (here alone) as each returns.
    Raises CellsFailed naming every failed cell after the others have finished."""
    from offrl_jax.training import distributed

    cluster = distributed.connect(ray)
    gpus = distributed.gpus_per_cell(ray)
    for task in task_objs:
        run_info["data"][task.name] = ensure_dataset(task, run_profile.data_profile, progress)
        check_same_data(run_info_path, previous, task.name, run_info["data"][task.name])
    cells = []
    for task, argument in zip(task_objs, tasks, strict=True):
        for algorithm in algos:
            run_info["train"][algorithm.name] = dataclasses.asdict(trains[algorithm.name])
            run_info.setdefault("configs", {})[f"{algorithm.name}/{task.name}"] = repr(
                configs[(algorithm.name, task.name)])
            cells.append(make_cell(algorithm, task, argument, len(cells) + 1, worker=True))
    # A cell finished earlier whose checkpoints are gone is not retrained: no fit for it.
    groups = model_groups([cell for cell in cells if not finished_without_checkpoint(cell)],
                          {task.name: task for task in task_objs})
    run_info["ray"] = {**cluster, "gpus_per_cell": gpus, "cpus_per_cell": ray.cpus_per_cell,
                       "driver_device": run_info["device"], "cells": {}}
    write_text_atomic(run_info_path, json.dumps(run_info, indent=2))
    if progress:
        print(f"ray: {len(cells)} cell(s) and {len(groups)} model fit(s) on {cluster['nodes']} "
              f"node(s) ({cluster['resources']}), {gpus:g} GPU(s) per cell", flush=True)
    failed = []
    for kind, item, result, error in distributed.run_on_ray(cells, groups, ray, gpus):
        if kind == "fit":  # item: (task, pretrain_id); the report names the pretrain_id
            users = [cell.algorithm for cell in groups[item]]
            run_info.setdefault("model_fits", {})[f"{item[0]}/{'+'.join(users)}"] = {
                "algorithms": users,
                **(result or {"error": str(error).strip().splitlines()[-1]})}
        elif error is not None:
            failed.append(f"{item.algorithm} on {item.task_name}: "
                          f"{str(error).strip().splitlines()[-1]}")
        else:
            key = f"{item.algorithm}/{item.task_name}"
            if "models" in result:
                run_info.setdefault("models", {})[key] = result["models"]
            run_info["ray"]["cells"][item.name] = {name: result[name] for name in (
                "host", "pid", "device", "device_count", "started", "finished", "seconds")}
        if error is not None and progress:
            print(f"ray: {kind} {getattr(item, 'name', item)} failed: {error}", flush=True)
        write_text_atomic(run_info_path, json.dumps(run_info, indent=2))
    # The devices that trained (the driver's own JAX does no device work under Ray).
    done = run_info["ray"]["cells"].values()
    if done:
        run_info["device"] = "; ".join(sorted({cell["device"] for cell in done}))
        run_info["device_count"] = max(cell["device_count"] for cell in done)
    if failed:
        run_info["ray"]["failed"] = failed
        write_text_atomic(run_info_path, json.dumps(run_info, indent=2))
        raise distributed.CellsFailed(f"{len(failed)} of {len(cells)} cell(s) failed (the "
                                      f"others are done; run the same command again to "
                                      f"resume): " + "; ".join(failed))
