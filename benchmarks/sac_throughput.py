"""SAC updates/s (compiled chunks) and host collection steps/s, on the device JAX sees.

    python benchmarks/sac_throughput.py [--env hopper] [--updates 1000]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from benchmarks.common import device_name, timed
from offrl_jax.generation.behaviour import _make_train_chunk, _Replay
from offrl_jax.generation.collect import collect_dataset
from offrl_jax.parts import sac
from offrl_jax.tasks import get_env_spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--collect", type=int, default=5000)
    args = parser.parse_args()
    spec = get_env_spec(args.env)
    agent = sac.Agent(sac.Config(), spec.obs_dim, spec.act_dim)
    state = agent.init(jax.random.PRNGKey(0))
    batch_size = 256
    size = 100_000
    rng = np.random.default_rng(0)
    replay = _Replay(
        observations=rng.normal(size=(size, spec.obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, (size, spec.act_dim)).astype(np.float32),
        rewards=rng.normal(size=size).astype(np.float32),
        next_observations=rng.normal(size=(size, spec.obs_dim)).astype(np.float32),
        terminals=np.zeros(size, np.float32))
    chunk = _make_train_chunk(agent, args.updates, batch_size)
    first, best, _ = timed(chunk, state, replay, size, jax.random.PRNGKey(1))
    print(f"device: {device_name()}")
    print(f"SAC (2x256, batch {batch_size}), {args.env}: {args.updates / best:.0f} "
          f"updates/s (compile + first chunk {first:.1f} s)")
    for num_envs in (1, 10):
        start = time.perf_counter()
        collect_dataset(args.env, args.collect, num_envs, seed=0, act_fn=agent.act,
                        policy_state=state, progress=False)
        rate = args.collect / (time.perf_counter() - start)
        print(f"collection with the SAC policy, {num_envs} env(s): {rate:.0f} steps/s")


if __name__ == "__main__":
    main()
