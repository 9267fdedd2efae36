"""Host backend: a batch of Gymnasium v4 MuJoCo environments stepped in lock-step.

This is the reference backend (the same simulator D4RL's data came from, through the ``mujoco``
bindings). Observations come back stacked as one float32 array so that a whole batch of
seeds x episodes needs a single (jitted) policy call per step.
"""

from __future__ import annotations

import numpy as np

from offrl_jax.tasks import get_env_spec


class HostVectorEnv:
    """``num_envs`` independent Gymnasium environments of one kind.

    ``step`` takes actions of shape ``(num_envs, act_dim)`` and returns ``obs (num_envs, obs)``,
    ``rewards (num_envs,)``, ``terminated (num_envs,)`` and ``truncated (num_envs,)``. Environments
    listed in ``active`` are stepped; the others are left untouched and report zeros, so finished
    episodes are not auto-reset (evaluation wants each episode exactly once).
    """

    def __init__(self, env: str, num_envs: int):
        self.spec = get_env_spec(env)
        self.num_envs = num_envs
        self.envs = [self.spec.make_gym_env() for _ in range(num_envs)]
        self._obs = np.zeros((num_envs, self.spec.obs_dim), np.float32)

    def reset(self, seeds) -> np.ndarray:
        seeds = np.asarray(seeds).reshape(-1)
        if seeds.shape != (self.num_envs,):
            raise ValueError(f"reset expects {self.num_envs} seeds, found shape {seeds.shape}")
        for i, (env, seed) in enumerate(zip(self.envs, seeds, strict=True)):
            obs, _ = env.reset(seed=int(seed))
            self._obs[i] = obs
        return self._obs.copy()

    def reset_one(self, index: int, seed: int) -> np.ndarray:
        """Reset environment ``index`` alone; returns its first observation."""
        obs, _ = self.envs[index].reset(seed=int(seed))
        self._obs[index] = obs
        return self._obs[index].copy()

    def step(self, actions, active=None):
        actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, self.spec.act_dim)
        active = np.ones(self.num_envs, bool) if active is None else np.asarray(active, bool)
        rewards = np.zeros(self.num_envs, np.float64)
        terminated = np.zeros(self.num_envs, bool)
        truncated = np.zeros(self.num_envs, bool)
        for i in np.flatnonzero(active):
            obs, reward, term, trunc, _ = self.envs[i].step(actions[i])
            self._obs[i] = obs
            rewards[i], terminated[i], truncated[i] = reward, term, trunc
        return self._obs.copy(), rewards, terminated, truncated

    def close(self) -> None:
        for env in self.envs:
            env.close()
