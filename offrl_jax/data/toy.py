"""Tiny synthetic episodes for tests and examples (not a benchmark dataset).

Observations follow a simple random walk so that ``next_observations[i] == observations[i + 1]``
inside an episode and each episode starts somewhere new, like real trajectories.
"""

from __future__ import annotations

import numpy as np

from offrl_jax.tasks import get_env_spec

ENDINGS = ("terminal", "timeout", "both", "none")


def toy_episodes(env: str, lengths, endings=None, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Episodes in Minari's per-episode layout for ``env``'s dimensions.

    ``lengths[k]`` is episode k's number of steps T; ``endings[k]`` (default all "timeout")
    says how its last step is flagged: "terminal", "timeout", "both" or "none". Returns dicts
    with ``observations (T + 1, obs)``, ``actions (T, act)`` in [-1, 1], ``rewards (T,)``,
    ``terminations (T,)`` and ``truncations (T,)`` (bool), float32.
    """
    spec = get_env_spec(env)
    endings = ["timeout"] * len(lengths) if endings is None else list(endings)
    if any(steps < 1 for steps in lengths):
        raise ValueError(f"episode lengths must be at least 1, found {list(lengths)!r}")
    if len(endings) != len(lengths) or any(end not in ENDINGS for end in endings):
        raise ValueError(f"endings must be one of {ENDINGS} per episode, found {endings!r}")
    rng = np.random.default_rng(seed)
    episodes = []
    for steps, ending in zip(lengths, endings, strict=True):
        start = rng.normal(size=(1, spec.obs_dim))
        walk = np.cumsum(rng.normal(scale=0.1, size=(steps, spec.obs_dim)), axis=0)
        terminations = np.zeros(steps, dtype=bool)
        truncations = np.zeros(steps, dtype=bool)
        terminations[-1] = ending in ("terminal", "both")
        truncations[-1] = ending in ("timeout", "both")
        episodes.append(dict(
            observations=np.concatenate([start, start + walk]).astype(np.float32),
            actions=rng.uniform(-1.0, 1.0, size=(steps, spec.act_dim)).astype(np.float32),
            rewards=rng.normal(size=steps).astype(np.float32),
            terminations=terminations,
            truncations=truncations,
        ))
    return episodes
