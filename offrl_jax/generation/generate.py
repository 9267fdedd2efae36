"""Generate the five D4RL-style datasets of one environment with the D4RL recipe.

- random: uniform actions;
- medium: the first behaviour checkpoint whose return reaches 1/3 of the expert's, sampled
  stochastically;
- medium-replay: the behaviour run's replay buffer up to that checkpoint;
- expert: the best evaluated behaviour checkpoint (see ``BehaviourRun.expert_checkpoint``),
  sampled stochastically;
- medium-expert: medium and expert concatenated.

Files are written atomically (a half-written file never has the final name) with their recipe,
seeds, library versions, behaviour checkpoint hash and returns, and a checksum of the arrays in
their metadata. A later call reuses a file whose recipe matches and whose arrays still match the
checksum; ``force=True`` regenerates.
"""

from __future__ import annotations

import hashlib
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

from offrl_jax.algorithms import sac
from offrl_jax.data import (
    DatasetError,
    cache_dir,
    generated_dataset_path,
    read_d4rl_hdf5,
    read_d4rl_metadata,
    write_d4rl_hdf5,
)
from offrl_jax.generation.behaviour import TRANSITION_KEYS, BehaviourRun, train_behaviour
from offrl_jax.generation.collect import collect_dataset, concatenate_datasets
from offrl_jax.generation.profiles import GenerationProfile, get_profile
from offrl_jax.tasks import DATASET_KINDS, get_env_spec

GENERATOR_VERSION = 2
_CHECKSUM_KEYS = TRANSITION_KEYS + ("episode_ids",)


def arrays_checksum(arrays) -> str:
    digest = hashlib.sha256()
    for key in _CHECKSUM_KEYS:
        value = np.ascontiguousarray(np.asarray(arrays[key], np.float32))
        digest.update(key.encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    names = ("offrl_jax", "jax", "jaxlib", "flax", "optax", "mujoco", "gymnasium", "numpy")
    out = {}
    for name in names:
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


def _recipe(env: str, kind: str, profile: GenerationProfile, seed: int) -> dict:
    return {"generator_version": GENERATOR_VERSION, "env": env,
            "gym_id": get_env_spec(env).gym_id, "kind": kind, "profile": profile.name,
            "seed": seed, "dataset_size": profile.dataset_size,
            "behaviour_steps": profile.steps_for(env), "sac": repr(profile.sac)}


def is_complete(path: Path, recipe: dict) -> bool:
    """True if ``path`` holds a readable dataset of this recipe whose arrays match its checksum."""
    if not path.exists():
        return False
    try:
        meta = read_d4rl_metadata(path)
        if meta.get("recipe") != recipe:
            return False
        dataset = read_d4rl_hdf5(path, env=recipe["env"])
    except (DatasetError, OSError, KeyError, ValueError):
        return False
    return meta.get("checksum") == arrays_checksum(dataset.to_numpy())


def _episode_returns(arrays) -> np.ndarray:
    ids = arrays["episode_ids"]
    return np.bincount(ids - ids.min(), weights=arrays["rewards"])


def generate_env_datasets(env: str, profile: str | GenerationProfile = "quick", seed: int = 0,
                          kinds=DATASET_KINDS, out_dir: str | Path | None = None,
                          work_dir: str | Path | None = None, force: bool = False,
                          progress: bool = True) -> dict[str, Path]:
    """Make (or reuse) the datasets of ``env``; returns ``{kind: path}``.

    ``out_dir`` defaults to where :func:`offrl_jax.data.load_task_dataset` looks for generated
    data; ``work_dir`` (behaviour training, resumable) defaults to the cache directory.
    """
    profile = get_profile(profile) if isinstance(profile, str) else profile
    for kind in kinds:
        if kind not in DATASET_KINDS:
            raise KeyError(f"unknown dataset kind {kind!r}; valid kinds: {DATASET_KINDS}")

    def target(kind: str) -> Path:
        if out_dir is None:
            return generated_dataset_path(env, kind, profile.name)
        return Path(out_dir) / f"{env}-{kind}.hdf5"

    todo = [k for k in kinds if force or not is_complete(target(k), _recipe(env, k, profile,
                                                                            seed))]
    paths = {k: target(k) for k in kinds}
    if not todo:
        return paths
    run: BehaviourRun | None = None
    if any(k != "random" for k in todo):
        if work_dir is None:
            work_dir = cache_dir() / "behaviour" / profile.name / f"{env}-seed{seed}"
        run = train_behaviour(env, profile, seed, work_dir, progress=progress)

    collected: dict[str, dict] = {}

    def policy_dataset(name: str) -> dict:
        """The medium or expert policy's sampled data, collected once for both uses."""
        if name not in collected:
            checkpoint = (run.medium_checkpoint() if name == "medium"
                          else run.expert_checkpoint())
            state = run.state.replace(actor_params=checkpoint.actor_params)
            collected[name] = collect_dataset(
                env, profile.dataset_size, profile.collect_envs,
                seed * 100 + (2 if name == "medium" else 3), act_fn=sac.act,
                policy_state=state, progress=progress, desc=f"{env}-{name}")
        return collected[name]

    behaviour = {}
    if run is not None:
        medium_ckpt, expert_ckpt = run.medium_checkpoint(), run.expert_checkpoint()
        behaviour = {
            "checkpoint_returns": [[c.env_steps, c.mean_return] for c in run.checkpoints],
            "medium": {"env_steps": medium_ckpt.env_steps,
                       "mean_return": medium_ckpt.mean_return,
                       "checkpoint_sha256": medium_ckpt.digest()},
            "expert": {"env_steps": expert_ckpt.env_steps,
                       "mean_return": expert_ckpt.mean_return,
                       "checkpoint_sha256": expert_ckpt.digest()},
        }
    for kind in todo:
        if kind == "random":
            arrays = collect_dataset(env, profile.dataset_size, profile.collect_envs,
                                     seed * 100 + 1, progress=progress, desc=f"{env}-random")
            policy = "uniform random actions"
        elif kind == "medium-replay":
            arrays = {k: v[:medium_ckpt.env_steps] for k, v in run.replay.items()}
            policy = "behaviour SAC replay buffer up to the medium checkpoint"
        elif kind == "medium-expert":
            arrays = concatenate_datasets(policy_dataset("medium"), policy_dataset("expert"))
            policy = "medium then expert data, concatenated"
        else:
            arrays = policy_dataset(kind)
            policy = f"{kind} SAC checkpoint, actions sampled"
        if "episode_ids" not in arrays:
            ends = np.maximum(arrays["terminals"], arrays["timeouts"]) > 0.5
            arrays = {**arrays, "episode_ids": np.concatenate(
                [[0], np.cumsum(ends)[:-1]]).astype(np.int32)}
        returns = _episode_returns(arrays)
        meta = {
            "recipe": _recipe(env, kind, profile, seed),
            "versions": _versions(),
            "policy": policy,
            "behaviour": behaviour,
            "dataset_episode_return_mean": float(returns.mean()),
            "dataset_episodes": int(returns.size),
            "checksum": arrays_checksum(arrays),
        }
        write_d4rl_hdf5(paths[kind], arrays, metadata=meta)
    return paths
