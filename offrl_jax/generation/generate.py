"""Generate the five D4RL-style datasets of one environment with the D4RL recipe.

Two sources of behaviour policies:

- **shipped** (the default wherever ``offrl_jax/generation/policies/<env>/`` exists, see
  :mod:`offrl_jax.policies`): no training. medium and expert are the shipped
  snapshots, sampled stochastically; medium-replay replays the shipped schedule (uniform
  warm-up, then each training snapshot for its share of transitions); random is uniform
  actions; medium-expert is medium then expert. Sizes: the profile's ``dataset_size`` for
  random/medium/expert, and the schedule scaled by ``dataset_size / 1M`` for medium-replay, so
  the quick profile's files are smaller samples of the same distributions as the full ones.
  Datasets carry the manifest's versioned id (``hopper-medium-gen1``).
- **trained** (environments without shipped policies, and the ``tiny`` test profile): a
  behaviour SAC run of the profile's budget, trained here (:mod:`.behaviour`); medium is its
  first checkpoint reaching 1/3 of its best, expert its best, medium-replay its replay buffer
  up to medium. Their ids say ``trained-<profile>``: not comparable across machines.

Files are written atomically with their recipe, versions, policy hashes, statistics
(:func:`dataset_statistics`) and a checksum of the arrays. A later call reuses a file whose
recipe matches and whose arrays still match the checksum; ``force=True`` regenerates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from tqdm.auto import tqdm

from offrl_jax import policies
from offrl_jax.data import (
    DatasetError,
    cache_dir,
    episode_lengths,
    episode_returns,
    generated_dataset_path,
    read_d4rl_hdf5,
    read_d4rl_metadata,
    write_d4rl_hdf5,
)
from offrl_jax.data.validate import derive_episode_ids
from offrl_jax.generation.behaviour import TRANSITION_KEYS, BehaviourRun, train_behaviour
from offrl_jax.generation.collect import collect_dataset, concatenate_datasets
from offrl_jax.generation.data_profiles import DataProfile, get_data_profile
from offrl_jax.generation.versions import data_source, data_version
from offrl_jax.results.provenance import library_versions
from offrl_jax.tasks import DATASET_KINDS, get_env_spec, normalized_score

GENERATOR_VERSION = 2
_CHECKSUM_KEYS = TRANSITION_KEYS + ("episode_ids",)


def arrays_checksum(arrays) -> str:
    digest = hashlib.sha256()
    for key in _CHECKSUM_KEYS:
        value = np.ascontiguousarray(np.asarray(arrays[key], np.float32))
        digest.update(key.encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


FULL_SIZE = 1_000_000  # D4RL's transitions per random / medium / expert file


def dataset_id(env: str, kind: str, version: str) -> str:
    """``hopper-medium-gen1``: never D4RL's ``-v2`` names."""
    return f"{env}-{kind}-{version}"


def _recipe(env: str, kind: str, profile: DataProfile, seed: int) -> dict:
    recipe = {"generator_version": GENERATOR_VERSION, "env": env,
              "gym_id": get_env_spec(env).gym_id, "kind": kind, "profile": profile.name,
              "seed": seed, "dataset_size": profile.dataset_size}
    if data_source(env, profile) == "shipped":
        manifest = policies.load_manifest(env)
        files = {"medium": [manifest["policies"]["medium"]["sha256"]],
                 "expert": [manifest["policies"]["expert"]["sha256"]],
                 "medium-replay": [[p["policy"]["sha256"] if p["policy"] else None,
                                    p["transitions"]]
                                   for p in manifest["medium_replay"]["pieces"]]}
        files["medium-expert"] = files["medium"] + files["expert"]
        return {**recipe, "source": "shipped", "data_version": manifest["data_version"],
                "policy_sha256": files.get(kind, [])}
    return {**recipe, "source": "trained", "data_version": f"trained-{profile.name}",
            "behaviour_steps": profile.steps_for(env), "sac": repr(profile.sac),
            "batch_size": profile.batch_size}


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


def _episodes(env: str, arrays) -> tuple[np.ndarray, np.ndarray]:
    """``(normalized returns, lengths)`` of every episode of ``arrays`` (see
    :func:`dataset_statistics`), ``(episodes,)`` each."""
    if isinstance(arrays, Mapping):
        ids = arrays.get("episode_ids")
        if ids is None:
            ids = derive_episode_ids(arrays["terminals"], arrays["timeouts"])
        arrays = SimpleNamespace(rewards=arrays["rewards"], episode_ids=ids)
    return normalized_score(env, episode_returns(arrays)), episode_lengths(arrays)


def dataset_statistics(env: str, arrays) -> dict:
    """Transitions, episodes, mean +- std of the episodes' normalized returns, mean +- std of
    their lengths (every episode counts, including one cut by the size budget). ``arrays``: a
    :class:`Dataset` or a mapping with ``rewards`` and ``episode_ids`` (or the flags they come
    from). These are what a generated file's metadata records and what the reference check
    compares: a key added here changes every regenerated file's bytes (their sha256)."""
    normalized, lengths = _episodes(env, arrays)
    return {"transitions": int(lengths.sum()), "episodes": int(lengths.size),
            "normalized_mean": float(normalized.mean()), "normalized_std": float(normalized.std()),
            "length_mean": float(lengths.mean()), "length_std": float(lengths.std())}


# The best tenth of the episodes, as 10%BC keeps them (offrl_jax.algorithms.bc10), and the
# normalized return above which an episode counts as expert-level.
TOP_FRACTION = 0.1
EXPERT_LEVEL = 90.0


def return_statistics(env: str, arrays) -> dict:
    """How good the dataset's best episodes are, normalized as :func:`dataset_statistics`
    (every episode counts): ``normalized_max``, the best episode's return;
    ``normalized_top_decile_mean``, the mean return of the best ``max(1, floor(0.1 x
    episodes))`` episodes (the ones 10%BC clones); ``share_above_90``, the fraction of
    transitions that belong to episodes scoring above 90. Computed on demand (``offrl data
    stats``), not stored in generated files."""
    normalized, lengths = _episodes(env, arrays)
    best = np.sort(normalized)[::-1][:max(1, int(TOP_FRACTION * normalized.size))]
    return {"normalized_max": float(normalized.max()),
            "normalized_top_decile_mean": float(best.mean()),
            "share_above_90": float(lengths[normalized > EXPERT_LEVEL].sum() / lengths.sum())}


def compare_statistics(found: dict, reference: dict, sigmas: float = 4.0) -> list[str]:
    """Differences between two datasets' statistics beyond what sampling explains.

    Transitions must match exactly. The mean normalized return and the mean length of two
    independent samples of episodes from the same policies differ by a normal variable with
    standard error ``sqrt(s1^2/n1 + s2^2/n2)``; a difference over ``sigmas`` (4) standard errors
    happens by chance about once in 16,000 comparisons. A floor of 0.05 (normalized points,
    steps) absorbs float summation differences when the spread is zero.
    """
    problems = []
    if found["transitions"] != reference["transitions"]:
        problems.append(f"transitions: expected {reference['transitions']}, "
                        f"found {found['transitions']}")
    for mean, std in (("normalized_mean", "normalized_std"), ("length_mean", "length_std")):
        error = np.sqrt(found[std] ** 2 / found["episodes"]
                        + reference[std] ** 2 / reference["episodes"])
        limit = max(sigmas * error, 0.05)
        if abs(found[mean] - reference[mean]) > limit:
            problems.append(f"{mean}: expected {reference[mean]:.2f} +- {limit:.2f} "
                            f"({sigmas:g} standard errors), found {found[mean]:.2f}")
    return problems


def reference_check_text(reference: dict | None, problems: list[str]) -> str:
    """The reference check's outcome in words: ``no reference``, ``matches`` or the problems
    :func:`compare_statistics` found."""
    return "no reference" if reference is None else "; ".join(problems) or "matches"


def reference_statistics(env: str, kind: str, profile: DataProfile) -> dict | None:
    """The shipped reference statistics of this dataset (None when none were recorded)."""
    if data_source(env, profile) != "shipped":
        return None
    return policies.load_manifest(env).get("reference_stats", {}).get(profile.name, {}).get(kind)


def record_reference_statistics(env: str, profile_name: str, paths: dict) -> Path:
    """Write the statistics of generated files (``{kind: path}``, seed 0) into the shipped
    manifest as the reference other machines are checked against (maintainers only)."""
    manifest = policies.load_manifest(env)
    recorded = {}
    for kind, path in paths.items():
        meta = read_d4rl_metadata(path)
        if meta.get("recipe", {}).get("seed") != 0 or meta["recipe"].get("source") != "shipped":
            raise ValueError(f"{path}: reference statistics come from seed-0 data made from the "
                             f"shipped policies; found recipe {meta.get('recipe')}")
        recorded[kind] = meta["statistics"]
    manifest.setdefault("reference_stats", {}).setdefault(profile_name, {}).update(recorded)
    return policies.write_manifest(env, manifest)


def _actor_policy_state(env: str, manifest: dict, actor_params, cache: dict):
    """A SAC state acting with ``actor_params``; one state is initialised per call of
    :func:`generate_env_datasets` (in ``cache``) and only its actor swapped afterwards."""
    from offrl_jax.generation.export import actor_state

    state = actor_state(env, actor_params, manifest["training"]["hidden_dims"],
                        cache.get("template"))
    cache.setdefault("template", state)
    return state


def _actor_act(env: str, manifest: dict):
    """The ``act`` of the shipped policies' agent (one instance per env and size)."""
    from offrl_jax.generation.export import actor_agent

    return actor_agent(env, tuple(manifest["training"]["hidden_dims"])).act


def _shipped_collect(env: str, kind: str, profile: DataProfile, seed: int,
                     progress: bool, cache: dict) -> tuple[dict, str]:
    """Arrays and a description of one dataset made from the shipped policies."""
    manifest = policies.load_manifest(env)
    root = policies.policy_dir(env)

    def role_data(role: str) -> dict:
        if role not in cache:
            params = policies.load_role(env, role, manifest=manifest)
            cache[role] = collect_dataset(
                env, profile.dataset_size, profile.collect_envs,
                seed * 100 + (2 if role == "medium" else 3), act_fn=_actor_act(env, manifest),
                policy_state=_actor_policy_state(env, manifest, params, cache),
                progress=progress,
                desc=f"{env}-{role}")
        return cache[role]

    if kind in ("medium", "expert"):
        entry = manifest["policies"][kind]
        return role_data(kind), (f"shipped {kind} policy {entry['file']} (env step "
                                 f"{entry['env_steps']}), actions sampled")
    if kind == "medium-expert":
        return (concatenate_datasets(role_data("medium"), role_data("expert")),
                "shipped medium then expert data, concatenated")
    # medium-replay: each piece of the schedule, scaled, collected by one environment as the
    # training run collected it (several environments would favour short episodes).
    scale = (profile.replay_scale if profile.replay_scale is not None
             else profile.dataset_size / FULL_SIZE)
    parts = []
    pieces = manifest["medium_replay"]["pieces"]
    bar = tqdm(total=len(pieces), desc=f"{env}-medium-replay", unit="piece",
               disable=not progress)
    for i, piece in enumerate(pieces):
        count = max(1, round(piece["transitions"] * scale))
        if piece["policy"] is None:
            parts.append(collect_dataset(env, count, 1, seed * 100 + 50_000 + i,
                                         progress=False))
        else:
            params = policies.load_actor(root / piece["policy"]["file"],
                                         piece["policy"]["sha256"])
            parts.append(collect_dataset(
                env, count, 1, seed * 100 + 50_000 + i, act_fn=_actor_act(env, manifest),
                policy_state=_actor_policy_state(env, manifest, params, cache), progress=False))
        bar.update(1)
    bar.close()
    return (concatenate_datasets(*parts),
            f"shipped medium-replay schedule: {len(pieces)} pieces (uniform warm-up, then "
            f"training snapshots every {manifest['medium_replay']['replay_every']} env steps), "
            f"scaled by {scale:g}")


def generate_env_datasets(env: str, profile: str | DataProfile = "quick", seed: int = 0,
                          kinds=DATASET_KINDS, out_dir: str | Path | None = None,
                          work_dir: str | Path | None = None, force: bool = False,
                          progress: bool = True, check: bool = True) -> dict[str, Path]:
    """Make (or reuse) the datasets of ``env``; returns ``{kind: path}``.

    ``out_dir`` defaults to where :func:`offrl_jax.data.load_task_dataset` looks for generated
    data; ``work_dir`` (behaviour training, trained source only) defaults to the cache
    directory. With ``check``, a dataset made from shipped policies whose statistics differ
    from the shipped reference statistics beyond sampling noise is an error.
    """
    profile = get_data_profile(profile) if isinstance(profile, str) else profile
    for kind in kinds:
        if kind not in DATASET_KINDS:
            raise KeyError(f"unknown dataset kind {kind!r}; valid kinds: {DATASET_KINDS}")
    version = data_version(env, profile)

    def target(kind: str) -> Path:
        if out_dir is None:
            return generated_dataset_path(env, kind, profile.name, version)
        return Path(out_dir) / f"{dataset_id(env, kind, version)}.hdf5"

    paths = {k: target(k) for k in kinds}
    todo = [k for k in kinds if force or not is_complete(paths[k], _recipe(env, k, profile,
                                                                           seed))]
    if not todo:
        return paths
    source = data_source(env, profile)
    if source == "shipped":
        cache: dict = {}

        def make(kind):
            return _shipped_collect(env, kind, profile, seed, progress, cache) + ({},)
    else:
        make = _trained_maker(env, profile, seed, todo, work_dir, progress)
    for kind in todo:
        if kind == "random":
            arrays = collect_dataset(env, profile.dataset_size, profile.collect_envs,
                                     seed * 100 + 1, progress=progress, desc=f"{env}-random")
            policy, behaviour = "uniform random actions", {}
        else:
            arrays, policy, behaviour = make(kind)
        if "episode_ids" not in arrays:
            arrays = {**arrays, "episode_ids": derive_episode_ids(arrays["terminals"],
                                                                  arrays["timeouts"])}
        stats = dataset_statistics(env, arrays)
        reference = reference_statistics(env, kind, profile)  # any seed: same statistics
        problems = compare_statistics(stats, reference) if reference else []
        if check and problems:
            raise DatasetError(
                f"{dataset_id(env, kind, version)} ({profile.name} profile) regenerated from the "
                f"shipped policies differs from the shipped reference statistics "
                f"({policies.policy_dir(env) / 'manifest.json'}, reference_stats."
                f"{profile.name}.{kind}): " + "; ".join(problems)
                + ". Library versions or the simulator may differ from the reference run's "
                  "(see the manifest's training.versions).")
        meta = {
            "recipe": _recipe(env, kind, profile, seed),
            "dataset_id": dataset_id(env, kind, version),
            "data_version": version,
            "versions": library_versions(),
            "policy": policy,
            "behaviour": behaviour,
            "statistics": stats,
            "reference_check": (reference_check_text(reference, problems)
                                if profile.metadata_records_check else "no reference"),
            "checksum": arrays_checksum(arrays),
        }
        write_d4rl_hdf5(paths[kind], arrays, metadata=meta)
    return paths


def _trained_maker(env, profile, seed, todo, work_dir, progress):
    """``make(kind) -> (arrays, description, behaviour info)`` for data trained on this machine."""
    if work_dir is None:
        work_dir = cache_dir() / "behaviour" / profile.name / f"{env}-seed{seed}"
    run: BehaviourRun | None = None
    if any(k != "random" for k in todo):
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
                seed * 100 + (2 if name == "medium" else 3), act_fn=run.agent.act,
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

    def make(kind):
        if kind == "medium-replay":
            arrays = {k: v[:medium_ckpt.env_steps] for k, v in run.replay.items()}
            return arrays, "behaviour SAC replay buffer up to the medium checkpoint", behaviour
        if kind == "medium-expert":
            return (concatenate_datasets(policy_dataset("medium"), policy_dataset("expert")),
                    "medium then expert data, concatenated", behaviour)
        return (policy_dataset(kind), f"{kind} SAC checkpoint, actions sampled", behaviour)

    return make
