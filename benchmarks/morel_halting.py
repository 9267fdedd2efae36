"""Does MOReL's pessimism fire? The halting threshold and the halt rate on one dataset.

Fits MOReL's dynamics ensemble (a run profile's model settings) on a task's data, measures the
threshold (max disagreement over the data / ``pessimism_coef``) and the distribution of the
disagreement on the data and on model rollouts of three policies: behaviour cloning (its mean
action), behaviour cloning with the Gaussian noise of the official NPG start policy (std
exp(-0.25), ``init_log_std`` of official ``configs/d4rl_hopper_medium.txt``), and MOReL's own
(untrained) SAC policy. Each rollout starts from dataset states, runs ``horizons`` steps with
the task's termination function, and is then halted as MOReL halts it: the halt rate is the
share of kept transitions that halt, ``halted_rollouts`` the share of rollouts that halt.

    OFFRL_DATA_DIR=... python -m benchmarks.morel_halting --task hopper-medium-replay \
        --data-profile quick --run-profile quick

Writes ``morel_halting.json`` and ``morel_halting.md`` (with provenance: commit, data sha256,
versions, device) under ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import subprocess
import time
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import device_name, load_note
from offrl_jax.algorithms import bc, morel
from offrl_jax.data import load_task_dataset
from offrl_jax.data.locate import find_task_dataset
from offrl_jax.generation.versions import task_generated_file
from offrl_jax.models import predict, rollout, uncertainty_penalties
from offrl_jax.tasks import get_env_spec, get_task
from offrl_jax.training import plan, profiles

QUANTILES = (0.5, 0.9, 0.99, 0.999)
NPG_START_STD = float(np.exp(-0.25))


def _git(*args) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _summary(values: np.ndarray, threshold: float) -> dict:
    return {"count": int(values.size), "mean": float(values.mean()),
            "quantiles": {str(q): float(np.quantile(values, q)) for q in QUANTILES},
            "max": float(values.max()),
            "share_above_threshold": float(np.mean(values > threshold))}


def data_disagreement(model, dataset, chunk: int = 10_000) -> np.ndarray:
    """MOReL's disagreement of every dataset (s, a), ``(N,)``."""
    out = []
    disagree = jax.jit(lambda o, a: uncertainty_penalties(*predict(model, o, a))[
        morel.DISAGREEMENT])
    for start in range(0, dataset.size, chunk):
        stop = min(start + chunk, dataset.size)
        out.append(np.asarray(disagree(dataset.observations[start:stop],
                                       dataset.actions[start:stop])))
    return np.concatenate(out)


def train_bc(dataset, spec, updates: int, key):
    cloner = bc.BC(bc.BCConfig(), spec)

    @jax.jit
    def run(key):
        keys = jax.random.split(key, updates)
        return jax.lax.scan(lambda s, k: (cloner.update(s, dataset, k)[0], None),
                            cloner.init(key, dataset), keys)[0]

    return cloner, run(key)


def measure_policy(state, spec, dataset, policy_fn, key, starts: int, horizon: int) -> dict:
    """Rollouts of ``policy_fn`` from ``starts`` dataset states: the disagreement of every
    step before halting, then MOReL's halt statistics."""
    start_key, rollout_key = jax.random.split(key)
    rows = jax.random.randint(start_key, (starts,), 0, dataset.size)

    @jax.jit
    def run(rollout_key, start_obs):
        out = rollout(state.model, rollout_key, start_obs, policy_fn, spec.termination_fn,
                      horizon, penalty=morel.DISAGREEMENT)
        halted, kept = morel.halt_unknown(out.transitions, out.valid, state.threshold,
                                          state.truncate_reward)
        rate, rollouts = morel.halt_statistics(halted, kept, state.threshold, starts)
        return out.transitions.penalties, out.valid, kept, rate, rollouts

    penalties, valid, kept, rate, halted_rollouts = run(
        rollout_key, jnp.take(dataset.observations, rows, axis=0))
    penalties, valid, kept = map(np.asarray, (penalties, valid, kept))
    threshold = float(state.threshold)
    first_step = penalties[0][valid[0]]
    return {"horizon": horizon, "starts": starts,
            "disagreement_unhalted": _summary(penalties[valid], threshold),
            "disagreement_first_step": _summary(first_step, threshold),
            "halt_rate": float(rate), "halted_rollouts": float(halted_rollouts),
            "mean_length_unhalted": float(valid.sum() / starts),
            "mean_length_halted": float(kept.sum() / starts)}


def markdown(result: dict) -> str:
    p = result["provenance"]
    lines = [f"# MOReL halting on {result['task']} ({result['data_profile']} data, "
             f"the {result['run_profile']} run profile's model settings)", "",
             f"- commit {p['commit']}{' (dirty tree)' if p['dirty'] else ''}; data "
             f"`{p['data_file']}` sha256 {p['data_sha256']}; {p['device']}; jax "
             f"{p['versions']['jax']}, flax {p['versions']['flax']}, numpy "
             f"{p['versions']['numpy']}, python {p['versions']['python']}; seed "
             f"{result['seed']}; {p['wall_s']:.0f} s ({p['load']})",
             f"- dataset: {result['dataset_rows']} rows; ensemble: {result['ensemble']}",
             f"- threshold: max data disagreement {result['data_max']:.4g} / "
             f"pessimism_coef {result['pessimism_coef']} = **{result['threshold']:.4g}**; "
             f"data disagreement median {result['data']['quantiles']['0.5']:.4g}, 99% "
             f"{result['data']['quantiles']['0.99']:.4g}, share above the threshold "
             f"{result['data']['share_above_threshold']:.4f}", "",
             "| policy | horizon | disagreement median / 99% / max (unhalted steps) | steps "
             "above threshold | halt rate (kept steps) | halted rollouts | mean length "
             "unhalted -> halted |", "|---|---|---|---|---|---|---|"]
    for name, rows in result["policies"].items():
        for r in rows:
            d = r["disagreement_unhalted"]
            lines.append(
                f"| {name} | {r['horizon']} | {d['quantiles']['0.5']:.4g} / "
                f"{d['quantiles']['0.99']:.4g} / {d['max']:.4g} | "
                f"{d['share_above_threshold']:.4f} | {r['halt_rate']:.4f} | "
                f"{r['halted_rollouts']:.4f} | {r['mean_length_unhalted']:.2f} -> "
                f"{r['mean_length_halted']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="hopper-medium-replay")
    parser.add_argument("--data-profile", default="quick")
    # The run profile whose MOReL settings (model size, fit) are used; --model-profile: its
    # older name.
    parser.add_argument("--run-profile", "--model-profile", dest="run_profile", default="quick",
                        choices=sorted(profiles.RUN_PROFILES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bc-updates", type=int, default=5_000)
    parser.add_argument("--starts", type=int, default=5_000)
    parser.add_argument("--horizons", type=int, nargs="+", default=[5, 50])
    parser.add_argument("--out", default="benchmarks/results/morel_halting")
    args = parser.parse_args(argv)
    began = time.perf_counter()

    task = get_task(args.task)
    spec = get_env_spec(task.env)
    generated = task_generated_file(task, args.data_profile)
    data_file, _ = find_task_dataset(task, generated)
    dataset = load_task_dataset(task, generated)
    profile = profiles.RUN_PROFILES[args.run_profile]
    overrides = plan.config_overrides(morel.ALGORITHM, profile,
                                      profile.train_for("morel"), {})
    config = morel.ALGORITHM.make_config(task.name, overrides)
    algorithm = morel.ALGORITHM.make(config, spec)
    key = jax.random.PRNGKey(args.seed)
    init_key, bc_key, rollout_key = jax.random.split(key, 3)
    state = jax.jit(algorithm.init)(init_key, dataset)
    threshold = float(state.threshold)
    on_data = data_disagreement(state.model, dataset)

    cloner, bc_state = train_bc(dataset, spec, args.bc_updates, bc_key)

    def bc_mean(key, obs):
        return cloner.act(bc_state, obs, key, True)

    def bc_noisy(key, obs):
        noise = NPG_START_STD * jax.random.normal(key, obs.shape[:-1] + (spec.act_dim,))
        return jnp.clip(cloner.act(bc_state, obs, key, True) + noise, -1.0, 1.0)

    policies = {"BC mean": bc_mean, f"BC + N(0, {NPG_START_STD:.2f}^2)": bc_noisy,
                "MOReL SAC at init": algorithm.agent.policy_fn(state.agent)}
    measured = {}
    for i, (name, policy_fn) in enumerate(policies.items()):
        measured[name] = [measure_policy(state, spec, dataset, policy_fn,
                                         jax.random.fold_in(rollout_key, i), args.starts, h)
                          for h in args.horizons]
        print(name, json.dumps([(r["horizon"], r["halt_rate"], r["halted_rollouts"])
                                for r in measured[name]]), flush=True)

    dyn = config.dynamics
    result = {
        "task": task.name, "data_profile": args.data_profile,
        "run_profile": args.run_profile, "seed": args.seed,
        "dataset_rows": int(dataset.size),
        "ensemble": f"{dyn.members} members ({dyn.elites} elites), hidden {dyn.hidden_dims}, "
                    f"max_epochs {dyn.max_epochs}",
        "pessimism_coef": config.pessimism_coef, "data_max": float(on_data.max()),
        "threshold": threshold, "data": _summary(on_data, threshold),
        "bc_updates": args.bc_updates, "policies": measured,
        "provenance": {
            "commit": _git("rev-parse", "--short", "HEAD"),
            "dirty": bool(_git("status", "--porcelain", "--", "offrl_jax", "benchmarks")),
            "data_file": str(data_file), "data_sha256": _sha256(Path(data_file)),
            "versions": {"jax": jax.__version__, "flax": flax.__version__,
                         "numpy": np.__version__, "python": platform.python_version()},
            "device": device_name(), "load": load_note(),
            "wall_s": time.perf_counter() - began},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "morel_halting.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "morel_halting.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
