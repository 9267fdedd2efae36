"""The generic training loop: any algorithm, seeds as a vmapped (and sharded) axis.

One evaluation interval is one compiled call: ``lax.scan`` over refresh periods, each running
the algorithm's periodic ``refresh`` (model rollouts) once and then a ``lax.scan`` over its
updates. Between intervals the host evaluates the policies and writes a checkpoint, so a killed
run resumes from the last interval; every key is derived from (seed key, interval), which makes
the resumed run bit-identical to an uninterrupted one.

A seed whose metrics turn NaN or inf is flagged ``failed`` and frozen at the state it had at the
start of the refresh period (or evaluation interval) in which it failed; the other seeds, in the
same program, are unaffected.

A sweep over hyperparameters that live in the state as float leaves (MOPO's ``penalty_coef``,
COMBO's ``cql_weight``) adds rows the same way: every (value, seed) pair is a row of the one
leading axis, set inside the compiled init, so the sweep trains as one program. Row (value v,
seed s) uses seed s's keys, and each value's rows are evaluated on the episodes an unswept run of
those seeds gets, so the row whose value is the init's own reproduces the unswept run.

An algorithm with ``pretrain`` (a dynamics model) gets each seed's pretrained pytree before init:
loaded from a :class:`~offrl_jax.models.store.ModelStore` when there, else fitted for all missing
seeds in one ``jit(vmap(pretrain))`` program (and saved), then given to ``init`` with the rows'
leading axis and sharding. Sweep rows share their seed's model. Without a store the models are
still fitted that way, so a store changes how long a run takes, never its numbers.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from offrl_jax.algorithms.base import Algorithm, Registration
from offrl_jax.evaluation import Evaluator
from offrl_jax.models.store import EntryKey, ModelStore, dataset_fingerprint, load_or_fit

# Training checkpoints kept per (algorithm, task): the newest and one to fall back on.
KEEP_CHECKPOINTS = 2

# The fewest rows a pretrain fit runs (see Trainer.prepare_models).
MIN_FIT_ROWS = 2


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    num_updates: int = 10_000
    eval_every: int = 2_000
    eval_episodes: int = 5
    eval_backend: str = "host"

    def __post_init__(self):
        if self.num_updates % self.eval_every:
            raise ValueError(f"num_updates ({self.num_updates}) must be a multiple of "
                             f"eval_every ({self.eval_every})")


def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def make_interval_fn(algorithm: Algorithm, eval_every: int) -> Callable:
    """``(state, failed, dataset, key) -> (state, failed, metrics)`` for ONE seed of a made
    algorithm: the updates of one evaluation interval. ``metrics`` are interval means. Vmap it
    over seeds."""
    period = algorithm.refresh_every or eval_every
    if eval_every % period:
        raise ValueError(f"eval_every ({eval_every}) must be a multiple of "
                         f"{algorithm.name}'s rollouts.refresh_every ({period})")

    def interval(state, failed, dataset, key):
        def run_period(carry, period_key):
            start, failed = carry
            refresh_key, update_key = jax.random.split(period_key)
            state = start
            if algorithm.refresh is not None:
                state = algorithm.refresh(state, dataset, refresh_key)

            def step(carry, step_key):
                state, broken = carry
                state, metrics = algorithm.update(state, dataset, step_key)
                return (state, broken | ~_all_finite(metrics)), metrics

            (state, broken), metrics = jax.lax.scan(
                step, (state, jnp.zeros((), bool)), jax.random.split(update_key, period))
            # One select per period, not per update: a per-update select copies the whole
            # state (model buffers included) every step.
            failed = failed | broken
            return (_keep_if(~failed, state, start), failed), jax.tree_util.tree_map(
                jnp.mean, metrics)

        (state, failed), metrics = jax.lax.scan(
            run_period, (state, failed), jax.random.split(key, eval_every // period))
        return state, failed, jax.tree_util.tree_map(jnp.mean, metrics)

    return interval


def _scored(result, row: int) -> dict:
    """Row ``row`` of an evaluation as a record's fields: mean return and normalized score
    (None when an episode was not finite), every episode's return and length."""
    returns = result.returns[row]
    scored = bool(np.all(np.isfinite(returns)))
    return {"return": float(returns.mean()) if scored else None,
            "normalized_score": float(result.normalized[row].mean()) if scored else None,
            "episode_returns": [float(r) for r in returns] if scored else None,
            "episode_lengths": [int(n) for n in result.lengths[row]]}


def sweepable_leaves(state) -> list[str]:
    """The fields of a state (concrete or from ``jax.eval_shape``) that a sweep can set: its
    top-level scalar float leaves, e.g. MOPO's ``penalty_coef``."""
    names = []
    for field in dataclasses.fields(state):
        if not field.metadata.get("pytree_node", True):
            continue
        value = getattr(state, field.name)
        if (hasattr(value, "shape") and hasattr(value, "dtype") and value.shape == ()
                and jnp.issubdtype(value.dtype, jnp.floating)):
            names.append(field.name)
    return names


class SweepError(ValueError):
    """A sweep names no sweepable leaf of an algorithm's state, or has no or repeated values."""


def check_sweep(algorithm_name: str, state, sweep: Mapping[str, Sequence[float]]) -> None:
    """Raise :class:`SweepError` unless every swept name is a sweepable leaf of ``state`` with
    at least one value, and no value repeats."""
    available = sweepable_leaves(state)
    for name, values in sweep.items():
        if name not in available:
            raise SweepError(
                f"sweep {name!r}: {algorithm_name}'s state has no float leaf {name!r}; its "
                f"sweepable leaves (top-level scalar float fields of its state): "
                f"{', '.join(available) if available else 'none'}")
        if not len(values):
            raise SweepError(f"sweep {name!r}: expected at least one value, found none")
        if len(set(values)) != len(values):
            raise SweepError(f"sweep {name!r}: values repeat in {list(values)}")


def _init_key(seed_key):
    """The key ``init`` (and ``pretrain``) receives from a row's seed key."""
    return jax.random.fold_in(seed_key, 0)


def _keep_if(condition, new, old):
    return jax.tree_util.tree_map(lambda n, o: jnp.where(condition, n, o), new, old)


def padding_rows(num_rows: int, shard: bool = True) -> int:
    """Rows to add so ``num_rows`` divides over every local device (0 on one device or without
    sharding): 5 seeds on 4 devices train 8 rows, 3 of them padding, so no device idles."""
    devices = len(jax.devices()) if shard else 1
    return (-num_rows) % devices if devices > 1 else 0


def seed_sharding(num_seeds: int):
    """Shard the seed axis over all devices when it divides evenly, else keep one device."""
    devices = jax.devices()
    if len(devices) == 1 or num_seeds % len(devices):
        return None, None
    mesh = Mesh(np.array(devices), ("seeds",))
    return NamedSharding(mesh, PartitionSpec("seeds")), NamedSharding(mesh, PartitionSpec())


class Trainer:
    """Trains ``len(seeds)`` copies of one algorithm on one dataset in one compiled program.

    ``sweep`` (``{leaf: values}``, leaves named by :func:`sweepable_leaves`) trains every
    combination of values x every seed: ``len(points) * len(seeds)`` rows, value-major (row
    ``p * len(seeds) + i`` is ``points[p]`` with ``seeds[i]``), each leaf set after init inside
    the compiled init.

    ``run(on_interval)`` yields control after each interval with per-row evaluation results;
    ``checkpoint_dir`` makes the run resumable.

    When the algorithm has ``pretrain``, :meth:`prepare_models` (called by :meth:`initial` if
    not before) loads or fits each seed's pretrained pytree, from and into ``model_store`` when
    given; ``log`` receives its progress lines (None: silent).

    ``made``: ``algorithm`` already made for ``config`` and ``spec`` (a run plan's), used as is;
    ``sweep_checked``: the sweep was checked against the algorithm's state already (by the run
    plan), so it is not again here.
    """

    def __init__(self, algorithm: Registration, config, dataset, spec, seeds,
                 train: TrainConfig,
                 checkpoint_dir: str | Path | None = None, shard: bool = True,
                 sweep: Mapping[str, Sequence[float]] | None = None,
                 model_store: ModelStore | None = None,
                 log: Callable[[str], None] | None = print,
                 made: Algorithm | None = None, sweep_checked: bool = False):
        # Made once: its networks and optimizers are built here (or were, by a run plan, which
        # hands its ``made``), its states hold arrays only.
        self.version = algorithm.version
        self.algorithm = algorithm = algorithm.make(config, spec) if made is None else made
        self.config, self.train = config, train
        self.spec = spec
        self.seeds = list(seeds)
        self.sweep = {name: [float(v) for v in values] for name, values in (sweep or {}).items()}
        # Without a sweep one point, {}: the rows are the seeds, as before sweeps existed.
        self.points = [dict(zip(self.sweep, combination, strict=True))
                       for combination in itertools.product(*self.sweep.values())]
        self.rows = [(point, seed) for point in self.points for seed in self.seeds]
        # Padding rows (copies of the last row, trained but never recorded or evaluated) make
        # the rows divide over the local devices, so every device trains.
        self.num_padding = padding_rows(len(self.rows), shard)
        self._padded_rows = self.rows + [self.rows[-1]] * self.num_padding
        self.num_intervals = train.num_updates // train.eval_every
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.model_store, self.log, self._shard = model_store, log, shard
        self._manager: ocp.CheckpointManager | None = None
        self.models_report: dict | None = None
        self._pretrained = None
        seed_shard, replicated = (seed_sharding(len(self._padded_rows)) if shard
                                  else (None, None))
        self._seed_shard = seed_shard
        self.dataset = jax.device_put(dataset, replicated) if replicated else dataset
        keys = jnp.stack([jax.random.PRNGKey(seed) for _, seed in self._padded_rows])
        self.keys = self._place(keys)
        leaves = {name: jnp.asarray([point[name] for point, _ in self._padded_rows],
                                    jnp.float32)
                  for name in self.sweep}
        self.leaves = self._place(leaves)

        def init_row(key, values, pretrained, data):
            extra = {} if algorithm.pretrain is None else {"pretrained": pretrained}
            state = algorithm.init(_init_key(key), data, **extra)
            return state.replace(**{name: jnp.asarray(value, getattr(state, name).dtype)
                                    for name, value in values.items()})

        if self.sweep and not sweep_checked:
            check_sweep(algorithm.name, jax.eval_shape(
                lambda k, d: algorithm.init(k, d), keys[0], self.dataset),
                self.sweep)
        self._init = jax.jit(jax.vmap(init_row, in_axes=(0, 0, 0, None)))
        self._interval = jax.jit(
            jax.vmap(make_interval_fn(algorithm, train.eval_every),
                     in_axes=(0, 0, None, 0)),
            donate_argnums=(0,))
        self.evaluator = Evaluator(spec.name, algorithm.act, train.eval_episodes,
                                   backend=train.eval_backend)
        # A reference policy (ARMOR's pi_ref) is scored with the same evaluator settings, keys
        # and episodes as the policy, so J(pi) - J(pi_ref) is a paired difference.
        self.reference_evaluator = None if algorithm.reference_act is None else Evaluator(
            spec.name, algorithm.reference_act, train.eval_episodes, backend=train.eval_backend)

    def abstract_state(self):
        """The shapes and dtypes of :meth:`initial`'s state (all rows), computed without running
        ``init`` or fitting a model: the template a checkpoint is restored into."""
        pretrained = None
        if self.algorithm.pretrain is not None:
            one = jax.eval_shape(self.algorithm.pretrain, _init_key(jax.random.PRNGKey(0)),
                                 self.dataset)
            pretrained = jax.tree_util.tree_map(
                lambda x: jax.ShapeDtypeStruct((len(self._padded_rows),) + x.shape, x.dtype),
                one)
        return jax.eval_shape(self._init, self.keys, self.leaves, pretrained, self.dataset)

    def restore_final(self) -> dict:
        """The newest checkpoint's carry (``state``, ``failed``, ``next_interval``,
        ``records``), restored into :meth:`abstract_state`, padding rows dropped;
        FileNotFoundError without one."""
        restored = self._restore(self._restore_template())
        if restored is None:
            raise FileNotFoundError(f"{self.checkpoint_dir}: no checkpoint to evaluate")
        return {**restored, "state": self.real_rows(restored["state"]),
                "failed": self.real_rows(restored["failed"])}

    def _restore_template(self) -> dict:
        """``state`` and ``failed`` as shapes, dtypes and the shardings :meth:`initial` gives
        them: what :meth:`_restore` reads a checkpoint into, without running ``init`` (ATAC's
        and ARMOR's warm starts are 100k updates) or fitting a model."""
        sharding = self._seed_shard or jax.sharding.SingleDeviceSharding(jax.devices()[0])

        def placed(leaf):
            return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)

        failed = jax.ShapeDtypeStruct((len(self._padded_rows),), jnp.bool_)
        return jax.tree_util.tree_map(placed, {"state": self.abstract_state(), "failed": failed})

    def real_rows(self, tree):
        """``tree`` (leading axis: every trained row) without its padding rows."""
        if not self.num_padding:
            return tree
        return jax.tree_util.tree_map(lambda leaf: leaf[:len(self.rows)], tree)

    def fingerprint(self) -> dict:
        """What a checkpoint must match to be resumed (the number of updates may grow)."""
        fingerprint = {"algorithm": self.algorithm.name, "config": repr(self.config),
                       "env": self.spec.name, "seeds": self.seeds,
                       "eval_every": self.train.eval_every,
                       "dataset_size": int(self.dataset.size)}
        if self.sweep:  # only then, so checkpoints of unswept runs written before still match
            fingerprint["sweep"] = self.sweep
        if self.num_padding:  # another device count pads differently: another state shape
            fingerprint["padding_rows"] = self.num_padding
        if self.version != 1:  # only then, so version 1's checkpoints still match
            fingerprint["algorithm_version"] = self.version
        return fingerprint

    def _place(self, tree):
        return jax.device_put(tree, self._seed_shard) if self._seed_shard else tree

    def prepare_models(self) -> dict | None:
        """Load or fit every seed's pretrained pytree (once; kept for :meth:`initial`) and
        return the report of :func:`~offrl_jax.models.store.load_or_fit` (None when the
        algorithm has no ``pretrain``), also kept as ``models_report``."""
        algorithm, spec = self.algorithm, self.spec
        if algorithm.pretrain is None or self._pretrained is not None:
            return self.models_report
        seeds = list(dict.fromkeys(self.seeds))
        init_keys = [_init_key(jax.random.PRNGKey(seed)) for seed in seeds]

        def pretrain(key, data):
            return algorithm.pretrain(key, data)

        template = jax.eval_shape(pretrain, init_keys[0], self.dataset)
        fingerprint = dataset_fingerprint(self.dataset) if self.model_store else ""
        entries = [EntryKey(spec.name, fingerprint, algorithm.pretrain_id, seed,
                            tuple(int(x) for x in np.asarray(jax.random.key_data(key))))
                   for seed, key in zip(seeds, init_keys, strict=True)]
        fit_program = jax.jit(jax.vmap(pretrain, in_axes=(0, None)))

        def fit(indices):
            # One seed alone compiles to other kernels (matrix-vector products) than a batch
            # and rounds differently, while batches of 2, 3 and 4 seeds give bit-identical
            # models per seed (measured on a CPU). Fitting at least MIN_FIT_ROWS rows (the
            # last key repeated) keeps a seed's model independent of which seeds the store
            # lacked, so a partly filled store changes no numbers either.
            rows = list(indices) + [indices[-1]] * max(0, MIN_FIT_ROWS - len(indices))
            rows += [indices[-1]] * padding_rows(len(rows), self._shard)
            keys = jnp.stack([init_keys[i] for i in rows])
            sharding, _ = seed_sharding(len(rows)) if self._shard else (None, None)
            fitted = fit_program(jax.device_put(keys, sharding) if sharding else keys,
                                 self.dataset)
            return jax.tree_util.tree_map(lambda leaf: leaf[:len(indices)], fitted)

        # On a CPU a fit of five seeds can take an hour: fit MIN_FIT_ROWS seeds at a time
        # (the same numbers, above), each saved before the next, so a kill keeps the finished
        # ones. An accelerator fits them all at once.
        chunk = MIN_FIT_ROWS if jax.default_backend() == "cpu" and self.model_store else None
        per_seed, self.models_report = load_or_fit(self.model_store, entries, template, fit,
                                                   self.log, chunk)
        # Rows are (sweep point, seed): every point's row of a seed gets that seed's model.
        rows = np.asarray([seeds.index(seed) for _, seed in self._padded_rows])
        self._pretrained = jax.device_put(
            jax.tree_util.tree_map(lambda leaf: leaf[rows], per_seed), self._seed_shard)
        return self.models_report

    def initial(self):
        self.prepare_models()
        pretrained, self._pretrained = self._pretrained, None
        state = self._place(self._init(self.keys, self.leaves, pretrained, self.dataset))
        failed = self._place(jnp.zeros(len(self._padded_rows), bool))
        return {"state": state, "failed": failed, "next_interval": 0, "records": []}

    def run(self, on_interval: Callable | None = None) -> dict:
        """Train to the end (resuming from the last checkpoint) and return the final carry:
        ``state``, ``failed (rows,)`` (padding rows dropped) and ``records``: one dict per row
        per evaluation (with ``"sweep": {leaf: value}`` after ``"seed"`` when sweeping).

        ``on_interval(done, total, all_records, new_records)`` is called after each interval.
        """
        # A checkpoint is read into the state's shapes alone: a resumed cell never runs init.
        carry = self._restore(self._restore_template())
        if carry is not None:
            self._pretrained = None  # loaded by prepare_models; the checkpoint holds the models
        else:
            steps = self.algorithm.init_updates(int(self.dataset.size))
            if steps and self.log is not None:
                self.log(f"init runs {steps:,} updates per row before the first interval "
                         f"(warm start or behaviour cloning; no progress until it ends)")
            carry = self.initial()
        for interval in range(carry["next_interval"], self.num_intervals):
            keys = jax.vmap(lambda k, i=interval: jax.random.fold_in(
                jax.random.fold_in(k, 1), i))(self.keys)
            state, failed, metrics = self._interval(carry["state"], carry["failed"],
                                                    self.dataset, keys)
            result = self._evaluate(state, interval)
            reference = (None if self.reference_evaluator is None
                         else self._evaluate(state, interval, self.reference_evaluator))
            failed_host = np.asarray(failed)
            metrics_host = jax.tree_util.tree_map(np.asarray, metrics)
            step = (interval + 1) * self.train.eval_every
            new_records = []
            for i, (point, seed) in enumerate(self.rows):
                # A failed row keeps its last finite parameters and is evaluated like the
                # others (flagged); only a non-finite evaluation has no score. Every episode is
                # kept, for statistics beyond the mean and policy selection.
                new_records.append({
                    "seed": seed, **({"sweep": point} if self.sweep else {}),
                    "step": step, "failed": bool(failed_host[i]), **_scored(result, i),
                    "metrics": {k: float(v[i]) for k, v in metrics_host.items()},
                    **({} if reference is None else {"reference": _scored(reference, i)}),
                })
            carry = {"state": state, "failed": failed, "next_interval": interval + 1,
                     "records": carry["records"] + new_records}
            self._save(carry)
            if on_interval is not None:
                on_interval(interval + 1, self.num_intervals, carry["records"], new_records)
        if self._manager is not None:
            self._manager.close()
            self._manager = None
        return {**carry, "state": self.real_rows(carry["state"]),
                "failed": self.real_rows(carry["failed"])}

    def _evaluate(self, state, interval: int, evaluator: Evaluator | None = None):
        """The evaluation's returns, lengths and normalized scores, ``(rows, episodes)`` each
        (an :class:`~offrl_jax.evaluation.EvalResult`) by ``evaluator`` (default: the
        policy's). Each sweep point's rows meet the same episodes (start states and policy
        keys) as an unswept run of these seeds: one evaluation with one group of rows per
        point."""
        eval_key = jax.random.fold_in(jax.random.PRNGKey(self.seeds[0]), 10_000 + interval)
        return (evaluator or self.evaluator)(self.real_rows(state), eval_key,
                                             groups=len(self.points))

    # Checkpoints: orbax's CheckpointManager, one step per evaluation interval (the state
    # pytree and a JSON header with the fingerprint and the records), the last two kept. A step
    # is committed only when complete; a damaged one is reported and the previous one used.
    def _checkpoints(self) -> ocp.CheckpointManager:
        if self._manager is None:
            legacy = self.checkpoint_dir / "latest.json"
            if legacy.exists():
                raise ValueError(f"{legacy}: a checkpoint of an older release (latest.json and "
                                 f"interval_* directories); it cannot resume: use another "
                                 f"output directory")
            self._manager = ocp.CheckpointManager(
                self.checkpoint_dir.resolve(), options=ocp.CheckpointManagerOptions(
                    max_to_keep=KEEP_CHECKPOINTS, create=True,
                    enable_async_checkpointing=False))
        return self._manager

    def _save(self, carry) -> None:
        if self.checkpoint_dir is None:
            return
        manager = self._checkpoints()
        manager.save(carry["next_interval"], args=ocp.args.Composite(
            state=ocp.args.StandardSave({"state": carry["state"], "failed": carry["failed"]}),
            meta=ocp.args.JsonSave({"fingerprint": self.fingerprint(),
                                    "next_interval": carry["next_interval"],
                                    "records": carry["records"]})))
        manager.wait_until_finished()

    def _restore(self, template):
        if self.checkpoint_dir is None or not self.checkpoint_dir.exists():
            return None
        manager = self._checkpoints()
        target = {"state": template["state"], "failed": template["failed"]}
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        warn = self.log or print
        for step in sorted(manager.all_steps(), reverse=True):
            where = self.checkpoint_dir / str(step)
            try:
                meta = manager.restore(step, args=ocp.args.Composite(
                    meta=ocp.args.JsonRestore()))["meta"]
            except Exception as error:  # orbax raises many kinds for damaged files
                warn(f"WARNING damaged checkpoint {where} ({type(error).__name__}); trying the "
                     f"previous one")
                continue
            if meta.get("fingerprint") != self.fingerprint():
                raise ValueError(
                    f"{where}: key 'fingerprint': expected {self.fingerprint()}, found "
                    f"{meta.get('fingerprint')}; this checkpoint belongs to another run (use "
                    f"another output directory)")
            if meta["next_interval"] > self.num_intervals:
                raise ValueError(f"{where}: key 'next_interval': expected at most "
                                 f"{self.num_intervals}, found {meta['next_interval']}")
            try:
                restored = manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract)))["state"]
            except Exception as error:
                warn(f"WARNING damaged checkpoint {where} ({type(error).__name__}: "
                     f"{str(error).splitlines()[0][:120]}); trying the previous one")
                continue
            return {"state": restored["state"], "failed": restored["failed"],
                    "next_interval": meta["next_interval"], "records": meta["records"]}
        if manager.all_steps():
            warn(f"WARNING no intact checkpoint in {self.checkpoint_dir}: this cell restarts")
        return None


def read_checkpoint(checkpoint_dir: str | Path) -> tuple[dict, dict]:
    """``(trees, meta)`` of a Trainer's newest checkpoint in ``checkpoint_dir``: ``trees`` has
    ``state`` and ``failed`` as nested dicts of arrays (no template needed), ``meta`` the
    fingerprint, ``next_interval`` and ``records``."""
    with ocp.CheckpointManager(Path(checkpoint_dir).resolve()) as manager:
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"{checkpoint_dir}: no checkpoint")
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["meta"])
