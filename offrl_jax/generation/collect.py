"""Collecting fixed-size datasets from a policy in a batch of Gymnasium environments.

Episodes are stored whole and contiguous (never interleaved across environments), in the order
they finish. The dataset is cut at exactly ``num_transitions``; the episode cut by that budget
ends with a time-out flag, like a time-limit end (it is not a fall).
"""

from __future__ import annotations

import jax
import numpy as np
from tqdm.auto import tqdm

from offrl_jax.envs import HostVectorEnv
from offrl_jax.tasks import get_env_spec


def collect_dataset(env: str, num_transitions: int, num_envs: int, seed: int,
                    act_fn=None, policy_state=None, progress: bool = True,
                    desc: str = "collect") -> dict[str, np.ndarray]:
    """Roll out ``act_fn(policy_state, obs (E, obs), key, deterministic=False)`` (or uniform
    actions when ``act_fn`` is None) and return D4RL-layout arrays of ``num_transitions`` rows.
    """
    spec = get_env_spec(env)
    envs = HostVectorEnv(env, num_envs)
    seeds = np.random.SeedSequence([seed, 7]).generate_state(num_envs)
    obs = envs.reset(seeds)
    episode_counts = np.zeros(num_envs, np.int64)
    uniform = np.random.default_rng(np.random.SeedSequence([seed, 8]))
    key = jax.random.PRNGKey(seed)
    # Jitting act_fn itself (not a wrapper made here) lets every call with the same act_fn and
    # shapes reuse one compiled policy, e.g. the many pieces of a medium-replay schedule.
    policy = None if act_fn is None else jax.jit(act_fn, static_argnums=3)

    running = [[] for _ in range(num_envs)]  # per env: the transitions of its open episode
    finished: list[list[tuple]] = []
    collected = 0
    bar = tqdm(total=num_transitions, desc=desc, unit="step", disable=not progress)
    step = 0
    while collected < num_transitions:
        if policy is None:
            actions = uniform.uniform(-1.0, 1.0, (num_envs, spec.act_dim))
        else:
            actions = np.asarray(policy(policy_state, obs, jax.random.fold_in(key, step),
                                        False))
        next_obs, rewards, terminated, truncated = envs.step(actions)
        for i in range(num_envs):
            running[i].append((obs[i].copy(), actions[i], rewards[i], next_obs[i].copy(),
                               terminated[i],
                               truncated[i]))
            if terminated[i] or truncated[i]:
                finished.append(running[i])
                collected += len(running[i])
                bar.update(len(running[i]))
                running[i] = []
                episode_counts[i] += 1
                next_obs[i] = envs.reset_one(i, seeds[i] + 7919 * episode_counts[i])
        obs = next_obs
        step += 1
    bar.close()
    envs.close()
    return _assemble(finished, num_transitions)


def _assemble(episodes: list[list[tuple]], num_transitions: int) -> dict[str, np.ndarray]:
    rows = [row for episode in episodes for row in episode][:num_transitions]
    obs, act, rew, next_obs, term, trunc = (np.asarray(x) for x in zip(*rows, strict=True))
    episode_ids = np.concatenate([np.full(len(e), i, np.int32) for i, e in enumerate(episodes)])
    timeouts = trunc.astype(np.float32)
    if not (term[-1] or trunc[-1]):
        timeouts[-1] = 1.0  # the episode cut by the size budget
    return {
        "observations": obs.astype(np.float32),
        "actions": act.astype(np.float32),
        "rewards": rew.astype(np.float32),
        "next_observations": next_obs.astype(np.float32),
        "terminals": term.astype(np.float32),
        "timeouts": timeouts,
        "episode_ids": episode_ids[:num_transitions],
    }


def concatenate_datasets(*parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Concatenate datasets, renumbering episode ids so episodes stay distinct."""
    out = {k: [] for k in parts[0]}
    offset = 0
    for part in parts:
        for k, v in part.items():
            out[k].append(v + offset if k == "episode_ids" else v)
        offset += int(part["episode_ids"].max()) + 1
    return {k: np.concatenate(v) for k, v in out.items()}
