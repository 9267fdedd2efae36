"""``offrl evaluate RUN_DIR``: re-evaluate a run's final policies (more episodes, another
backend, other episodes) from its ``config.json`` and checkpoints, and export every episode.

Output: ``OUT/ALGO__TASK[__sweep-LEAF].jsonl`` (``OUT`` defaults to ``RUN_DIR/evaluation``), one
JSON object per row (seed, or seed of a sweep point) with these keys:

- ``algorithm``, ``task``, ``seed``, ``sweep`` (``{leaf: value}``, sweeps only);
- ``step``: the updates the evaluated parameters were trained for; ``failed``: whether the row's
  losses had turned non-finite (it is evaluated with its last finite parameters);
- ``episodes``, ``backend`` and ``key`` (``"training"``: the same episodes as the run's last
  evaluation, so with the run's episode count the numbers equal its last records; or the
  ``--seed`` given);
- ``episode_returns``, ``episode_lengths``, ``episode_normalized_scores``: one entry per
  episode; ``return`` and ``normalized_score``: their means.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from offrl_jax.algorithms.registry import get_algorithm
from offrl_jax.data import load_task_dataset
from offrl_jax.evaluation import Evaluator
from offrl_jax.files import write_text_atomic
from offrl_jax.generation.versions import task_generated_file
from offrl_jax.results.labels import cell_name
from offrl_jax.tasks import parse_task_argument
from offrl_jax.training.loop import TrainConfig, Trainer
from offrl_jax.training.profiles import RUN_PROFILES
from offrl_jax.training.runner import read_run_config


def reevaluate(run_dir: str | Path, out_dir: str | Path | None = None,
               episodes: int | None = None, backend: str | None = None,
               seed: int | None = None, log=print) -> list[Path]:
    """Evaluate the final policies of every (algorithm, task) of the run in ``run_dir``;
    returns the files written."""
    run_dir = Path(run_dir)
    config = read_run_config(run_dir / "config.json")
    out_dir = Path(out_dir) if out_dir else run_dir / "evaluation"
    data_profile = RUN_PROFILES[config["profile"]].data_profile
    sweep = config["sweep"] or None
    written = []
    for task_arg in config["tasks"]:
        task = parse_task_argument(task_arg)
        dataset = load_task_dataset(task, task_generated_file(task, data_profile))
        for name in config["algorithms"]:
            registration = get_algorithm(name)
            train = TrainConfig(**config["train"][name])
            settings = registration.make_config(None, config["settings"][f"{name}/{task.name}"])
            trainer = Trainer(registration, settings, dataset, task.spec, config["seeds"], train,
                              checkpoint_dir=run_dir / "checkpoints" /
                              cell_name(name, task.name, sweep),
                              sweep=sweep, log=log)
            carry = trainer.restore_final()
            count = episodes or train.eval_episodes
            evaluator = Evaluator(task.spec.name, trainer.algorithm.act, count,
                                  backend=backend or train.eval_backend)
            if seed is None:  # the episodes of the run's last evaluation
                key = jax.random.fold_in(jax.random.PRNGKey(trainer.seeds[0]),
                                         10_000 + carry["next_interval"] - 1)
            else:
                key = jax.random.fold_in(jax.random.PRNGKey(seed), 20_000)
            result = evaluator(carry["state"], key, groups=len(trainer.points))
            failed = np.asarray(carry["failed"])
            lines = []
            for i, (point, row_seed) in enumerate(trainer.rows):
                lines.append(json.dumps({
                    "algorithm": name, "task": task.name, "seed": row_seed,
                    **({"sweep": point} if sweep else {}),
                    "step": carry["next_interval"] * train.eval_every,
                    "failed": bool(failed[i]), "episodes": count,
                    "backend": backend or train.eval_backend,
                    "key": "training" if seed is None else seed,
                    "episode_returns": [float(x) for x in result.returns[i]],
                    "episode_lengths": [int(x) for x in result.lengths[i]],
                    "episode_normalized_scores": [float(x) for x in result.normalized[i]],
                    "return": float(result.returns[i].mean()),
                    "normalized_score": float(result.normalized[i].mean())}))
            path = out_dir / f"{cell_name(name, task.name, sweep)}.jsonl"
            write_text_atomic(path, "\n".join(lines) + "\n")
            written.append(path)
            if log:
                log(f"{name} {task.name}: {count} episodes x {len(trainer.rows)} rows, mean "
                    f"normalized score {float(result.normalized.mean()):.1f} -> {path}")
    return written
