"""Online SAC training of the behaviour policies that D4RL-style datasets are collected with.

The loop alternates host collection and compiled training: each segment collects
``segment_steps`` environment steps with the current stochastic policy (uniform actions during
the first ``start_steps``), then runs as many SAC updates in one jitted ``lax.scan``. Every
``eval_every_segments`` segments the policy is evaluated (stochastic actions, as the data will be
collected) and kept as a checkpoint with its return.

Every segment starts with a fresh episode whose reset seed depends only on (seed, segment): an
episode still running at a segment end is closed there as a time-out. This is what makes an
interrupted run resume bit-identically from its last saved checkpoint: the saved state (SAC
state, policy checkpoints, segment index) plus the append-only replay segments determine the
rest of the run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import flax.serialization
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from offrl_jax import pytrees
from offrl_jax.evaluation import Evaluator
from offrl_jax.files import atomic_output
from offrl_jax.generation.data_profiles import DataProfile, get_data_profile
from offrl_jax.parts import sac
from offrl_jax.tasks import get_env_spec

TRANSITION_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals",
                   "timeouts")


@flax.struct.dataclass
class _Replay:
    """Device replay buffer of fixed capacity; only rows below the filled size are sampled."""

    observations: jax.Array
    actions: jax.Array
    rewards: jax.Array
    next_observations: jax.Array
    terminals: jax.Array


@dataclasses.dataclass
class PolicyCheckpoint:
    env_steps: int
    mean_return: float
    actor_params: dict

    def digest(self) -> str:
        """sha256 of the serialised actor parameters: identifies the behaviour policy."""
        return hashlib.sha256(flax.serialization.to_bytes(self.actor_params)).hexdigest()


@dataclasses.dataclass
class BehaviourRun:
    env: str
    checkpoints: list[PolicyCheckpoint]
    replay: dict[str, np.ndarray]       # every transition in collection order
    state: sac.State                 # the final SAC state
    agent: sac.Agent                 # its networks (``agent.act`` acts with a state)

    def expert_checkpoint(self) -> PolicyCheckpoint:
        """The best evaluated checkpoint (the earliest among equals).

        D4RL's expert is the final policy of a 1M-step run. With the short budgets of the
        smaller profiles SAC's last checkpoint can collapse (seen: hopper, quick profile, seed 0
        fell from a return of 453 to 5 over its last 8k steps), so the best one is used.
        """
        return max(self.checkpoints, key=lambda c: c.mean_return)

    def medium_checkpoint(self, fraction: float = 1 / 3) -> PolicyCheckpoint:
        """The first checkpoint whose return reaches ``fraction`` of the expert's."""
        best = self.expert_checkpoint().mean_return
        if best <= 0:
            raise RuntimeError(
                f"{self.env}: behaviour training reached a best return of {best:.1f} <= 0; no "
                f"medium point can be defined. Train longer (a larger profile).")
        return next(c for c in self.checkpoints if c.mean_return >= fraction * best)


def _make_train_chunk(agent: sac.Agent, num_updates: int, batch_size: int):
    def train_chunk(state, replay, size, key):
        def body(state, step_key):
            index_key, update_key = jax.random.split(step_key)
            index = jax.random.randint(index_key, (batch_size,), 0, size)
            batch = jax.tree_util.tree_map(lambda x: x[index], replay)
            return agent.update(state, batch, update_key)

        state, metrics = jax.lax.scan(body, state, jax.random.split(key, num_updates))
        return state, jax.tree_util.tree_map(jnp.mean, metrics)

    return jax.jit(train_chunk)


@jax.jit
def _insert(replay: _Replay, chunk: _Replay, start) -> _Replay:
    return jax.tree_util.tree_map(
        lambda buf, new: jax.lax.dynamic_update_slice_in_dim(buf, new, start, axis=0),
        replay, chunk)


def _segment_seed(seed: int, segment: int) -> int:
    return int(np.random.SeedSequence([seed, segment]).generate_state(1)[0])


class _RunFiles:
    """Resume files of one behaviour run. ``replay/segment_XXXXX.npz`` files are append-only
    transitions, written first; the agent and the policy snapshots are a saved tree
    (:mod:`offrl_jax.pytrees`) per commit, ``state_XXXXX/``, and ``latest.json`` (written
    atomically, last) names the current one: the commit point. A run started before the saved
    trees (one ``state.msgpack``) is read as well, so it resumes and exports."""

    def __init__(self, work_dir: Path):
        self.dir = Path(work_dir)
        self.latest_path = self.dir / "latest.json"
        self.legacy_path = self.dir / "state.msgpack"
        self.replay_dir = self.dir / "replay"

    @property
    def state_path(self) -> Path:
        """The file whose presence means the run has committed state."""
        return self.legacy_path if self.legacy_path.exists() else self.latest_path

    def segment_path(self, segment: int) -> Path:
        return self.replay_dir / f"segment_{segment:05d}.npz"

    def save_segment(self, segment: int, arrays: dict[str, np.ndarray]) -> None:
        with atomic_output(self.segment_path(segment)) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    def load_segment(self, segment: int) -> dict[str, np.ndarray]:
        with np.load(self.segment_path(segment)) as data:
            return {k: data[k] for k in TRANSITION_KEYS}

    def save_state(self, recipe: dict, next_segment: int, state: sac.State,
                   checkpoints: list[PolicyCheckpoint]) -> None:
        name = f"state_{next_segment:05d}"
        pytrees.save(self.dir / name,
                     {"sac_state": state,
                      "actors": {str(i): c.actor_params for i, c in enumerate(checkpoints)}},
                     {"recipe": recipe, "next_segment": next_segment,
                      "checkpoints": [{"env_steps": c.env_steps, "mean_return": c.mean_return}
                                      for c in checkpoints]})
        with atomic_output(self.latest_path) as tmp:
            tmp.write_text(json.dumps({"state": name}))
        self.legacy_path.unlink(missing_ok=True)
        for old in self.dir.glob("state_*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def load_state(self, template: sac.State | None = None) -> dict | None:
        """``{"recipe", "next_segment", "sac_state", "checkpoints"}`` (each checkpoint
        ``{"env_steps", "mean_return", "actor"}``, in training order), or None before the first
        commit. ``template``: a state of the run's agent (None: made from the recipe's
        profile)."""
        if self.latest_path.exists():
            path = self.dir / json.loads(self.latest_path.read_text())["state"]
            meta = pytrees.load_meta(path)
            template = template or _template_state(meta["recipe"])
            trees, _ = pytrees.load(path, {
                "sac_state": template,
                "actors": {str(i): template.actor_params
                           for i in range(len(meta["checkpoints"]))}})
            return {"recipe": meta["recipe"], "next_segment": int(meta["next_segment"]),
                    "sac_state": trees["sac_state"],
                    "checkpoints": [{**c, "actor": trees["actors"][str(i)]}
                                    for i, c in enumerate(meta["checkpoints"])]}
        if self.legacy_path.exists():
            saved = flax.serialization.msgpack_restore(self.legacy_path.read_bytes())
            recipe = json.loads(saved["recipe"])
            template = template or _template_state(recipe)
            return {"recipe": recipe, "next_segment": int(saved["next_segment"]),
                    "sac_state": flax.serialization.from_state_dict(template,
                                                                    saved["sac_state"]),
                    "checkpoints": [
                        {**c, "actor": flax.serialization.from_state_dict(
                            template.actor_params, c["actor"])}
                        for c in sorted(saved["checkpoints"].values(),
                                        key=lambda c: int(c["env_steps"]))]}
        return None


def _template_state(recipe: dict) -> sac.State:
    """A state of the agent a behaviour run's recipe trained (its profile's SAC settings)."""
    spec = get_env_spec(recipe["env"])
    agent = sac.Agent(get_data_profile(recipe["profile"]).sac, spec.obs_dim, spec.act_dim)
    return agent.init(jax.random.PRNGKey(0))


def train_behaviour(env: str, profile: DataProfile, seed: int, work_dir: str | Path,
                    progress: bool = True, stop_after_segments: int | None = None
                    ) -> BehaviourRun:
    """Train (or resume training) the behaviour SAC policy for ``env``.

    ``stop_after_segments`` ends the call early, as an interruption would (used by the tests).
    """
    spec = get_env_spec(env)
    seg_steps = profile.segment_steps
    num_segments = -(-profile.steps_for(env) // seg_steps)
    capacity = num_segments * seg_steps
    recipe = {"env": env, "profile": profile.name, "seed": seed,
              "segment_steps": seg_steps, "num_segments": num_segments,
              "sac": repr(profile.sac),
              "batch_size": profile.batch_size}
    files = _RunFiles(work_dir)

    key = jax.random.PRNGKey(seed)
    agent = sac.Agent(profile.sac, spec.obs_dim, spec.act_dim)
    state = agent.init(jax.random.fold_in(key, 0))
    checkpoints: list[PolicyCheckpoint] = []
    start_segment = 0
    saved = files.load_state(state)
    if saved is not None:
        if saved["recipe"] != recipe:
            raise ValueError(f"{files.state_path}: key 'recipe': expected {recipe}, found "
                             f"{saved['recipe']}; use another work directory or --force")
        state = saved["sac_state"]
        start_segment = saved["next_segment"]
        checkpoints = [PolicyCheckpoint(int(c["env_steps"]), float(c["mean_return"]),
                                        c["actor"])
                       for c in saved["checkpoints"]]

    host_replay = {k: [] for k in TRANSITION_KEYS}
    for segment in range(start_segment):
        for k, v in files.load_segment(segment).items():
            host_replay[k].append(v)
    replay = _Replay(
        observations=jnp.zeros((capacity, spec.obs_dim)),
        actions=jnp.zeros((capacity, spec.act_dim)),
        rewards=jnp.zeros((capacity,)),
        next_observations=jnp.zeros((capacity, spec.obs_dim)),
        terminals=jnp.zeros((capacity,)))
    if start_segment:
        filled = {k: np.concatenate(v) for k, v in host_replay.items()}
        replay = _insert(replay, _Replay(**{k: jnp.asarray(filled[k], jnp.float32)
                                            for k in _Replay.__dataclass_fields__}), 0)

    gym_env = spec.make_gym_env()
    policy = jax.jit(lambda st, obs, k: agent.act(st, obs, k, deterministic=False))
    train_chunk = _make_train_chunk(agent, seg_steps, profile.batch_size)
    evaluator = Evaluator(env, agent.act, num_episodes=profile.eval_episodes,
                          deterministic=False)
    unsaved: list[int] = []
    bar = tqdm(total=num_segments, initial=start_segment, desc=f"behaviour SAC {env}",
               unit="seg", disable=not progress)
    for segment in range(start_segment, num_segments):
        arrays = _collect_segment(gym_env, spec, state, policy, segment, seed, seg_steps,
                                  profile.start_steps, key)
        for k, v in arrays.items():
            host_replay[k].append(v)
        unsaved.append(segment)
        replay = _insert(replay, _Replay(**{k: jnp.asarray(arrays[k], jnp.float32)
                                            for k in _Replay.__dataclass_fields__}),
                         segment * seg_steps)
        env_steps = (segment + 1) * seg_steps
        metrics = {}
        if env_steps > profile.start_steps:
            state, metrics = train_chunk(state, replay, env_steps,
                                         jax.random.fold_in(jax.random.fold_in(key, 2), segment))
        last = segment == num_segments - 1
        if (segment + 1) % profile.eval_every_segments == 0 or last:
            params = jax.tree_util.tree_map(lambda x: x[None], state)
            result = evaluator(params, jax.random.fold_in(jax.random.fold_in(key, 3), segment))
            checkpoints.append(PolicyCheckpoint(env_steps, float(result.returns.mean()),
                                                state.actor_params))
            bar.set_postfix(ret=f"{checkpoints[-1].mean_return:.0f}",
                            q=f"{float(metrics.get('q_mean', 0.0)):.1f}")
            for done_segment in unsaved:
                files.save_segment(done_segment, {k: host_replay[k][done_segment]
                                                  for k in TRANSITION_KEYS})
            unsaved = []
            files.save_state(recipe, segment + 1, state, checkpoints)
        bar.update(1)
        if stop_after_segments is not None and segment + 1 - start_segment >= stop_after_segments:
            break
    bar.close()
    gym_env.close()
    return BehaviourRun(env, checkpoints, {k: np.concatenate(v) for k, v in host_replay.items()},
                        state, agent)


def _collect_segment(gym_env, spec, state, policy, segment, seed, seg_steps, start_steps,
                     key) -> dict[str, np.ndarray]:
    out = {
        "observations": np.zeros((seg_steps, spec.obs_dim), np.float32),
        "actions": np.zeros((seg_steps, spec.act_dim), np.float32),
        "rewards": np.zeros(seg_steps, np.float32),
        "next_observations": np.zeros((seg_steps, spec.obs_dim), np.float32),
        "terminals": np.zeros(seg_steps, np.float32),
        "timeouts": np.zeros(seg_steps, np.float32),
    }
    obs, _ = gym_env.reset(seed=_segment_seed(seed, segment))
    segment_key = jax.random.fold_in(jax.random.fold_in(key, 1), segment)
    episode = 0
    for t in range(seg_steps):
        global_step = segment * seg_steps + t
        if global_step < start_steps:
            # Drawn from a generator seeded per step: resumption needs no generator state.
            action = np.random.default_rng([seed, global_step]).uniform(-1, 1, spec.act_dim)
        else:
            action = np.asarray(policy(state, obs, jax.random.fold_in(segment_key, t)))
        next_obs, reward, terminated, truncated, _ = gym_env.step(action)
        out["observations"][t], out["actions"][t], out["rewards"][t] = obs, action, reward
        out["next_observations"][t] = next_obs
        out["terminals"][t] = terminated
        out["timeouts"][t] = truncated or (t == seg_steps - 1 and not terminated)
        obs = next_obs
        if terminated or truncated:
            episode += 1
            obs, _ = gym_env.reset(seed=_segment_seed(seed, segment) + episode)
    return out
