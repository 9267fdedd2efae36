"""Environment throughput of both backends, and the wall time of one evaluation.

Host: Gymnasium v4 environments stepped in lock-step (``HostVectorEnv``). Device: the same XML
in MJX, vmapped and jitted. Prints env steps/s per batch size and the time of one evaluation of
5 seeds x 10 episodes (``Evaluator``) on each backend, with the device named.

    python -m benchmarks.env_throughput [--env hopper] [--batches 1 16 128] [--steps 100]
        [--eval-steps 1000]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import device_name
from offrl_jax.envs import HostVectorEnv
from offrl_jax.evaluation import Evaluator
from offrl_jax.tasks import get_env_spec


def host_rate(env: str, batch: int, steps: int) -> float:
    spec = get_env_spec(env)
    envs = HostVectorEnv(env, batch)
    envs.reset(np.arange(batch))
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(rng.uniform(-1, 1, (batch, spec.act_dim)))
    return batch * steps / (time.perf_counter() - start)


def device_rate(env: str, batch: int, steps: int) -> tuple[float, float]:
    from offrl_jax.envs.mjx_env import make_mjx_env  # here: the host rate needs no mujoco.mjx

    mjx_env = make_mjx_env(env)

    @jax.jit
    def run(key):
        state = jax.vmap(mjx_env.reset)(jax.random.split(key, batch))

        def body(state, k):
            action = jax.random.uniform(k, (batch, mjx_env.act_dim), minval=-1, maxval=1)
            return jax.vmap(mjx_env.step)(state, action), None

        state, _ = jax.lax.scan(body, state, jax.random.split(key, steps))
        return state.obs

    start = time.perf_counter()
    jax.block_until_ready(run(jax.random.PRNGKey(0)))
    compile_and_first = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(run(jax.random.PRNGKey(1)))
    return batch * steps / (time.perf_counter() - start), compile_and_first


def linear_policy(params, obs, key, deterministic):
    return jnp.tanh(obs @ params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--env", default="hopper")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 128])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--eval-steps", type=int, default=1000)
    args = parser.parse_args()
    spec = get_env_spec(args.env)
    print(f"device: {device_name()}; env {spec.gym_id}")
    print("| backend | batch | env steps/s |\n|---|---|---|")
    for batch in args.batches:
        print(f"| host (Gymnasium) | {batch} | {host_rate(args.env, batch, args.steps):.0f} |")
    for batch in args.batches:
        rate, first = device_rate(args.env, batch, args.steps)
        print(f"| device (MJX) | {batch} | {rate:.0f} (compile + first {first:.0f} s) |")
    params = 0.1 * jax.random.normal(jax.random.PRNGKey(0), (5, spec.obs_dim, spec.act_dim))
    for backend in ("host", "device"):
        evaluator = Evaluator(args.env, linear_policy, num_episodes=10, backend=backend,
                              max_steps=args.eval_steps)
        start = time.perf_counter()
        evaluator(params, jax.random.PRNGKey(0))
        first = time.perf_counter() - start
        start = time.perf_counter()
        result = evaluator(params, jax.random.PRNGKey(1))
        took = time.perf_counter() - start
        print(f"evaluation of 5 seeds x 10 episodes (<= {args.eval_steps} steps), {backend}: "
              f"{took:.1f} s (first call, with compilation: {first:.1f} s; mean length "
              f"{result.lengths.mean():.0f})")


if __name__ == "__main__":
    main()
