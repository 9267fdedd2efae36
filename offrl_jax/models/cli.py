"""``offrl model train``: fit the dynamics ensemble on a task's dataset, save it, report quality."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np

from offrl_jax.models.checkpoint import save_model
from offrl_jax.models.ensemble import EnsembleConfig, EnsembleState, train_ensemble


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """The model settings of ``offrl model train --settings``: the ensemble config, an optional
    cap on the transitions used (a uniformly drawn subset, from the seed) and the data profile
    whose generated data is loaded (which only matters when no real D4RL file is found; see
    ``offrl_jax.data.load_task_dataset``)."""

    config: EnsembleConfig
    max_transitions: int | None = None
    data_profile: str = "quick"


MODEL_SETTINGS: dict[str, ModelSettings] = {
    # The published settings (docs/algorithms.md#dynamics-ensemble) on all the data.
    "full": ModelSettings(EnsembleConfig(), data_profile="full"),
    # A CPU-sized smoke run: small network, 50k transitions, at most 20 epochs.
    "quick": ModelSettings(
        EnsembleConfig(hidden_sizes=(64, 64), weight_decays=(2.5e-5, 5e-5, 1e-4),
                       max_epochs=20),
        max_transitions=50_000, data_profile="quick",
    ),
}


def default_settings() -> str:
    """``quick`` on a CPU-only machine, ``full`` where JAX sees an accelerator (as for
    ``offrl data generate``)."""
    return "quick" if jax.default_backend() == "cpu" else "full"


_FIELDS = ("observations", "actions", "rewards", "next_observations")


def register(subparsers) -> None:
    model = subparsers.add_parser("model", help="dynamics models")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    train = model_commands.add_parser(
        "train", help="train a dynamics ensemble on a task's dataset and report its quality")
    train.add_argument("--task", required=True,
                       help="a registered task name, or NAME=ENV:PATH to register one")
    train.add_argument("--settings", "--profile", dest="settings", default=None,
                       choices=sorted(MODEL_SETTINGS),
                       help="model settings: full (published settings, all data) or quick "
                            "(CPU-sized); default: quick on a CPU, full with an accelerator "
                            "(--profile: the older name of this flag)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default=None,
                       help="output directory (default runs/models/TASK/seedN)")
    train.set_defaults(func=_train_command)


def _field(dataset, name: str) -> np.ndarray:
    value = dataset[name] if isinstance(dataset, Mapping) else getattr(dataset, name)
    return np.asarray(value, np.float32)


def _train_command(args) -> int:
    from offrl_jax.data import load_task_dataset
    from offrl_jax.generation.versions import task_generated_file
    from offrl_jax.tasks import parse_task_argument

    task = parse_task_argument(args.task)
    settings_name = args.settings or default_settings()
    settings = MODEL_SETTINGS[settings_name]
    dataset = load_task_dataset(task, task_generated_file(task, settings.data_profile))
    obs, act, rew, next_obs = (_field(dataset, name) for name in _FIELDS)
    rew = rew.reshape(-1)
    total = obs.shape[0]
    if settings.max_transitions is not None and total > settings.max_transitions:
        rows = np.sort(np.random.default_rng(args.seed).choice(
            total, settings.max_transitions, replace=False))
        obs, act, rew, next_obs = obs[rows], act[rows], rew[rows], next_obs[rows]

    out = Path(args.out) if args.out else Path("runs") / "models" / task.name / f"seed{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    print(f"training dynamics ensemble on {task.name} ({obs.shape[0]} of {total} transitions, "
          f"settings {settings_name}, seed {args.seed}) on {jax.devices()[0].device_kind}")
    start = time.perf_counter()
    state = jax.block_until_ready(
        train_ensemble(jax.random.key(args.seed), obs, act, rew, next_obs, settings.config))
    seconds = time.perf_counter() - start
    model_path = save_model(out / "model", state)

    report = quality_report(state, obs, act, rew, next_obs)
    # The key keeps its first name, so reports written before read the same.
    report.update(task=task.name, profile=settings_name, seed=args.seed,
                  transitions=int(obs.shape[0]), train_seconds=seconds, model_path=str(model_path))
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(format_report(report))
    print(f"saved model to {model_path} and report to {out / 'report.json'}")
    return 0


def quality_report(state: EnsembleState, obs, act, rew, next_obs) -> dict:
    """Holdout quality of a trained ensemble as plain Python values (JSON-ready).

    Per-dimension error: RMSE averaged over elites and the fraction of the holdout target's
    variance left unexplained (MSE / Var), for each delta-obs dim and the reward.
    """
    holdout = np.asarray(state.holdout_indices)
    targets = np.concatenate([next_obs[holdout] - obs[holdout], rew[holdout, None]], axis=-1)
    elites = np.asarray(state.elite_indices)
    elite_mse = np.asarray(state.holdout_mse_per_dim)[elites].mean(axis=0)
    target_var = np.maximum(targets.var(axis=0), 1e-12)
    names = [f"obs[{i}]" for i in range(state.obs_dim)] + ["reward"]
    return {
        "epochs_trained": int(state.epochs_trained),
        "holdout_size": int(holdout.size),
        "holdout_mse": np.asarray(state.holdout_mse).tolist(),
        "holdout_nll": np.asarray(state.holdout_nll).tolist(),
        "elites": elites.tolist(),
        "per_dimension": [
            {"dim": name, "elite_rmse": float(np.sqrt(mse)),
             "unexplained_variance": float(mse / var)}
            for name, mse, var in zip(names, elite_mse, target_var, strict=True)
        ],
    }


def format_report(report: dict) -> str:
    lines = [f"epochs trained {report['epochs_trained']}, holdout {report['holdout_size']}",
             "member  holdout_mse  holdout_nll/dim  elite"]
    elites = set(report["elites"])
    for member, (mse, nll) in enumerate(zip(report["holdout_mse"], report["holdout_nll"],
                                            strict=True)):
        lines.append(f"{member:6d}  {mse:11.5f}  {nll:15.4f}  {'*' if member in elites else ''}")
    lines.append("dim        elite_rmse  unexplained_var")
    for row in report["per_dimension"]:
        lines.append(f"{row['dim']:9s}  {row['elite_rmse']:10.5f}  "
                     f"{row['unexplained_variance']:15.4f}")
    return "\n".join(lines)
