"""Choosing and exporting the behaviour policies to ship, from a behaviour training run.

``offrl data export-behaviour --env ENV --work-dir DIR`` reads the run's checkpoints (one every
evaluation, the saved state of :func:`offrl_jax.generation.behaviour.train_behaviour`) and
writes ``offrl_jax/generation/policies/<env>/`` (layout in :mod:`offrl_jax.policies`):

- expert: the ``candidates`` checkpoints with the best training evaluations are re-evaluated
  with ``eval_episodes`` episodes (actions sampled, as the data is collected) and the best is
  kept. D4RL's expert is the final policy of a 1M-step run; SAC's last checkpoint can sit in a
  dip, so the best late one is taken (our choice).
- medium: the first ``2 * candidates`` checkpoints whose training evaluation lies within 50% of
  D4RL's medium mean (:mod:`offrl_jax.generation.reference`) are re-evaluated and the one
  closest to D4RL's mean is kept. D4RL's rule ("about 1/3 of the expert") gives medium/expert
  ratios of 0.40 to 0.58 in its v2 files; matching the published mean keeps scores comparable
  (our choice).
- medium-replay schedule: what the training run collected up to the medium checkpoint, as a
  sequence of pieces: ``start_steps`` uniform-random transitions (SAC's warm-up), then, for each
  interval between snapshots (every ``replay_every`` env steps), half collected by the snapshot
  that starts it and half by the one that ends it (:func:`replay_schedule`). The replay buffer
  itself is too large to ship; the snapshots regenerate its mixture of policies.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from offrl_jax import policies
from offrl_jax.evaluation import Evaluator
from offrl_jax.generation.reference import d4rl_stats
from offrl_jax.parts import sac
from offrl_jax.tasks import get_env_spec, normalized_score


def read_behaviour_run(work_dir: str | Path) -> tuple[dict, list[dict]]:
    """``(recipe, checkpoints)`` of a behaviour run directory; each checkpoint is a dict with
    ``env_steps``, ``mean_return`` (training evaluation) and ``actor`` (parameters)."""
    from offrl_jax.generation.behaviour import _RunFiles

    files = _RunFiles(Path(work_dir))
    saved = files.load_state()
    if saved is None:
        raise FileNotFoundError(f"{files.state_path}: no behaviour run state (run `offrl data "
                                f"train-behaviour` with this --work-dir first)")
    checkpoints = [{"env_steps": int(c["env_steps"]), "mean_return": float(c["mean_return"]),
                    "actor": c["actor"]}
                   for c in sorted(saved["checkpoints"], key=lambda c: int(c["env_steps"]))]
    return saved["recipe"], checkpoints


@functools.cache
def actor_agent(env: str, hidden_dims: tuple[int, ...] = (256, 256)) -> sac.Agent:
    """The SAC agent of ``env``'s behaviour policies: one instance per (env, hidden_dims), so
    programs compiled around its ``act`` are compiled once."""
    spec = get_env_spec(env)
    return sac.Agent(sac.Config(hidden_dims=tuple(hidden_dims)), spec.obs_dim, spec.act_dim)


def actor_state(env: str, actor_params, hidden_dims=(256, 256),
                template: sac.State | None = None) -> sac.State:
    """A SAC state whose actor is ``actor_params`` (critics unused), for
    ``actor_agent(env, hidden_dims).act``; pass a ``template`` (an earlier result) to swap the
    actor without initialising another state."""
    if template is None:
        template = actor_agent(env, tuple(hidden_dims)).init(jax.random.PRNGKey(0))
    params = jax.tree_util.tree_map(jnp.asarray, actor_params)
    expected = jax.tree_util.tree_structure(template.actor_params)
    if jax.tree_util.tree_structure(params) != expected:
        raise policies.PolicyFileError(
            f"{env}: actor parameters have structure {jax.tree_util.tree_structure(params)}, "
            f"expected {expected} (hidden_dims={tuple(hidden_dims)})")
    return template.replace(actor_params=params)


def actor_evaluator(env: str, episodes: int, hidden_dims=(256, 256)) -> Evaluator:
    """One evaluator (compiled once) for any number of actors of ``env``, actions sampled."""
    return Evaluator(env, actor_agent(env, tuple(hidden_dims)).act, num_episodes=episodes,
                     deterministic=False)


def evaluate_actor(env: str, actor_params, episodes: int, seed: int,
                   hidden_dims=(256, 256), evaluator: Evaluator | None = None,
                   template: sac.State | None = None) -> dict:
    """Sampled-action returns of one actor over ``episodes`` episodes: the summary stats."""
    state = actor_state(env, actor_params, hidden_dims, template)
    evaluator = evaluator or actor_evaluator(env, episodes, hidden_dims)
    result = evaluator(jax.tree_util.tree_map(lambda x: x[None], state),
                       jax.random.PRNGKey(seed))
    returns, normalized = result.returns[0], result.normalized[0]
    return {"episodes": int(episodes), "seed": int(seed),
            "return_mean": float(returns.mean()), "return_std": float(returns.std()),
            "normalized_mean": float(normalized.mean()),
            "normalized_std": float(normalized.std()),
            "length_mean": float(result.lengths[0].mean())}


def choose_policies(env: str, checkpoints: list[dict], eval_episodes: int = 50,
                    candidates: int = 5, seed: int = 1000, hidden_dims=(256, 256),
                    medium_target: float | None = None, log=print) -> dict:
    """``{"medium": (checkpoint, eval), "expert": (checkpoint, eval)}`` by the module's rules;
    ``medium_target`` (normalized) defaults to D4RL v2's medium mean."""
    if medium_target is None:
        reference = d4rl_stats(env, "medium")
        if reference is None:
            raise KeyError(f"no D4RL medium target for {env!r}; pass medium_target")
        medium_target = reference.normalized_mean
    norm = [float(normalized_score(env, c["mean_return"])) for c in checkpoints]
    evaluator = actor_evaluator(env, eval_episodes, hidden_dims)
    template = actor_state(env, checkpoints[0]["actor"], hidden_dims)

    def evaluated(indices):
        out = []
        for i in indices:
            stats = evaluate_actor(env, checkpoints[i]["actor"], eval_episodes, seed,
                                   hidden_dims, evaluator, template)
            log(f"  step {checkpoints[i]['env_steps']}: training eval {norm[i]:.1f}, "
                f"re-evaluated {stats['normalized_mean']:.1f} +- {stats['normalized_std']:.1f}")
            out.append((i, stats))
        return out

    late = range(len(checkpoints) // 2, len(checkpoints))
    best = sorted(late, key=lambda i: -norm[i])[:candidates]
    log(f"{env} expert candidates:")
    expert_i, expert_eval = max(evaluated(best), key=lambda x: x[1]["normalized_mean"])
    target = medium_target
    # Training evaluations are short (10 episodes) and a medium hopper's returns are bimodal
    # (falls or not), so a broad band of early checkpoints is re-evaluated.
    near = [i for i in range(expert_i) if 0.5 * target <= norm[i] <= 1.5 * target]
    if not near:
        raise RuntimeError(f"{env}: no checkpoint before the expert evaluates within 50% of "
                           f"D4RL's medium mean {target}; training evaluations: "
                           f"{[round(x, 1) for x in norm]}")
    log(f"{env} medium candidates (D4RL medium {target}):")
    medium_i, medium_eval = min(evaluated(near[:2 * candidates]),
                                key=lambda x: abs(x[1]["normalized_mean"] - target))
    return {"medium": (checkpoints[medium_i], medium_eval),
            "expert": (checkpoints[expert_i], expert_eval)}


def replay_schedule(checkpoints: list[dict], medium_steps: int, start_steps: int,
                    replay_every: int) -> list[dict]:
    """Pieces of the medium-replay data: uniform actions for ``start_steps``, then, for each
    interval of ``replay_every`` env steps between snapshots, its first half collected by the
    snapshot that starts it and its second half by the one that ends it.

    During training the policy improved over each interval; the two halves follow it (a
    trapezoid rule). Only the start snapshot would lag behind it: on hopper it regenerated a
    replay mean of 10.1 where the training run's own replay had 11.8 (normalized)."""
    by_step = {c["env_steps"]: c for c in checkpoints}
    pieces = [{"policy": None, "env_steps": 0, "transitions": start_steps}]
    bounds = list(range(start_steps, medium_steps, replay_every)) + [medium_steps]
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        for step in (start, end):
            if step not in by_step:
                raise KeyError(f"no checkpoint at env step {step}; checkpoints every "
                               f"{checkpoints[1]['env_steps'] - checkpoints[0]['env_steps']} "
                               f"steps")
        middle = start + (end - start) // 2
        pieces.append({"policy": by_step[start], "env_steps": start,
                       "transitions": middle - start})
        pieces.append({"policy": by_step[end], "env_steps": middle, "transitions": end - middle})
    return pieces


def plot_learning_curve(env: str, checkpoints: list[dict], chosen: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([c["env_steps"] for c in checkpoints])
    norm = normalized_score(env, [c["mean_return"] for c in checkpoints])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, norm, lw=1, label="training evaluation (sampled actions)")
    for role, (ckpt, stats) in chosen.items():
        ax.scatter([ckpt["env_steps"]], [stats["normalized_mean"]], zorder=3,
                   label=f"{role}: {stats['normalized_mean']:.1f} ({stats['episodes']} episodes)")
        reference = d4rl_stats(env, role)
        if reference is not None:
            ax.axhline(reference.normalized_mean, ls=":", lw=0.8, color="gray")
    ax.set_xlabel("env steps")
    ax.set_ylabel("normalized return")
    ax.set_title(f"{env}: behaviour SAC\n(dotted: D4RL v2 medium and expert dataset means)",
                 fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def export_behaviour(env: str, work_dir: str | Path, root: str | Path | None = None,
                     replay_every: int = 10_000, eval_episodes: int = 50, candidates: int = 5,
                     data_version: str = "gen1", medium_target: float | None = None,
                     log=print) -> Path:
    """Choose medium, expert and the medium-replay snapshots of a finished (or running)
    behaviour run and write them with their manifest; returns the manifest's path."""
    recipe, checkpoints = read_behaviour_run(work_dir)
    if recipe["env"] != env:
        raise ValueError(f"{work_dir}: run is for env {recipe['env']!r}, not {env!r}")
    from offrl_jax.generation.data_profiles import get_data_profile

    profile = get_data_profile(recipe["profile"])
    hidden_dims = list(profile.sac.hidden_dims)
    chosen = choose_policies(env, checkpoints, eval_episodes, candidates,
                             hidden_dims=hidden_dims, medium_target=medium_target, log=log)
    out = policies.policy_dir(env, root)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("actor_*.npz"):
        stale.unlink()

    written: dict[int, dict] = {}

    def write(ckpt) -> dict:
        """Each snapshot is written once, however many pieces and roles use it."""
        step = ckpt["env_steps"]
        if step not in written:
            name = f"actor_{step:07d}.npz"
            written[step] = {"file": name, "sha256": policies.save_actor(out / name, ckpt["actor"]),
                             "env_steps": step, "training_eval_return": ckpt["mean_return"]}
        return dict(written[step])

    roles = {role: {**write(ckpt), "eval": stats} for role, (ckpt, stats) in chosen.items()}
    medium_steps = chosen["medium"][0]["env_steps"]
    pieces = replay_schedule(checkpoints, medium_steps, profile.start_steps, replay_every)
    schedule = [{"policy": None if p["policy"] is None else write(p["policy"]),
                 "env_steps": p["env_steps"], "transitions": p["transitions"]} for p in pieces]
    from offrl_jax.results.provenance import device_description, git_commit, library_versions

    commit, dirty = git_commit()
    manifest = {
        "format": policies.MANIFEST_FORMAT,
        "env": env,
        "gym_id": get_env_spec(env).gym_id,
        "data_version": data_version,
        "training": {
            "algorithm": "SAC (offrl_jax.parts.sac), actions sampled when collecting",
            "recipe": recipe, "start_steps": profile.start_steps,
            "hidden_dims": hidden_dims,
            "env_steps": checkpoints[-1]["env_steps"],
            "eval_episodes_per_checkpoint": profile.eval_episodes,
            "versions": library_versions(), "commit": commit,
            "code_modified_since_commit": dirty, "device": device_description(),
        },
        "learning_curve": [[c["env_steps"], round(c["mean_return"], 3)] for c in checkpoints],
        "policies": roles,
        "medium_replay": {"replay_every": replay_every, "pieces": schedule},
        "reference_stats": {},
    }
    plot_learning_curve(env, checkpoints, chosen, out / "learning_curve.png")
    return policies.write_manifest(env, manifest, root)
